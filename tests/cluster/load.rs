//! Load for the fault suite: HTTP clients spread over a cluster's members contend for a few
//! resources with short leases, waits and releases, moving to the next member when one fails
//! them (no answer, or "no leader"); every grant goes into a [`History`]. A keeper takes
//! long-leased locks of its own as it goes: an acknowledged grant must outlive any fault.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::history::{History, Hold};
use crate::support::{Http, SECRET, post};

/// The resources the contenders share.
const RESOURCES: [&str; 3] = ["fx-0", "fx-1", "fx-2"];
/// How long a client waits for an answer beyond the wait it asked for, before it gives the
/// member up: a request through a follower waits for the leader, and a leader killed or
/// stopped answers nothing; an election takes 300 to 600 ms, so 2 s is a lost member.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long the kept locks' check may wait for a member to answer at all: a leader may
/// change as a member comes back, and an election or two take seconds on a loaded machine.
const KEPT_ANSWER_WAIT: Duration = Duration::from_secs(15);
/// The body of a "no leader" answer (`503`), which a client retries elsewhere.
const NO_LEADER: &str = "ERR No leader: the cluster is electing one; try again";

/// What a run exercised, so that a quiet run cannot pass unnoticed.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub grants: u64,
    pub released: u64,
    /// Answers that never came (a connection failed or timed out).
    pub unanswered: u64,
    /// `503` "no leader" answers.
    pub no_leader: u64,
}

/// Contenders and a keeper running against a cluster until their time is up.
pub(super) struct Load {
    pub history: History,
    /// Long-leased grants acknowledged to the keeper: resource, owner, token.
    pub kept: Arc<Mutex<Vec<(String, String, u64)>>>,
    workers: Vec<JoinHandle<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// `contenders` clients and a keeper over `members`, until [`Load::finish`].
    pub fn start(members: Vec<SocketAddr>, contenders: u64) -> Load {
        let (history, kept) = (History::default(), Arc::<Mutex<Vec<_>>>::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for seed in 1..=contenders {
            let (members, history, stop) = (members.clone(), history.clone(), stop.clone());
            workers.push(thread::spawn(move || contender(&members, seed * 7919, &history, &stop)));
        }
        let (members, to, stop_keeper) = (members.clone(), kept.clone(), stop.clone());
        workers.push(thread::spawn(move || keeper(&members, &to, &stop_keeper)));
        Load { history, kept, workers, stop }
    }

    /// Stops the clients and waits for them (each ends its call in flight, which is bounded);
    /// what they did, together.
    pub fn finish(&mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Seen::default();
        for w in std::mem::take(&mut self.workers) {
            let seen = w.join().expect("a client failed");
            total.grants += seen.grants;
            total.released += seen.released;
            total.unanswered += seen.unanswered;
            total.no_leader += seen.no_leader;
        }
        total
    }

    /// Panics unless every kept lock is held, by its owner under its token, as the member at
    /// `addr` answers (asked again, for a while, if it has no leader to answer through).
    pub fn check_kept(&self, addr: SocketAddr) {
        let kept = self.kept.lock().unwrap();
        assert!(!kept.is_empty(), "the keeper got nothing");
        let mut seen = Seen::default();
        let members = [addr];
        let mut link = Roaming { members: &members, at: 0, conn: None };
        for (resource, owner, token) in kept.iter() {
            let get =
                format!("GET /locks/{resource} HTTP/1.1\r\nHost: t\r\nX-LOCKSERVER-SECRET: {SECRET}\r\n\r\n");
            let deadline = Instant::now() + KEPT_ANSWER_WAIT;
            let r = loop {
                if let Some(r) = link.call(&get, Duration::ZERO, &mut seen) {
                    break r;
                }
                assert!(Instant::now() < deadline, "no answer about {resource} in {KEPT_ANSWER_WAIT:?}");
            };
            assert_eq!(r.status, 200, "an acknowledged grant was lost: {}", r.text());
            let lock: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(
                (lock["owner"].as_str(), lock["token"].as_u64()),
                (Some(owner.as_str()), Some(*token)),
                "{resource}"
            );
        }
    }
}

/// A small deterministic generator (xorshift), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A connection to one member after another.
struct Roaming<'a> {
    members: &'a [SocketAddr],
    at: usize,
    conn: Option<Http>,
}

impl Roaming<'_> {
    /// Sends `raw` to the current member and reads its answer, waiting up to `wait` beyond
    /// [`ANSWER_WAIT`]. No answer, or "no leader": `None`, and the next call goes to the next
    /// member.
    fn call(&mut self, raw: &str, wait: Duration, seen: &mut Seen) -> Option<crate::support::Resp> {
        if self.conn.is_none() {
            self.conn = Http::try_connect(self.members[self.at]);
        }
        let answer = self.conn.as_mut().and_then(|c| {
            c.set_timeout(ANSWER_WAIT + wait);
            c.try_call(raw)
        });
        match answer {
            Some(r) if r.status == 503 => {
                assert_eq!(r.body, NO_LEADER, "{}", r.text());
                seen.no_leader += 1;
            }
            Some(r) => return Some(r),
            None => seen.unanswered += 1,
        }
        self.conn = None;
        self.at = (self.at + 1) % self.members.len();
        // An election is under way: no use asking again at once.
        thread::sleep(Duration::from_millis(20));
        None
    }
}

fn contender(members: &[SocketAddr], seed: u64, history: &History, stop: &AtomicBool) -> Seen {
    let mut rng = Rng(seed);
    let mut seen = Seen::default();
    let owner = format!("fx-{seed}");
    let mut link = Roaming { members, at: seed as usize % members.len(), conn: None };
    while !stop.load(Ordering::Relaxed) {
        let resource = RESOURCES[rng.below(3) as usize];
        let (ttl_ms, wait_ms) = (50 + rng.below(250), rng.below(150));
        let body = format!(
            r#"{{"resource":"{resource}","owner":"{owner}","expire":{},"wait":{}}}"#,
            ttl_ms as f64 / 1000.0,
            wait_ms as f64 / 1000.0
        );
        let sent = Instant::now();
        let Some(r) = link.call(&post("/acquire", SECRET, &body), Duration::from_millis(wait_ms), &mut seen)
        else {
            continue;
        };
        if r.status == 409 {
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        let start = Instant::now();
        seen.grants += 1;
        let token = r.token();
        thread::sleep(Duration::from_millis(rng.below(40)));
        let lease_end = sent + Duration::from_millis(ttl_ms);
        let end = if rng.below(10) < 3 {
            lease_end
        } else {
            let at = Instant::now();
            let body = format!(r#"{{"resource":"{resource}","owner":"{owner}","token":{token}}}"#);
            if link
                .call(&post("/release", SECRET, &body), Duration::ZERO, &mut seen)
                .is_some_and(|r| r.status == 200)
            {
                seen.released += 1;
            }
            at.min(lease_end)
        };
        history.record(resource, Hold { token, start, end });
    }
    seen
}

/// Takes a long-leased lock of its own every few tens of milliseconds, and keeps the list of
/// those acknowledged.
fn keeper(members: &[SocketAddr], kept: &Mutex<Vec<(String, String, u64)>>, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let mut link = Roaming { members, at: 0, conn: None };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let resource = format!("kept-{n}");
        let body = format!(r#"{{"resource":"{resource}","owner":"keeper","expire":120}}"#);
        if let Some(r) = link.call(&post("/acquire", SECRET, &body), Duration::ZERO, &mut seen) {
            assert_eq!(r.status, 200, "{}", r.text());
            seen.grants += 1;
            kept.lock().unwrap().push((resource, "keeper".into(), r.token()));
        }
        thread::sleep(Duration::from_millis(30));
    }
    seen
}
