//! The mutual-exclusion checker: many clients on many connections (both protocols, both
//! versions of the wire protocol, both cores) contend for a few resources with short leases,
//! releases, waits and abrupt disconnects. Every grant a client sees is recorded with its token and a conservative hold
//! interval; then, per resource, no two holds may overlap and tokens must rise with time
//! (the check is [`crate::support::history`]'s, which the cluster's fault suite shares).
//!
//! A hold starts when the client has the grant in hand, and ends at the earliest moment the
//! server could have let the lock go: when the client sent its release or dropped its
//! connection (session locks: version 1 releases them with it, a version 2 client releases
//! them as it closes), or when the lease ran out counted from when the client *sent*
//! its acquire (the server granted later, so its lease ends later). A correct server never
//! grants the next hold before that, so `previous.end <= next.start` must hold, and holds
//! begin in token order (but for a grant that arrived after its lease was over, which its
//! client does not hold at all).

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use ringlock_client::blocking::Client;
use ringlock_client::frame::{self, PREFACE, WireRequest};
use ringlock_client::{AcquireOptions, Config as ClientConfig, Error, Protocol};

use crate::support::history::{History, Hold};
use crate::support::{Http, SECRET, TestServer};

const RESOURCES: [&str; 3] = ["mx-0", "mx-1", "mx-2"];
/// How long the clients contend.
const RUN: Duration = Duration::from_secs(3);

/// A small deterministic generator (xorshift), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Counts of what the run exercised, so that a quiet run cannot pass unnoticed.
#[derive(Default)]
struct Exercised {
    grants: u64,
    released: u64,
    expired: u64,
    dropped_holding: u64,
    dropped_waiting: u64,
}

fn wire_worker(addr: String, seed: u64, log: History, done: Instant) -> Exercised {
    let mut rng = Rng(seed);
    let mut seen = Exercised::default();
    let config = ClientConfig {
        addr,
        owner: format!("wire-{seed}"),
        secret: SECRET.into(),
        protocol: if seed.is_multiple_of(2) { Protocol::Version2 } else { Protocol::Version1 },
        ..ClientConfig::default()
    };
    let mut client = Client::connect(&config).unwrap();
    // Session locks left to their lease on the current connection: dropping the connection
    // later ends them then, if their lease has not ended first.
    let mut left_to_lease: Vec<(&'static str, Hold)> = Vec::new();
    while Instant::now() < done {
        let resource = RESOURCES[rng.below(3) as usize];
        let ttl = rng.chance(70).then(|| Duration::from_millis(20 + rng.below(150)));
        let wait = rng.chance(60).then(|| Duration::from_millis(10 + rng.below(200)));
        let session = rng.chance(50);
        let sent = Instant::now();
        let lease = match client.acquire(resource, AcquireOptions { ttl, wait, session }) {
            Ok(lease) => lease,
            Err(Error::Busy | Error::TimedOut) => continue,
            Err(e) => panic!("acquire: {e}"),
        };
        let start = Instant::now();
        seen.grants += 1;
        thread::sleep(Duration::from_millis(rng.below(60)));
        let lease_end = ttl.map(|t| sent + t);
        let mut end = match rng.below(10) {
            // Leave it to its lease.
            0..=2 if ttl.is_some() => {
                seen.expired += 1;
                lease_end.unwrap()
            }
            // Drop the connection while holding it: a session lock goes at once (and so do the
            // session locks still left to their lease on it).
            3 if session || ttl.is_some() => {
                let at = Instant::now();
                drop(client);
                client = Client::connect(&config).unwrap();
                seen.dropped_holding += 1;
                for (r, mut hold) in left_to_lease.drain(..) {
                    hold.end = hold.end.min(at);
                    log.record(r, hold);
                }
                if session { at } else { lease_end.unwrap() }
            }
            _ => {
                let at = Instant::now();
                match client.release(resource, Some(lease.token)) {
                    Ok(()) => seen.released += 1,
                    // The lease ran out first.
                    Err(Error::NotFound | Error::NotHolder | Error::TokenMismatch) => {}
                    Err(e) => panic!("release: {e}"),
                }
                at
            }
        };
        if let Some(lease_end) = lease_end {
            end = end.min(lease_end);
        }
        let hold = Hold { token: lease.token, start, end };
        if session && end > Instant::now() {
            left_to_lease.push((resource, hold));
        } else {
            log.record(resource, hold);
        }
    }
    // The connection goes with the worker, and its session locks with it.
    let at = Instant::now();
    drop(client);
    for (r, mut hold) in left_to_lease {
        hold.end = hold.end.min(at);
        log.record(r, hold);
    }
    seen
}

fn http_worker(addr: std::net::SocketAddr, seed: u64, log: History, done: Instant) -> Exercised {
    let mut rng = Rng(seed);
    let mut seen = Exercised::default();
    let owner = format!("http-{seed}");
    let mut c = Http::connect(addr);
    while Instant::now() < done {
        let resource = RESOURCES[rng.below(3) as usize];
        let ttl_ms = 20 + rng.below(150);
        let wait_ms = rng.below(200);
        let body = format!(
            r#"{{"resource":"{resource}","owner":"{owner}","expire":{},"wait":{}}}"#,
            ttl_ms as f64 / 1000.0,
            wait_ms as f64 / 1000.0
        );
        let sent = Instant::now();
        let r = c.post("/acquire", SECRET, &body);
        if r.status == 409 {
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        let start = Instant::now();
        seen.grants += 1;
        thread::sleep(Duration::from_millis(rng.below(60)));
        let lease_end = sent + Duration::from_millis(ttl_ms);
        let end = if rng.chance(30) {
            seen.expired += 1;
            lease_end
        } else {
            let at = Instant::now();
            if c.release(resource, &owner).status == 200 {
                seen.released += 1;
            }
            at.min(lease_end)
        };
        log.record(resource, Hold { token: r.token(), start, end });
    }
    seen
}

/// Waits for a lock on a raw connection and goes away before the answer: the server must
/// not leave the lock to a client that is gone (a grant that raced is released).
fn leaver(addr: std::net::SocketAddr, seed: u64, done: Instant) -> Exercised {
    let mut rng = Rng(seed);
    let mut seen = Exercised::default();
    while Instant::now() < done {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut bytes = PREFACE.to_vec();
        frame::encode_request(&mut bytes, 1, &WireRequest::Hello { secret: SECRET.as_bytes() });
        let resource = RESOURCES[rng.below(3) as usize];
        // If the lock is free it is granted at once; a lock that is not the session's and
        // never expires would then stay with a client that is gone, as the API says it should,
        // and stop the run. So: a session lock, or a short lease.
        let session = rng.chance(50);
        let ttl = (!session).then_some(100);
        let req = WireRequest::Acquire { resource, owner: "leaver", ttl, wait: 5_000, session };
        frame::encode_request(&mut bytes, 2, &req);
        s.write_all(&bytes).unwrap();
        thread::sleep(Duration::from_millis(rng.below(80)));
        drop(s);
        seen.dropped_waiting += 1;
    }
    seen
}

#[test]
fn no_two_holders_ever_overlap_and_tokens_rise() {
    let server = TestServer::start(2);
    let log = History::default();
    let done = Instant::now() + RUN;
    let mut workers = Vec::new();
    for seed in 1..=10u64 {
        let (addr, log) = (server.host_port(), log.clone());
        workers.push(thread::spawn(move || wire_worker(addr, seed * 7919, log, done)));
    }
    for seed in 11..=14u64 {
        let (addr, log) = (server.addr, log.clone());
        workers.push(thread::spawn(move || http_worker(addr, seed * 7919, log, done)));
    }
    for seed in 15..=16u64 {
        let addr = server.addr;
        workers.push(thread::spawn(move || leaver(addr, seed * 7919, done)));
    }
    let mut total = Exercised::default();
    for w in workers {
        let seen = w.join().expect("a worker failed");
        total.grants += seen.grants;
        total.released += seen.released;
        total.expired += seen.expired;
        total.dropped_holding += seen.dropped_holding;
        total.dropped_waiting += seen.dropped_waiting;
    }
    let counts = format!(
        "{} grants, {} released, {} expired, {} dropped holding, {} dropped waiting",
        total.grants, total.released, total.expired, total.dropped_holding, total.dropped_waiting
    );
    assert!(total.grants > 100 && total.released > 20 && total.expired > 10, "too quiet a run: {counts}");
    assert!(total.dropped_holding > 0 && total.dropped_waiting > 10, "no disconnects: {counts}");

    log.check();
    // Everything let go: the last holders released, expired, or were disconnected.
    thread::sleep(Duration::from_millis(300));
    let mut c = server.connect();
    for resource in RESOURCES {
        let r =
            c.post("/acquire", SECRET, &format!(r#"{{"resource":"{resource}","owner":"final","wait":5}}"#));
        assert_eq!(r.status, 200, "{resource} is not stuck with a client that is gone");
    }
}
