//! The generator against its own responder, in-process on 127.0.0.1:0: a short closed-loop
//! run of each target must complete requests with no errors. Needs no server of the project.

use std::net::TcpListener;
use std::thread;

use loadtest::responder::{self, Kind};

mod support;
use support::{failover, run};

/// Starts a responder on a free loopback port; it lives as long as the test process.
fn start_responder(kind: Kind) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || responder::serve(listener, kind, None).unwrap());
    addr
}

#[test]
fn closed_loop_http_against_the_responder_completes_without_errors() {
    let addr = start_responder(Kind::Http);
    let r = run(&addr, "--target http -c 4 -d 8 --warmup 0.1 --duration 0.5");
    assert!(r.requests > 1000, "{r}");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert_eq!(r.counts.conflicts, 0, "{r}");
    // The responder grants every acquire and accepts every release; the run stops between
    // cycles, so each acquire's release was answered too, give or take the warm-up boundary.
    assert_eq!(r.counts.replies, r.counts.grants + r.counts.done);
    assert!(r.counts.grants.abs_diff(r.counts.done) <= 4 * 8, "{r}");
    assert!(r.elapsed_s > 0.4 && r.elapsed_s < 1.0, "{r}");
    let acquire = r.acquire_us.unwrap();
    assert_eq!(acquire.count, r.counts.grants);
    assert!(acquire.p50 > 0.0 && acquire.p50 <= acquire.p99 && acquire.p99 <= acquire.max);
    assert!(r.generator_cpu_share.is_some());
    assert_eq!(r.server_cpu_s, None);
}

#[test]
fn request_bound_stops_the_run() {
    let addr = start_responder(Kind::Http);
    let r = run(&addr, "--target health -c 2 --warmup 0 --duration 5 --requests 500");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert_eq!(r.counts.replies, 500, "{r}");
    assert_eq!(r.counts.done, 500, "{r}");
    assert!(r.elapsed_s < 2.0, "{r}");
}

#[test]
fn open_loop_redis_ttl_against_the_responder_keeps_the_rate() {
    let addr = start_responder(Kind::Redis);
    let r = run(
        &addr,
        "--target redis --workload ttl --ttl-ms 1000 -c 4 --rate 2000 --warmup 0.1 --duration 0.5",
    );
    assert_eq!(r.counts.errors, 0, "{r}");
    // 2000/s for 0.5 s: about 1000 measured requests, every one an acquire granted.
    assert!((900..=1100).contains(&r.requests), "{r}");
    assert_eq!(r.counts.grants, r.requests);
    assert_eq!(r.send_lag_us.unwrap().count, r.requests);
    assert_eq!(r.rate, Some(2000));
    // Finishing must not look like the server hanging up.
    assert_eq!(r.first_error, None);
}

#[test]
fn open_loop_batches_are_written_together_and_counted_at_the_rate() {
    let addr = start_responder(Kind::Http);
    let r = run(&addr, "--target http --ttl-ms 1500 -c 2 -d 16 --rate 8000 --warmup 0.1 --duration 0.5");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert_eq!(r.first_error, None, "{r}");
    assert!((3600..=4400).contains(&r.requests), "{r}");
    assert_eq!(r.depth, 16);
    assert_eq!(r.counts.grants.abs_diff(r.counts.done), 0, "{r}");
}

#[test]
fn hold_and_release_measures_waits_and_hand_offs() {
    let addr = start_responder(Kind::Http);
    let r = run(&addr, "--target http --workload hold --hot 1 --hold-ms 2 -c 2 --warmup 0.1 --duration 0.5");
    assert_eq!(r.counts.errors, 0, "{r}");
    // The responder grants everything: every acquire wins, and each hold lasts 2 ms or more,
    // so each connection completes at most 250 cycles in 0.5 s.
    assert_eq!(r.counts.conflicts, 0, "{r}");
    let wait = r.wait_us.unwrap();
    assert_eq!(wait.count, r.counts.grants);
    assert!(r.counts.grants > 20 && r.counts.grants <= 2 * 250, "{r}");
    // A hand-off needs a release that finds the other connection trying for the name; the
    // responder grants at once, so few releases do, and never more than there are grants.
    assert!(r.handoff_us.map_or(0, |h| h.count) < r.counts.grants, "{r}");
}

#[test]
fn a_server_pid_gives_cpu_per_request() {
    let addr = start_responder(Kind::Http);
    let pid = std::process::id().to_string();
    let r = run(&addr, &format!("--target health --warmup 0.1 --duration 0.3 --server-pid {pid}"));
    assert!(r.server_cpu_s.is_some(), "{r}");
    assert!(r.server_cpu_us_per_request.is_some(), "{r}");
}

/// The failover probe's mechanics, with a stand-in for the leader: a child process to kill,
/// and the responder, which grants at once, as the cluster that survives it.
#[test]
fn failover_kills_the_pid_and_times_the_next_grant() {
    use std::os::unix::process::ExitStatusExt;
    let addr = start_responder(Kind::Http);
    let mut leader = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let r =
        failover(&format!("{addr},{addr}"), &format!("--target http --kill-pid {} --timeout 5", leader.id()));
    assert_eq!(leader.wait().unwrap().signal(), Some(9), "{r}");
    let ms = r.first_grant_ms.expect("a grant after the kill");
    // The first attempt starts on the probe's first tick, at once: a loopback round trip.
    assert!(ms < 500.0, "{r}");
    assert!(r.attempts >= 1 && r.errors == 0 && r.conflicts == 0, "{r}");
    assert!(r.grant_before_kill_ms > 0.0, "{r}");
    assert_eq!(r.addr, format!("{addr},{addr}"));
}
