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

/// How long the clients run before the fault, and after the cluster serves again: long enough
/// for leases of up to 300 ms, and the new leader's grace of 600 ms, to run out a few times.
const BEFORE_FAULT: Duration = Duration::from_millis(1000);
const AFTER_FAULT: Duration = Duration::from_millis(1500);
/// Contending clients.
const CONTENDERS: u64 = 6;

fn members(cluster: &Cluster) -> Vec<SocketAddr> {
    (0..cluster.seats.len()).map(|i| cluster.addr(i)).collect()
}

/// Waits for `load` to finish and checks it: it granted on either side of the fault at
/// `fault`, its history holds, and its kept locks are held as the cluster's leader answers.
fn check(mut load: Load, fault: Instant, cluster: &Cluster) {
    thread::sleep(AFTER_FAULT);
    let seen = load.finish();
    let (before, after) =
        (load.history.grants() - load.history.granted_after(fault), load.history.granted_after(fault));
    assert!(
        before > 10 && after > 10,
        "too quiet a run: {before} grants before the fault, {after} after; {seen:?}"
    );
    load.history.check();
    load.check_kept(cluster.addr(cluster.leader()));
}

#[test]
fn no_two_holders_and_no_grant_lost_when_the_leader_is_killed_under_load() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let load = Load::start(members(&cluster), CONTENDERS);
    thread::sleep(BEFORE_FAULT);
    let fault = Instant::now();
    cluster.kill(leader);
    let next = cluster.leader();
    assert_ne!(next, leader);
    check(load, fault, &cluster);
}
