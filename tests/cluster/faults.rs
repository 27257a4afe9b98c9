//! Faults under load: three member processes serve clients spread over them while a member is
//! killed, stopped, cut off or restarted. Across the members the history must hold (no two
//! holders at once, tokens rising in grant order), no acknowledged grant may be lost, and a
//! member that cannot reach a majority, or no longer leads, grants nothing and answers nothing
//! stale.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::Cluster;
use super::load::Load;

/// Grants the clients must see before the fault.
const GRANTS_BEFORE: usize = 20;
/// Grants the clients must see after the fault before they stop: a few rounds on each
/// resource, each lease (up to 300 ms) and the new leader's grace (600 ms) run out.
const GRANTS_AFTER: usize = 30;
/// How long the clients may take to get either: an election or two, on a loaded machine.
const SERVED_AGAIN_WAIT: Duration = Duration::from_secs(15);
/// Contending clients.
const CONTENDERS: u64 = 6;

fn members(cluster: &Cluster) -> Vec<SocketAddr> {
    (0..cluster.seats.len()).map(|i| cluster.addr(i)).collect()
}

/// Lets `load` run until it has granted [`GRANTS_BEFORE`] times (bounded: a loaded machine).
fn warm_up(load: &Load) {
    let deadline = Instant::now() + SERVED_AGAIN_WAIT;
    while load.history.grants() < GRANTS_BEFORE {
        assert!(
            Instant::now() < deadline,
            "the clients got {} grants in {SERVED_AGAIN_WAIT:?}",
            load.history.grants()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Lets `load` run until it has granted [`GRANTS_AFTER`] times after the fault at `fault`,
/// stops it and checks it: it granted on either side of the fault, its history holds, and its
/// kept locks are held as the cluster's leader answers.
fn check(load: &mut Load, fault: Instant, cluster: &Cluster) {
    let deadline = Instant::now() + SERVED_AGAIN_WAIT;
    while load.history.granted_after(fault) < GRANTS_AFTER && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let seen = load.finish();
    let after = load.history.granted_after(fault);
    let before = load.history.grants() - after;
    assert!(
        before >= GRANTS_BEFORE && after >= GRANTS_AFTER,
        "too quiet a run: {before} grants before the fault, {after} after; {seen:?}"
    );
    load.history.check();
    load.check_kept(cluster.addr(cluster.leader()));
}

#[test]
fn no_two_holders_and_no_grant_lost_when_the_leader_is_killed_under_load() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let mut load = Load::start(members(&cluster), CONTENDERS);
    warm_up(&load);
    let fault = Instant::now();
    cluster.kill(leader);
    let next = cluster.leader();
    assert_ne!(next, leader);
    check(&mut load, fault, &cluster);
}

/// What a deposed leader answered about a lock that changed hands while it was away.
#[derive(Debug, Default)]
struct Answers {
    /// Answered as the cluster is now (forwarded to the new leader, or after catching up).
    current: u64,
    /// "No leader" (503), or the connection closed unanswered: the client retries elsewhere.
    refused: u64,
}

/// Asks the member at `addr`, on fresh connections until `until`, about `moved` (held by
/// `old`'s owner under `old`'s token before, by `new` now) and to take it and to release it
/// as its old holder: it must answer as the cluster is now, or not at all, never from what
/// it knew before.
fn ask_about_a_moved_lock(
    addr: SocketAddr,
    moved: &str,
    old: (&str, u64),
    new: (&str, u64),
    until: Instant,
) -> Answers {
    let mut seen = Answers::default();
    let mut asked = 0u64;
    while Instant::now() < until {
        asked += 1;
        let Some(mut c) = crate::support::Http::try_connect(addr) else {
            seen.refused += 1;
            continue;
        };
        c.set_timeout(Duration::from_secs(5));
        let request = match asked % 3 {
            0 => format!(
                "GET /locks/{moved} HTTP/1.1\r\nHost: t\r\nX-LOCKSERVER-SECRET: {}\r\n\r\n",
                super::SECRET
            ),
            1 => super::post(
                "/acquire",
                super::SECRET,
                &format!(r#"{{"resource":"{moved}","owner":"late-{asked}","expire":30}}"#),
            ),
            _ => super::post(
                "/release",
                super::SECRET,
                &format!(r#"{{"resource":"{moved}","owner":"{}","token":{}}}"#, old.0, old.1),
            ),
        };
        match c.try_call(request) {
            None => seen.refused += 1,
            Some(r) if r.status == 503 => {
                assert_eq!(r.body, "ERR No leader: the cluster is electing one; try again");
                seen.refused += 1;
            }
            Some(r) => {
                match asked % 3 {
                    0 => {
                        assert_eq!(r.status, 200, "{}", r.text());
                        let lock: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                        assert_eq!(
                            (lock["owner"].as_str(), lock["token"].as_u64()),
                            (Some(new.0), Some(new.1)),
                            "a stale read of {moved}"
                        );
                    }
                    1 => assert_eq!(
                        (r.status, r.body.as_str()),
                        (409, "ERR Resource is already locked"),
                        "a stale grant"
                    ),
                    _ => assert_eq!(
                        (r.status, r.body.as_str()),
                        (409, "ERR Resource is already locked"),
                        "a stale release"
                    ),
                }
                seen.current += 1;
            }
        }
    }
    seen
}

#[test]
fn a_leader_stopped_past_the_election_timeout_grants_nothing_and_answers_nothing_stale() {
    let mut cluster = Cluster::start(3);
    let old = cluster.leader();
    let (status, _, token) = super::acquire(cluster.addr(old), "moved", "a", 60);
    assert_eq!(status, 200);
    let token = token.unwrap();
    let mut load = Load::start(members(&cluster), CONTENDERS);
    warm_up(&load);
    let fault = Instant::now();
    cluster.pause(old);
    // The others elect a leader among themselves, and the lock changes hands there.
    let new = cluster.leader();
    assert_ne!(new, old);
    let mut c = crate::support::Http::connect(cluster.addr(new));
    let body = format!(r#"{{"resource":"moved","owner":"a","token":{token}}}"#);
    assert_eq!(c.post("/release", super::SECRET, &body).status, 200);
    let (status, _, next) = super::acquire(cluster.addr(new), "moved", "b", 60);
    assert_eq!(status, 200);
    let next = next.unwrap();
    assert!(next > token);
    // Woken, the old leader still believes it leads, with the lock as it was: asked at once
    // and on, it answers as the cluster is now or not at all.
    cluster.resume(old);
    let seen = ask_about_a_moved_lock(
        cluster.addr(old),
        "moved",
        ("a", token),
        ("b", next),
        Instant::now() + Duration::from_millis(1500),
    );
    assert!(seen.current > 0, "the woken member never served again: {seen:?}");
    check(&mut load, fault, &cluster);
}

#[test]
fn a_member_restarted_with_its_data_rejoins_and_serves_what_was_committed() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let mut load = Load::start(members(&cluster), CONTENDERS);
    warm_up(&load);
    let fault = Instant::now();
    cluster.kill(leader);
    cluster.leader();
    cluster.restart(leader);
    // Back with its log, it follows whoever leads now, and serves through it.
    cluster.leader();
    check(&mut load, fault, &cluster);
    load.check_kept(cluster.addr(leader));
}

#[test]
fn a_member_that_lost_its_data_counts_for_nothing_until_it_is_added_again() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let (wiped, other) = match cluster.followers(leader)[..] {
        [a, b] => (a, b),
        _ => unreachable!("three members"),
    };
    let mut load = Load::start(members(&cluster), CONTENDERS);
    warm_up(&load);
    let fault = Instant::now();
    // A follower comes back with an empty data directory: a new incarnation.
    cluster.kill(wiped);
    let dir = cluster.seats[wiped].data.path().to_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    cluster.restart(wiped);
    // With the leader gone too, the member that kept its log and the one that lost it are two
    // of three, but the lost one's vote is not the one the cluster knew: nobody leads, and
    // neither grants anything.
    cluster.kill(leader);
    let until = Instant::now() + Duration::from_secs(2);
    let mut refused = 0;
    while Instant::now() < until {
        for i in [wiped, other] {
            let body = r#"{"resource":"two-of-three","owner":"x","expire":30}"#;
            let Some(mut c) = crate::support::Http::try_connect(cluster.addr(i)) else { continue };
            c.set_timeout(Duration::from_secs(3));
            if let Some(r) = c.try_call(super::post("/acquire", super::SECRET, body)) {
                assert_eq!(
                    (r.status, r.body.as_str()),
                    (503, "ERR No leader: the cluster is electing one; try again"),
                    "member {} granted with a vote from a member that lost its log",
                    cluster.seats[i].id
                );
                refused += 1;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(refused > 0, "the two members answered nothing");
    // The old leader back with its log: a majority that knows the log again.
    cluster.restart(leader);
    let now = cluster.leader_among(&[leader, other]);
    // The lost member is added back through a membership change, catches up and serves.
    let wiped_id = cluster.seats[wiped].id;
    let raft = cluster.peers.split(',').nth(wiped).unwrap().to_owned();
    let (code, out) = super::cluster_cli(cluster.addr(now), &["add", &raft]);
    assert_eq!((code, out), (0, format!("member {wiped_id} added\n")));
    cluster.leader();
    check(&mut load, fault, &cluster);
    load.check_kept(cluster.addr(wiped));
}

/// A Rust client's configuration naming every member of `cluster`, `first` first.
fn every_member(cluster: &Cluster, first: usize, owner: &str) -> ringlock_client::Config {
    let mut order: Vec<usize> = vec![first];
    order.extend((0..cluster.seats.len()).filter(|&i| i != first));
    ringlock_client::Config {
        addr: order.iter().map(|&i| cluster.addr(i).to_string()).collect::<Vec<_>>().join(","),
        owner: owner.into(),
        secret: super::SECRET.into(),
        ..ringlock_client::Config::default()
    }
}

#[test]
fn a_client_given_every_member_resumes_its_session_and_keeps_its_locks_when_its_member_dies() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let follower = cluster.followers(leader)[0];
    // Connected to the leader, which dies with the connection.
    let client =
        ringlock_client::blocking::Client::connect(&every_member(&cluster, leader, "roamer")).unwrap();
    let session = ringlock_client::AcquireOptions { session: true, ..Default::default() };
    let guard = client.lock("roaming-session", session).unwrap();
    let leased = ringlock_client::AcquireOptions { ttl: Some(Duration::from_secs(30)), ..Default::default() };
    let lease = client.acquire("roaming-lease", leased).unwrap();
    cluster.kill(leader);
    cluster.leader();
    // Its next calls go through another member, in the same session: the locks are its own.
    let info = client.inspect("roaming-session").unwrap().expect("held");
    assert_eq!((info.owner.as_str(), info.token), ("roamer", guard.token()));
    assert_eq!(guard.lost().check(), None, "the session resumed in time");
    let observer =
        ringlock_client::blocking::Client::connect(&every_member(&cluster, follower, "observer")).unwrap();
    assert!(matches!(
        observer.acquire("roaming-session", Default::default()),
        Err(ringlock_client::Error::Busy)
    ));
    client.release("roaming-lease", Some(lease.token)).unwrap();
    guard.release().unwrap();
    assert_eq!(observer.inspect("roaming-session").unwrap(), None);
    assert_eq!(observer.inspect("roaming-lease").unwrap(), None);
}

#[test]
fn a_client_connects_past_a_dead_member_and_the_lock_command_takes_several() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let dead = cluster.followers(leader)[0];
    cluster.kill(dead);
    let config = every_member(&cluster, dead, "past-the-dead");
    let client = ringlock_client::blocking::Client::connect(&config).expect("the next member lets it in");
    let lease = client.acquire("past", Default::default()).unwrap();
    client.release("past", Some(lease.token)).unwrap();
    // `ringlock lock` with LOCKSERVER_ADDR naming every member, the dead one first.
    let out = super::ringlock_command()
        .args([
            "lock",
            "--owner",
            "cli",
            "cli-job",
            "--",
            "sh",
            "-c",
            "echo \"$RINGLOCK_RESOURCE $RINGLOCK_TOKEN\"",
        ])
        .env("LOCKSERVER_ADDR", &config.addr)
        .env("LOCKSERVER_SECRET", super::SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token: u64 = stdout.strip_prefix("cli-job ").and_then(|t| t.trim().parse().ok()).expect(&stdout);
    assert!(token > lease.token, "tokens rise: {token} after {}", lease.token);
    assert_eq!(client.inspect("cli-job").unwrap(), None, "released when the command ended");
    // And the operator's tools over HTTP, `ringlock cluster status` here.
    let out = super::ringlock_command()
        .args(["cluster", "status"])
        .env("LOCKSERVER_ADDR", &config.addr)
        .env("LOCKSERVER_SECRET", super::SECRET)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let leader_id = cluster.seats[leader].id;
    assert!(table.contains(&format!(" sees: leader {leader_id}, term ")), "{table}");
}

#[test]
fn a_wait_through_a_member_that_dies_ends_with_an_error_to_retry() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let doomed = cluster.followers(leader)[0];
    let holder =
        ringlock_client::blocking::Client::connect(&every_member(&cluster, leader, "holder")).unwrap();
    let held = holder.acquire("awaited", Default::default()).unwrap();
    let waiter =
        ringlock_client::blocking::Client::connect(&every_member(&cluster, doomed, "waiter")).unwrap();
    let long_wait =
        ringlock_client::AcquireOptions { wait: Some(Duration::from_secs(30)), ..Default::default() };
    let waiting = thread::spawn(move || {
        let asked = Instant::now();
        let first = waiter.acquire("awaited", long_wait);
        (waiter, first, asked.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    cluster.kill(doomed);
    let (waiter, first, took) = waiting.join().unwrap();
    // Its member gone, the wait ends at once, its outcome unknown: the client may ask again.
    assert!(matches!(first, Err(ringlock_client::Error::Interrupted(_))), "{first:?} after {took:?}");
    assert!(took < Duration::from_secs(30), "the wait ran its whole time");
    // Asked again (through another member), it waits its turn and gets the lock.
    let releasing = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        holder.release("awaited", Some(held.token)).unwrap();
    });
    let lease = waiter.acquire("awaited", long_wait).expect("granted once released");
    assert!(lease.token > held.token);
    releasing.join().unwrap();
}

#[test]
fn the_lock_command_given_every_member_keeps_its_lock_and_its_command_when_the_leader_dies() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let addrs = every_member(&cluster, leader, "cli").addr;
    let script = r#"echo "started $RINGLOCK_TOKEN"; read -r line; echo "done $line""#;
    let mut lock = super::ringlock_command()
        .args(["lock", "--ttl", "6", "--owner", "cli", "failover-job", "--", "sh", "-c", script])
        .env("LOCKSERVER_ADDR", &addrs)
        .env("LOCKSERVER_SECRET", super::SECRET)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(lock.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let token: u64 = line.strip_prefix("started ").and_then(|t| t.trim().parse().ok()).expect(&line);
    cluster.kill(leader);
    let next = cluster.leader();
    let observer =
        ringlock_client::blocking::Client::connect(&every_member(&cluster, next, "observer")).unwrap();
    let held = observer.inspect("failover-job").unwrap().expect("held across the failover");
    assert_eq!((held.owner.as_str(), held.token), ("cli", token), "the same grant, never let go");
    // Renewals go on through another member: the lease is seen to grow again.
    let left = || observer.inspect("failover-job").unwrap().expect("held").expires_in.unwrap();
    let mut last = left();
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        let now_left = left();
        if now_left > last + Duration::from_millis(200) {
            break;
        }
        assert!(Instant::now() < give_up, "no renewal after the failover");
        last = now_left;
        thread::sleep(Duration::from_millis(20));
    }
    std::io::Write::write_all(lock.stdin.as_mut().unwrap(), b"after the failover\n").unwrap();
    drop(lock.stdin.take());
    let status = crate::support::exit_within(&mut lock, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(lock.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "the command's own status; {stderr}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "done after the failover\n");
    assert_eq!(observer.inspect("failover-job").unwrap(), None, "released at the end");
}

#[test]
fn a_leader_cut_off_from_the_others_grants_nothing_and_the_others_go_on() {
    let cluster = Cluster::start_apart(3);
    let old = cluster.leader();
    let (status, _, token) = super::acquire(cluster.addr(old), "moved", "a", 60);
    assert_eq!(status, 200);
    let token = token.unwrap();
    let mut load = Load::start(members(&cluster), CONTENDERS);
    warm_up(&load);
    let fault = Instant::now();
    let apart = cluster.apart.as_ref().expect("members apart");
    apart.cut(old);
    // The others elect one of them and serve, and the lock changes hands there; the cut-off
    // leader's clients still reach it.
    let others = cluster.followers(old);
    let new = cluster.leader_among(&others);
    assert_ne!(new, old);
    let mut c = crate::support::Http::connect(cluster.addr(new));
    let body = format!(r#"{{"resource":"moved","owner":"a","token":{token}}}"#);
    assert_eq!(c.post("/release", super::SECRET, &body).status, 200);
    let (status, _, next) = super::acquire(cluster.addr(new), "moved", "b", 60);
    assert_eq!(status, 200);
    let next = next.unwrap();
    // The cut-off member can commit nothing any more: it grants nothing, reads nothing stale,
    // and says so rather than hang.
    let seen = ask_about_a_moved_lock(
        cluster.addr(old),
        "moved",
        ("a", token),
        ("b", next),
        Instant::now() + Duration::from_secs(1),
    );
    assert!(seen.refused > 0 && seen.current == 0, "the cut-off member served: {seen:?}");
    // Joined again, it follows the new leader, and serves through it.
    apart.heal(old);
    cluster.leader();
    check(&mut load, fault, &cluster);
    load.check_kept(cluster.addr(old));
}
