//! Unit tests of every shard operation and edge, and a model-based property test against a
//! tiny obvious model (a `BTreeMap` with linear scans).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::table::INDEX_CHANGES_PER_LOCK;
use super::*;

const SEED: u64 = 1_000;
const OWNERLESS: AcquireOpts = AcquireOpts { ttl: None, wait: 0, ticket: Ticket(0), watch: None, session: 0 };

fn shard() -> Shard {
    Shard::new(ResourceHasher::new(), TokenSeries::after(SEED))
}

fn ttl(ms: u64) -> AcquireOpts {
    AcquireOpts { ttl: Some(ms), ..OWNERLESS }
}

fn wait(ticket: u64, ms: u64) -> AcquireOpts {
    AcquireOpts { wait: ms, ticket: Ticket(ticket), ..OWNERLESS }
}

fn events(s: &mut Shard) -> Vec<Event> {
    s.drain_events().collect()
}

fn granted(ticket: u64, token: u64) -> Event {
    Event { ticket: Ticket(ticket), kind: EventKind::Granted { token } }
}

fn timed_out(ticket: u64) -> Event {
    Event { ticket: Ticket(ticket), kind: EventKind::TimedOut }
}

fn advance_all(s: &mut Shard, now: u64) {
    while s.advance(now, ADVANCE_BUDGET) {}
}

#[test]
fn acquire_grants_a_free_lock_and_reports_the_holder_of_a_held_one() {
    let mut s = shard();
    assert_eq!(s.acquire("r", "alice", OWNERLESS, 0), Acquired::Granted { token: SEED + 1 });
    assert_eq!(s.acquire("r", "bob", OWNERLESS, 0), Acquired::Busy { owner: "alice", token: SEED + 1 });
    assert_eq!(
        s.acquire("r", "alice", OWNERLESS, 0),
        Acquired::Busy { owner: "alice", token: SEED + 1 },
        "re-acquire by the same owner is a conflict, as in the reference server"
    );
    assert_eq!(s.acquire("other", "bob", OWNERLESS, 0), Acquired::Granted { token: SEED + 2 });
    assert_eq!(s.len(), 2);
}

#[test]
fn release_only_by_the_holder_and_tells_not_found_from_held_by_another() {
    let mut s = shard();
    assert_eq!(s.release("r", "alice", None, 0), Changed::NotFound);
    s.acquire("r", "alice", OWNERLESS, 0);
    assert_eq!(s.release("r", "bob", None, 0), Changed::NotHolder);
    assert_eq!(s.release("r", "alice", None, 0), Changed::Ok { token: SEED + 1 });
    assert_eq!(s.release("r", "alice", None, 0), Changed::NotFound);
    assert!(s.is_empty());
}

#[test]
fn token_checked_release() {
    let mut s = shard();
    let Acquired::Granted { token } = s.acquire("r", "alice", OWNERLESS, 0) else { panic!() };
    assert_eq!(s.release("r", "alice", Some(token + 1), 0), Changed::TokenMismatch);
    assert_eq!(s.release("r", "bob", Some(token), 0), Changed::NotHolder);
    assert_eq!(s.release("r", "alice", Some(token), 0), Changed::Ok { token });
}

#[test]
fn a_lease_expires_exactly_at_its_deadline_tick_never_before() {
    let mut s = shard();
    s.acquire("r", "alice", ttl(500), 1000);
    // Granted during tick 1000, so held through tick 1500 and free from 1501.
    assert_eq!(s.acquire("r", "bob", OWNERLESS, 1500), Acquired::Busy { owner: "alice", token: SEED + 1 });
    assert_eq!(s.inspect("r", 1500).map(|i| i.expires_in), Some(Some(0)));
    assert_eq!(s.acquire("r", "bob", OWNERLESS, 1501), Acquired::Granted { token: SEED + 2 });
}

#[test]
fn the_timer_sweeps_an_untouched_lease_on_time() {
    let mut s = shard();
    s.acquire("r", "alice", ttl(500), 1000);
    assert_eq!(s.next_deadline().map(|d| d <= 1501), Some(true));
    advance_all(&mut s, 1500);
    assert_eq!(s.len(), 1);
    advance_all(&mut s, 1501);
    assert_eq!(s.len(), 0);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_zero_ttl_is_granted_then_free_at_once() {
    let mut s = shard();
    assert_eq!(s.acquire("r", "alice", ttl(0), 7), Acquired::Granted { token: SEED + 1 });
    assert_eq!(s.inspect("r", 7), None);
    assert_eq!(s.acquire("r", "bob", ttl(0), 7), Acquired::Granted { token: SEED + 2 });
    advance_all(&mut s, 7);
    assert!(s.is_empty());
}

#[test]
fn extend_renews_the_lease_and_fails_after_expiry() {
    let mut s = shard();
    s.acquire("r", "alice", ttl(100), 0);
    assert_eq!(s.extend("r", "bob", None, Some(100), 50), Changed::NotHolder);
    assert_eq!(s.extend("r", "alice", Some(SEED + 9), Some(100), 50), Changed::TokenMismatch);
    assert_eq!(s.extend("r", "alice", Some(SEED + 1), Some(1000), 50), Changed::Ok { token: SEED + 1 });
    advance_all(&mut s, 1050);
    assert_eq!(s.inspect("r", 1050).map(|i| i.expires_in), Some(Some(0)), "the old timer did not fire");
    advance_all(&mut s, 1051);
    assert_eq!(s.extend("r", "alice", None, Some(100), 1051), Changed::NotFound);
    assert!(s.is_empty());

    s.acquire("r", "alice", ttl(100), 2000);
    assert_eq!(s.extend("r", "alice", None, None, 2000), Changed::Ok { token: SEED + 2 });
    advance_all(&mut s, 1_000_000);
    assert_eq!(s.inspect("r", 1_000_000).map(|i| i.expires_in), Some(None), "extended to no expiry");
}

#[test]
fn a_stale_timer_never_releases_a_newer_holder() {
    let mut s = shard();
    s.acquire("r", "alice", ttl(100), 0);
    s.release("r", "alice", None, 10);
    s.acquire("r", "bob", OWNERLESS, 20);
    advance_all(&mut s, 500);
    assert_eq!(s.inspect("r", 500).map(|i| (i.owner, i.token)), Some(("bob", SEED + 2)));
    // A new holder whose lease is shorter than what is left of the old timer's slot.
    s.release("r", "bob", None, 500);
    s.acquire("r", "carol", ttl(1000), 600);
    s.release("r", "carol", None, 601);
    s.acquire("r", "dave", ttl(5000), 602);
    advance_all(&mut s, 1700);
    assert_eq!(s.inspect("r", 1700).map(|i| i.owner), Some("dave"));
}

#[test]
fn waiters_are_granted_in_fifo_order_on_release() {
    let mut s = shard();
    s.acquire("r", "a", OWNERLESS, 0);
    assert_eq!(s.acquire("r", "b", wait(2, 10_000), 1), Acquired::Queued);
    assert_eq!(s.acquire("r", "c", wait(3, 10_000), 2), Acquired::Queued);
    assert_eq!(s.acquire("r", "d", wait(4, 10_000), 3), Acquired::Queued);
    assert_eq!(s.inspect("r", 3).map(|i| i.waiters), Some(3));
    assert_eq!(s.release("r", "a", None, 4), Changed::Ok { token: SEED + 1 });
    assert_eq!(events(&mut s), vec![granted(2, SEED + 2)], "handed off within the release call");
    assert_eq!(s.release("r", "c", None, 5), Changed::NotHolder);
    assert_eq!(s.release("r", "b", None, 5), Changed::Ok { token: SEED + 2 });
    assert_eq!(events(&mut s), vec![granted(3, SEED + 3)]);
    assert_eq!(s.release("r", "c", None, 6), Changed::Ok { token: SEED + 3 });
    assert_eq!(events(&mut s), vec![granted(4, SEED + 4)]);
    assert_eq!(s.release("r", "d", None, 7), Changed::Ok { token: SEED + 4 });
    assert_eq!(events(&mut s), vec![]);
    assert!(s.is_empty());
    assert_eq!(s.next_deadline(), None, "the waiters' timers were cancelled");
}

#[test]
fn a_waiter_times_out_at_its_deadline() {
    let mut s = shard();
    s.acquire("r", "a", OWNERLESS, 0);
    s.acquire("r", "b", wait(2, 100), 0);
    // Begun during tick 0, so it waits through tick 100 and gives up at 101.
    advance_all(&mut s, 100);
    assert_eq!(events(&mut s), vec![]);
    advance_all(&mut s, 101);
    assert_eq!(events(&mut s), vec![timed_out(2)]);
    assert_eq!(s.inspect("r", 101).map(|i| i.waiters), Some(0));
}

#[test]
fn a_waiter_whose_deadline_is_the_moment_the_lock_frees_has_timed_out() {
    let mut s = shard();
    s.acquire("r", "a", OWNERLESS, 0);
    s.acquire("r", "b", wait(2, 100), 0);
    s.acquire("r", "c", wait(3, 200), 0);
    assert_eq!(s.release("r", "a", None, 101), Changed::Ok { token: SEED + 1 });
    assert_eq!(events(&mut s), vec![timed_out(2), granted(3, SEED + 2)]);
}

#[test]
fn a_cancelled_waiter_is_skipped() {
    let mut s = shard();
    s.acquire("r", "a", OWNERLESS, 0);
    s.acquire("r", "b", wait(2, 1000), 0);
    s.acquire("r", "c", wait(3, 1000), 0);
    assert!(s.cancel_wait("r", Ticket(2), 1));
    assert!(!s.cancel_wait("r", Ticket(2), 1), "already gone");
    assert!(!s.cancel_wait("nope", Ticket(3), 1));
    s.release("r", "a", None, 2);
    assert_eq!(events(&mut s), vec![granted(3, SEED + 2)]);
    assert!(!s.cancel_wait("r", Ticket(3), 3), "granted, no longer waiting");
}

#[test]
fn an_expired_lease_is_handed_to_the_next_waiter() {
    let mut s = shard();
    s.acquire("r", "a", ttl(100), 0);
    s.acquire("r", "b", AcquireOpts { ttl: Some(50), ..wait(2, 1000) }, 10);
    advance_all(&mut s, 100);
    assert_eq!(events(&mut s), vec![]);
    advance_all(&mut s, 101);
    assert_eq!(events(&mut s), vec![granted(2, SEED + 2)]);
    assert_eq!(s.inspect("r", 101).map(|i| (i.owner, i.expires_in)), Some(("b", Some(50))));
    advance_all(&mut s, 152);
    assert!(s.is_empty());
}

#[test]
fn lazy_settling_hands_off_before_the_timer_fires() {
    let mut s = shard();
    s.acquire("r", "a", ttl(100), 0);
    s.acquire("r", "b", wait(2, 1000), 0);
    // No advance: the next operation on the lock settles it.
    assert_eq!(s.acquire("r", "c", OWNERLESS, 300), Acquired::Busy { owner: "b", token: SEED + 2 });
    assert_eq!(events(&mut s), vec![granted(2, SEED + 2)]);
}

#[test]
fn zero_ttl_waiters_cascade_through_the_queue() {
    let mut s = shard();
    s.acquire("r", "a", OWNERLESS, 0);
    s.acquire("r", "b", AcquireOpts { ttl: Some(0), ..wait(2, 1000) }, 0);
    s.acquire("r", "c", AcquireOpts { ttl: Some(0), ..wait(3, 1000) }, 0);
    s.release("r", "a", None, 5);
    assert_eq!(events(&mut s), vec![granted(2, SEED + 2), granted(3, SEED + 3)]);
    assert!(s.is_empty());
}

#[test]
fn a_watched_lease_reports_its_loss_on_expiry_but_not_on_release() {
    let mut s = shard();
    let watched =
        AcquireOpts { ttl: Some(10), wait: 0, ticket: Ticket(9), watch: Some(Ticket(9)), session: 0 };
    s.acquire("r", "a", watched, 0);
    advance_all(&mut s, 11);
    assert_eq!(events(&mut s), vec![Event { ticket: Ticket(9), kind: EventKind::Lost { token: SEED + 1 } }]);
    s.acquire("r", "a", watched, 20);
    s.release("r", "a", None, 21);
    advance_all(&mut s, 100);
    assert_eq!(events(&mut s), vec![]);
}

#[test]
fn the_queue_is_bounded() {
    let mut s = shard();
    s.acquire("r", "a", OWNERLESS, 0);
    for i in 0..MAX_WAITERS_PER_LOCK as u64 {
        assert_eq!(s.acquire("r", "w", wait(i, 1000), 0), Acquired::Queued);
    }
    assert_eq!(s.acquire("r", "w", wait(0, 1000), 0), Acquired::QueueFull);
    assert_eq!(s.acquire("r", "w", OWNERLESS, 0), Acquired::Busy { owner: "a", token: SEED + 1 });
}

#[test]
fn a_million_expiries_in_one_tick_are_spread_over_bounded_calls() {
    let mut s = shard();
    for i in 0..100_000 {
        s.acquire(&format!("r{i}"), "a", ttl(10), 0);
    }
    let mut calls = 0;
    while s.advance(11, 1000) {
        calls += 1;
    }
    assert!(calls >= 100, "{calls} calls");
    assert!(s.is_empty());
}

#[test]
fn list_by_prefix_sorted_and_paginated() {
    let mut s = shard();
    for name in ["job/3", "job/1", "other", "job/2", "job/4"] {
        s.acquire(name, "o", OWNERLESS, 0);
    }
    s.acquire("job/0", "o", ttl(5), 0);
    let names = |v: Vec<Listed>| v.into_iter().map(|l| l.resource).collect::<Vec<_>>();
    assert_eq!(names(s.list("job/", None, 2, 0)), ["job/0", "job/1"]);
    assert_eq!(names(s.list("job/", Some("job/1"), 2, 0)), ["job/2", "job/3"]);
    assert_eq!(names(s.list("job/", Some("job/3"), 2, 0)), ["job/4"]);
    assert_eq!(
        names(s.list("job/", None, 10, 6)),
        ["job/1", "job/2", "job/3", "job/4"],
        "expired lease left out"
    );
    assert_eq!(names(s.list("", None, 0, 0)), Vec::<String>::new());
    let all = s.list("other", None, 10, 0);
    assert_eq!(
        all,
        vec![Listed {
            resource: "other".into(),
            owner: "o".into(),
            token: SEED + 3,
            expires_in: None,
            waiters: 0
        }]
    );
}

#[test]
fn caps_refuse_new_names_and_waits_past_the_shards_share() {
    let mut s = shard().with_caps(Caps { locks: 2, waiters: 1 });
    assert_eq!(s.acquire("a", "o", ttl(10), 0), Acquired::Granted { token: SEED + 1 });
    assert_eq!(s.acquire("b", "o", OWNERLESS, 0), Acquired::Granted { token: SEED + 2 });
    assert_eq!(s.acquire("c", "o", OWNERLESS, 0), Acquired::Refused(Cap::Locks));
    assert_eq!(
        s.acquire("a", "p", OWNERLESS, 0),
        Acquired::Busy { owner: "o", token: SEED + 1 },
        "held names still answer"
    );
    assert_eq!(s.acquire("b", "p", wait(7, 100), 0), Acquired::Queued);
    assert_eq!(s.acquire("a", "q", wait(8, 100), 0), Acquired::Refused(Cap::Waiters));
    assert_eq!(s.stats().waiters, 1);
    assert_eq!(
        s.acquire("a", "p", OWNERLESS, 11),
        Acquired::Granted { token: SEED + 3 },
        "a lease that is over may be taken again at the cap"
    );
    assert_eq!(s.release("b", "o", None, 12), Changed::Ok { token: SEED + 2 });
    assert_eq!(events(&mut s), vec![granted(7, SEED + 4)]);
    assert_eq!(s.stats().waiters, 0);
    assert_eq!(s.acquire("a", "q", wait(9, 100), 12), Acquired::Queued, "room again");
    assert!(s.cancel_wait("a", Ticket(9), 12));
    assert_eq!(s.release("b", "p", None, 13), Changed::Ok { token: SEED + 4 });
    assert_eq!(s.acquire("c", "o", OWNERLESS, 13), Acquired::Granted { token: SEED + 5 }, "room again");
    let st = s.stats();
    assert_eq!((st.refused_locks, st.refused_waiters, st.waiters, st.held), (1, 1, 0, 2));
    assert_eq!(Caps::share(Caps { locks: 10, waiters: 1 }, 4), Caps { locks: 3, waiters: 1 });
    s.check();
}

#[test]
fn a_list_page_looks_at_about_its_own_size_not_the_shard() {
    let mut s = shard();
    let n = 100_000;
    let mut names: Vec<String> = (0..n).map(|i| format!("job/{:06}", (i * 7919) % n)).collect();
    for name in &names {
        s.acquire(name, "o", OWNERLESS, 0);
    }
    s.check();
    assert!(!s.table.indexed(), "a shard never listed keeps no index");
    names.sort();
    let limit: usize = 1000;
    // The first and last bucket in part, and the buckets between: each of at most twice the
    // target, at least a quarter of it.
    let most = (2 + (4 * limit).div_ceil(INDEX_BUCKET_LOCKS)) * (2 * INDEX_BUCKET_LOCKS);
    let (mut after, mut seen, mut visited) = (None::<String>, 0, s.stats().list_visited);
    loop {
        let page = s.list("job/", after.as_deref(), limit, 0);
        let looked = s.stats().list_visited - visited;
        visited += looked;
        if seen == 0 {
            // The first page builds the index: one look at every lock, then the page's own.
            assert!(s.table.indexed());
            assert!((n..=n + most).contains(&(looked as usize)), "the first page looked at {looked}");
        } else {
            assert!(looked as usize <= most, "a page of {limit} looked at {looked} of {n} locks");
        }
        let expected: Vec<&str> = names[seen..(seen + limit).min(n)].iter().map(String::as_str).collect();
        assert_eq!(page.iter().map(|l| l.resource.as_str()).collect::<Vec<_>>(), expected);
        seen += page.len();
        match page.last() {
            Some(last) => after = Some(last.resource.clone()),
            None => break,
        }
    }
    assert_eq!(seen, n);
    assert!(visited < 7 * n as u64, "paging through {n} locks looked at {visited}, building included");
    // A prefix that matches nothing looks at one bucket at most.
    let before = s.stats().list_visited;
    assert_eq!(s.list("nothing/", None, limit, 0), vec![]);
    assert!(s.stats().list_visited - before <= 2 * INDEX_BUCKET_LOCKS as u64);
    // Releasing them all gives the index up.
    for name in &names {
        s.release(name, "o", None, 1);
    }
    s.check();
    assert!(s.is_empty() && !s.table.indexed());
}

#[test]
fn the_name_index_is_built_by_a_list_and_given_up_when_lists_stop() {
    let mut s = shard().with_bucket_target(4);
    let n = 100;
    for i in 0..n {
        s.acquire(&format!("n{i:03}"), "o", OWNERLESS, 0);
    }
    assert!(!s.table.indexed(), "no list, no index");
    let names = |page: Vec<Listed>| page.into_iter().map(|l| l.resource).collect::<Vec<_>>();
    let first: Vec<String> = (0..10).map(|i| format!("n{i:03}")).collect();
    assert_eq!(names(s.list("", None, 10, 0)), first);
    // Built in 25 buckets of 4; the page walked the first three.
    assert!(s.table.indexed());
    assert_eq!(s.stats().list_visited, n as u64 + 12);
    s.check();
    // Acquire and release of another name: two changes the index follows.
    let churn = |s: &mut Shard, pairs: usize| {
        for _ in 0..pairs {
            s.acquire("m", "o", OWNERLESS, 1);
            s.release("m", "o", None, 1);
        }
    };
    let budget = INDEX_CHANGES_PER_LOCK * n;
    churn(&mut s, budget / 4);
    assert_eq!(s.stats().list_visited, n as u64 + 12);
    // A list gives it a whole budget again (and costs only its page now).
    assert_eq!(names(s.list("", None, 10, 1)), first);
    assert_eq!(s.stats().list_visited, n as u64 + 24);
    churn(&mut s, budget / 2 - 1);
    s.acquire("m", "o", OWNERLESS, 1);
    assert!(s.table.indexed(), "one change short of the budget");
    s.check();
    s.release("m", "o", None, 1);
    assert!(!s.table.indexed(), "given up");
    // The next list builds it again.
    assert_eq!(names(s.list("", None, 10, 1)), first);
    assert!(s.table.indexed());
    assert_eq!(s.stats().list_visited, 2 * n as u64 + 36);
    s.check();
}

// ---------------------------------------------------------------------------------------
// The name index against a model, with buckets small enough to split and merge often.

#[derive(Clone, Debug)]
enum IndexOp {
    Acquire { name: usize, ttl: Option<u64> },
    Release { name: usize },
    Advance(u64),
    List { prefix: usize, after: Option<usize>, limit: usize },
}

/// Forty names, some sharing prefixes, so that pages with a prefix cross buckets.
fn index_name(i: usize) -> String {
    let group = ["a/", "a/b/", "b/", "c"][i % 4];
    format!("{group}{:02}", i / 4)
}

fn index_op() -> impl Strategy<Value = IndexOp> {
    prop_oneof![
        5 => (0..40usize, prop_oneof![Just(None), (1u64..30).prop_map(Some)])
            .prop_map(|(name, ttl)| IndexOp::Acquire { name, ttl }),
        3 => (0..40usize).prop_map(|name| IndexOp::Release { name }),
        1 => (0u64..20).prop_map(IndexOp::Advance),
        2 => (0..5usize, prop::option::of(0..40usize), 0..12usize)
            .prop_map(|(prefix, after, limit)| IndexOp::List { prefix, after, limit }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every page is the model's (held names, by prefix, after a name, in order), and the
    /// index keeps every lock in its bucket, each bucket within its bounds.
    #[test]
    fn list_pages_match_the_model_as_the_index_splits_and_merges(
        target in 1usize..5,
        ops in prop::collection::vec(index_op(), 1..300),
    ) {
        let mut s = shard().with_bucket_target(target);
        // Name -> lease end.
        let mut model: BTreeMap<String, Option<u64>> = BTreeMap::new();
        let mut now = 0;
        for op in ops {
            match op {
                IndexOp::Acquire { name, ttl: lease } => {
                    let name = index_name(name);
                    let got = matches!(s.acquire(&name, "o", ttl_or_none(lease), now), Acquired::Granted { .. });
                    let live = model.get(&name).is_some_and(|end| end.is_none_or(|e| e > now));
                    prop_assert_eq!(got, !live);
                    if got {
                        model.insert(name, lease.map(|t| deadline_after(now, t)));
                    }
                }
                IndexOp::Release { name } => {
                    let name = index_name(name);
                    let done = matches!(s.release(&name, "o", None, now), Changed::Ok { .. });
                    let live = model.get(&name).is_some_and(|end| end.is_none_or(|e| e > now));
                    prop_assert_eq!(done, live);
                    model.remove(&name);
                }
                IndexOp::Advance(dt) => {
                    now += dt;
                    while s.advance(now, ADVANCE_BUDGET) {}
                }
                IndexOp::List { prefix, after, limit } => {
                    let prefix = ["", "a/", "a/b/", "b/", "x"][prefix];
                    let after = after.map(index_name);
                    let expected: Vec<String> = model
                        .iter()
                        .filter(|(n, end)| {
                            n.starts_with(prefix)
                                && after.as_ref().is_none_or(|a| *n > a)
                                && end.is_none_or(|e| e > now)
                        })
                        .map(|(n, _)| n.clone())
                        .take(limit)
                        .collect();
                    let got: Vec<String> =
                        s.list(prefix, after.as_deref(), limit, now).into_iter().map(|l| l.resource).collect();
                    prop_assert_eq!(got, expected);
                }
            }
            s.check();
        }
    }
}

fn ttl_or_none(lease: Option<u64>) -> AcquireOpts {
    AcquireOpts { ttl: lease, ..OWNERLESS }
}

/// The records the shard journaled since the last call.
fn journaled(s: &mut Shard) -> Vec<String> {
    let mut bytes = Vec::new();
    s.take_journal(&mut bytes);
    crate::store::record::Records::new(&bytes).map(|r| format!("{:?}", r.unwrap())).collect()
}

#[test]
fn a_forced_release_frees_the_lock_whoever_holds_it_and_is_journaled_as_a_release() {
    let mut s = shard();
    s.start_journal();
    assert_eq!(s.force_release("r", None, 0), Changed::NotFound);
    s.acquire("r", "alice", ttl(1_000), 0);
    assert_eq!(s.force_release("r", Some(SEED + 2), 1), Changed::TokenMismatch, "another lease");
    assert_eq!(s.force_release("r", None, 2), Changed::Ok { token: SEED + 1 });
    assert!(s.is_empty());
    assert_eq!(s.next_deadline(), None, "the lease's timer went with it");
    assert_eq!(s.release("r", "alice", None, 3), Changed::NotFound, "the holder finds it gone");
    s.acquire("r", "bob", OWNERLESS, 4);
    assert_eq!(s.force_release("r", Some(SEED + 2), 5), Changed::Ok { token: SEED + 2 });
    s.acquire("r", "carol", ttl(0), 6);
    assert_eq!(s.force_release("r", None, 6), Changed::NotFound, "a lease that is over is not held");
    let stats = s.stats();
    assert_eq!((stats.forced_releases, stats.releases, stats.expiries), (2, 0, 1));
    assert_eq!(
        journaled(&mut s),
        [
            "Grant { token: 1001, deadline: Some(1001), session: 0, resource: \"r\", owner: \"alice\" }",
            "Release { token: 1001 }",
            "Grant { token: 1002, deadline: None, session: 0, resource: \"r\", owner: \"bob\" }",
            "Release { token: 1002 }",
            "Grant { token: 1003, deadline: Some(6), session: 0, resource: \"r\", owner: \"carol\" }",
            "Expire { token: 1003 }",
        ]
    );
}

#[test]
fn a_forced_release_tells_the_watcher_its_lease_is_lost_and_hands_the_lock_on() {
    let mut s = shard();
    let watched =
        AcquireOpts { ttl: Some(10_000), wait: 0, ticket: Ticket(9), watch: Some(Ticket(9)), session: 7 };
    s.acquire("r", "a", watched, 0);
    assert_eq!(s.acquire("r", "b", wait(2, 1_000), 1), Acquired::Queued);
    assert_eq!(s.force_release("r", None, 2), Changed::Ok { token: SEED + 1 });
    assert_eq!(
        events(&mut s),
        [Event { ticket: Ticket(9), kind: EventKind::Lost { token: SEED + 1 } }, granted(2, SEED + 2)]
    );
    assert_eq!(s.inspect("r", 2).map(|i| (i.owner, i.token)), Some(("b", SEED + 2)));
    assert_eq!(
        s.grants().map(|g| format!("{g:?}")).collect::<Vec<_>>(),
        ["Grant { token: 1002, deadline: None, session: 0, resource: \"r\", owner: \"b\" }"],
        "the session went with the forced holder"
    );
}

#[test]
fn waits_are_timed_from_queueing_to_grant_and_holds_from_grant_to_their_end() {
    let mut s = shard();
    s.acquire("r", "a", OWNERLESS, 100);
    s.acquire("r", "b", AcquireOpts { ttl: Some(50), ..wait(2, 10_000) }, 150);
    s.acquire("r", "c", wait(3, 10), 150);
    s.release("r", "a", None, 400);
    // b waited 250 ms; c timed out (not counted); a held 300 ms.
    advance_all(&mut s, 451);
    // b's lease of 50 ms from 400 ended at 451: held 51 ms.
    s.acquire("q", "d", OWNERLESS, 1_000);
    s.force_release("q", None, 1_007);
    s.acquire("z", "e", ttl(0), 2_000);
    advance_all(&mut s, 2_000);
    s.restore(Restored { resource: "old", owner: "f", token: 1, deadline: None, session: 0, watch: None });
    s.release("old", "f", None, 3_000);
    let stats = s.stats();
    let mut waits = Durations::default();
    waits.record(250);
    assert_eq!(stats.wait_times, waits);
    let mut holds = Durations::default();
    for ms in [300, 51, 7, 0] {
        holds.record(ms);
    }
    assert_eq!(stats.hold_times, holds, "a restored lock's grant is unknown: its hold is not counted");
}

// ---------------------------------------------------------------------------------------
// Model-based property test.

#[derive(Clone, Debug)]
struct MWaiter {
    ticket: Ticket,
    owner: String,
    ttl: Option<u64>,
    deadline: u64,
    watch: Option<Ticket>,
    queued: u64,
}

#[derive(Clone, Debug)]
struct MLock {
    owner: String,
    token: u64,
    end: Option<u64>,
    waiters: Vec<MWaiter>,
    watcher: Option<Ticket>,
    granted: u64,
}

/// The obvious model: locks in a `BTreeMap`, everything by linear scan.
#[derive(Default)]
struct Model {
    locks: BTreeMap<String, MLock>,
    token: u64,
    events: Vec<Event>,
    /// Times of granted waits and of holds, in ms.
    wait_times: Durations,
    hold_times: Durations,
}

/// Results of both, tokens included, for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Granted(u64),
    Busy(String, u64),
    Queued,
    QueueFull,
    Refused(Cap),
    Info(Option<(String, u64, Option<u64>, usize)>),
    Cancelled(bool),
    Listed(Vec<Listed>),
}

impl Model {
    fn settle(&mut self, r: &str, now: u64) {
        loop {
            let Some(l) = self.locks.get(r) else { return };
            match l.end {
                Some(end) if end <= now => {
                    if !self.vacate(r, end, now, true) {
                        return;
                    }
                }
                _ => break,
            }
        }
        self.time_out(r, now);
    }

    fn time_out(&mut self, r: &str, by: u64) {
        let l = self.locks.get_mut(r).unwrap();
        let (gone, kept): (Vec<_>, Vec<_>) = l.waiters.drain(..).partition(|w| w.deadline <= by);
        l.waiters = kept;
        self.events.extend(gone.iter().map(|w| Event { ticket: w.ticket, kind: EventKind::TimedOut }));
    }

    fn vacate(&mut self, r: &str, free_at: u64, now: u64, expired: bool) -> bool {
        let l = self.locks.get_mut(r).unwrap();
        self.hold_times.record(free_at - l.granted);
        if let Some(w) = l.watcher.take()
            && expired
        {
            self.events.push(Event { ticket: w, kind: EventKind::Lost { token: l.token } });
        }
        self.time_out(r, free_at);
        let l = self.locks.get_mut(r).unwrap();
        if l.waiters.is_empty() {
            self.locks.remove(r);
            return false;
        }
        let w = l.waiters.remove(0);
        self.token += 1;
        self.wait_times.record(now - w.queued);
        l.granted = now;
        l.owner = w.owner;
        l.token = self.token;
        l.end = w.ttl.map(|t| deadline_after(now, t));
        l.watcher = w.watch;
        self.events.push(Event { ticket: w.ticket, kind: EventKind::Granted { token: self.token } });
        true
    }

    fn acquire(&mut self, r: &str, owner: &str, o: AcquireOpts, now: u64) -> Out {
        self.settle(r, now);
        if let Some(l) = self.locks.get_mut(r) {
            if o.wait == 0 {
                return Out::Busy(l.owner.clone(), l.token);
            }
            if l.waiters.len() >= MAX_WAITERS_PER_LOCK {
                return Out::QueueFull;
            }
            l.waiters.push(MWaiter {
                ticket: o.ticket,
                owner: owner.into(),
                ttl: o.ttl,
                deadline: deadline_after(now, o.wait),
                watch: o.watch,
                queued: now,
            });
            return Out::Queued;
        }
        self.token += 1;
        self.locks.insert(
            r.into(),
            MLock {
                owner: owner.into(),
                token: self.token,
                end: o.ttl.map(|t| deadline_after(now, t)),
                waiters: vec![],
                watcher: o.watch,
                granted: now,
            },
        );
        Out::Granted(self.token)
    }

    fn check(&mut self, r: &str, owner: Option<&str>, token: Option<u64>, now: u64) -> Result<u64, Changed> {
        self.settle(r, now);
        let l = self.locks.get(r).ok_or(Changed::NotFound)?;
        if owner.is_some_and(|o| o != l.owner) {
            return Err(Changed::NotHolder);
        }
        if token.is_some_and(|t| t != l.token) {
            return Err(Changed::TokenMismatch);
        }
        Ok(l.token)
    }

    fn release(&mut self, r: &str, owner: &str, token: Option<u64>, now: u64) -> Changed {
        match self.check(r, Some(owner), token, now) {
            Err(e) => e,
            Ok(t) => {
                self.locks.get_mut(r).unwrap().end = None;
                if self.vacate(r, now, now, false) {
                    self.settle(r, now);
                }
                Changed::Ok { token: t }
            }
        }
    }

    /// A release whoever holds it, whose watcher hears the lease is lost.
    fn force_release(&mut self, r: &str, token: Option<u64>, now: u64) -> Changed {
        match self.check(r, None, token, now) {
            Err(e) => e,
            Ok(t) => {
                let l = self.locks.get_mut(r).unwrap();
                l.end = None;
                if let Some(w) = l.watcher.take() {
                    self.events.push(Event { ticket: w, kind: EventKind::Lost { token: t } });
                }
                if self.vacate(r, now, now, false) {
                    self.settle(r, now);
                }
                Changed::Ok { token: t }
            }
        }
    }

    fn extend(&mut self, r: &str, owner: &str, token: Option<u64>, ttl: Option<u64>, now: u64) -> Changed {
        match self.check(r, Some(owner), token, now) {
            Err(e) => e,
            Ok(t) => {
                self.locks.get_mut(r).unwrap().end = ttl.map(|ttl| deadline_after(now, ttl));
                self.settle(r, now);
                Changed::Ok { token: t }
            }
        }
    }

    fn inspect(&mut self, r: &str, now: u64) -> Out {
        self.settle(r, now);
        Out::Info(
            self.locks.get(r).map(|l| {
                (l.owner.clone(), l.token, l.end.map(|e| e.saturating_sub(now + 1)), l.waiters.len())
            }),
        )
    }

    fn cancel(&mut self, r: &str, ticket: Ticket, now: u64) -> bool {
        self.settle(r, now);
        let Some(l) = self.locks.get_mut(r) else {
            return false;
        };
        let before = l.waiters.len();
        l.waiters.retain(|w| w.ticket != ticket);
        before != l.waiters.len()
    }

    fn list(&self, prefix: &str, limit: usize, now: u64) -> Vec<Listed> {
        self.locks
            .iter()
            .filter(|(name, l)| name.starts_with(prefix) && l.end.is_none_or(|e| e > now))
            .take(limit)
            .map(|(name, l)| Listed {
                resource: name.clone(),
                owner: l.owner.clone(),
                token: l.token,
                expires_in: l.end.map(|e| e.saturating_sub(now + 1)),
                waiters: l.waiters.len(),
            })
            .collect()
    }

    fn advance(&mut self, now: u64) {
        let names: Vec<String> = self.locks.keys().cloned().collect();
        for r in names {
            self.settle(&r, now);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        r: usize,
        o: usize,
        ttl: Option<u64>,
        wait: u64,
        watch: bool,
    },
    Release {
        r: usize,
        o: usize,
        token: TokenPick,
    },
    ForceRelease {
        r: usize,
        token: TokenPick,
    },
    Extend {
        r: usize,
        o: usize,
        token: TokenPick,
        ttl: Option<u64>,
    },
    Inspect {
        r: usize,
    },
    Cancel {
        pick: usize,
    },
    List {
        prefix: usize,
        limit: usize,
    },
    /// Time passes; only operations notice (lazy settling).
    Tick(u64),
    /// Time passes and the wheel is advanced (budget 1..4 per call, to cut work short).
    Advance(u64, usize),
}

#[derive(Clone, Copy, Debug)]
enum TokenPick {
    None,
    Current,
    Stale,
}

const RESOURCES: [&str; 3] = ["r0", "r1", "x2"];
const OWNERS: [&str; 3] = ["o0", "o1", "o2"];

fn op() -> impl Strategy<Value = Op> {
    let ttl = prop_oneof![Just(None), Just(Some(0)), (1u64..40).prop_map(Some)];
    let token = prop_oneof![Just(TokenPick::None), Just(TokenPick::Current), Just(TokenPick::Stale)];
    prop_oneof![
        6 => (0..3usize, 0..3usize, ttl.clone(), prop_oneof![Just(0u64), 1u64..60], any::<bool>())
            .prop_map(|(r, o, ttl, wait, watch)| Op::Acquire { r, o, ttl, wait, watch }),
        4 => (0..3usize, 0..3usize, token.clone()).prop_map(|(r, o, token)| Op::Release { r, o, token }),
        1 => (0..3usize, token.clone()).prop_map(|(r, token)| Op::ForceRelease { r, token }),
        2 => (0..3usize, 0..3usize, token, ttl).prop_map(|(r, o, token, ttl)| Op::Extend { r, o, token, ttl }),
        1 => (0..3usize).prop_map(|r| Op::Inspect { r }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (0..2usize, 0..4usize).prop_map(|(prefix, limit)| Op::List { prefix, limit }),
        2 => (0u64..25).prop_map(Op::Tick),
        3 => (0u64..25, 1usize..4).prop_map(|(dt, b)| Op::Advance(dt, b)),
    ]
}

/// Keeps shard tokens and model tokens in one-to-one correspondence. They need not be equal:
/// when one advance hands several locks on, the wheel and the model may visit them in a
/// different order.
#[derive(Default)]
struct Tokens {
    to_model: HashMap<u64, u64>,
    to_shard: HashMap<u64, u64>,
}

impl Tokens {
    fn pair(&mut self, shard: u64, model: u64) -> Result<(), TestCaseError> {
        let a = *self.to_model.entry(shard).or_insert(model);
        let b = *self.to_shard.entry(model).or_insert(shard);
        prop_assert!(a == model && b == shard, "token {shard} (shard) vs {model} (model)");
        Ok(())
    }

    fn model(&self, shard: u64) -> u64 {
        self.to_model.get(&shard).copied().unwrap_or(u64::MAX)
    }
}

/// What the harness knows of a resource's current holder, to check the safety invariants.
#[derive(Clone, Copy, Debug)]
struct Holding {
    token: u64,
    since: u64,
    ttl: Option<u64>,
}

struct Harness {
    shard: Shard,
    model: Model,
    tokens: Tokens,
    now: u64,
    next_ticket: u64,
    /// Acquire tickets still waiting, with their resource.
    waiting: Vec<(Ticket, usize)>,
    /// Tickets of acquires, with their resource, owner and lease (to track grants by event).
    tickets: HashMap<Ticket, (usize, Option<u64>)>,
    holders: [Option<Holding>; 3],
    last_token: [u64; 3],
    /// Shard tokens whose holder gave the lock up (released, or extended to zero).
    released: std::collections::HashSet<u64>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            shard: shard(),
            model: Model { token: SEED, ..Model::default() },
            tokens: Tokens::default(),
            now: 0,
            next_ticket: 0,
            waiting: vec![],
            tickets: HashMap::new(),
            holders: [None; 3],
            last_token: [0; 3],
            released: Default::default(),
        }
    }

    /// Records a grant and checks the invariants: tokens rise, and the previous holder's lease
    /// (if it was not released) had run its full length.
    fn granted(&mut self, r: usize, token: u64, ttl: Option<u64>) -> Result<(), TestCaseError> {
        prop_assert!(token > self.last_token[r], "token {} after {} on {}", token, self.last_token[r], r);
        self.last_token[r] = token;
        self.vacated(r)?;
        self.holders[r] = Some(Holding { token, since: self.now, ttl });
        Ok(())
    }

    /// The holder of `r`, if any, is gone without a release: its lease must be over.
    fn vacated(&mut self, r: usize) -> Result<(), TestCaseError> {
        if let Some(h) = self.holders[r].take().filter(|h| !self.released.contains(&h.token)) {
            match h.ttl {
                None => prop_assert!(false, "lock {r} token {} with no expiry lost its holder", h.token),
                Some(ttl) => prop_assert!(
                    self.now >= h.since + ttl,
                    "lease {} of {ttl} ms from {} ended at {}",
                    h.token,
                    h.since,
                    self.now
                ),
            }
        }
        Ok(())
    }

    fn compare_events(&mut self, sort: bool) -> Result<(), TestCaseError> {
        let mut shard: Vec<Event> = self.shard.drain_events().collect();
        let mut model: Vec<Event> = std::mem::take(&mut self.model.events);
        if sort {
            shard.sort_by_key(|e| e.ticket);
            model.sort_by_key(|e| e.ticket);
        }
        prop_assert_eq!(shard.len(), model.len(), "events {:?} vs {:?}", shard, model);
        for (s, m) in shard.iter().zip(&model) {
            prop_assert_eq!(s.ticket, m.ticket, "events {:?} vs {:?}", shard, model);
            match (s.kind, m.kind) {
                (EventKind::Granted { token: a }, EventKind::Granted { token: b }) => {
                    self.tokens.pair(a, b)?;
                    let (r, ttl) = self.tickets[&s.ticket];
                    self.waiting.retain(|(t, _)| *t != s.ticket);
                    self.granted(r, a, ttl)?;
                }
                (EventKind::Lost { token: a }, EventKind::Lost { token: b }) => {
                    prop_assert_eq!(self.tokens.model(a), b);
                    let r = self.tickets[&s.ticket].0;
                    if self.holders[r].is_some_and(|h| h.token == a) {
                        self.vacated(r)?;
                    }
                }
                (EventKind::TimedOut, EventKind::TimedOut) => self.waiting.retain(|(t, _)| *t != s.ticket),
                (a, b) => prop_assert!(false, "event {:?} vs {:?}", a, b),
            }
        }
        Ok(())
    }

    fn token_of(&self, r: usize, pick: TokenPick) -> (Option<u64>, Option<u64>) {
        let current = self.holders[r].map(|h| h.token).unwrap_or(self.last_token[r]);
        match pick {
            TokenPick::None => (None, None),
            TokenPick::Current => (Some(current), Some(self.tokens.model(current))),
            TokenPick::Stale => {
                (Some(current.wrapping_sub(1)), Some(self.tokens.model(current).wrapping_sub(1)))
            }
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Acquire { r, o, ttl, wait, watch } => {
                self.next_ticket += 1;
                let ticket = Ticket(self.next_ticket);
                self.tickets.insert(ticket, (r, ttl));
                let opts = AcquireOpts { ttl, wait, ticket, watch: watch.then_some(ticket), session: 0 };
                let m = self.model.acquire(RESOURCES[r], OWNERS[o], opts, now);
                let s = match self.shard.acquire(RESOURCES[r], OWNERS[o], opts, now) {
                    Acquired::Granted { token } => Out::Granted(token),
                    Acquired::Busy { owner, token } => Out::Busy(owner.into(), token),
                    Acquired::Queued => Out::Queued,
                    Acquired::QueueFull => Out::QueueFull,
                    Acquired::Refused(cap) => Out::Refused(cap),
                };
                // Events first: a lazy settle may have handed the lock on before this answer.
                self.compare_events(false)?;
                match (&s, &m) {
                    (Out::Granted(a), Out::Granted(b)) => {
                        self.tokens.pair(*a, *b)?;
                        self.granted(r, *a, ttl)?;
                        if ttl == Some(0) {
                            self.vacated(r)?;
                        }
                    }
                    (Out::Busy(a, ta), Out::Busy(b, tb)) => {
                        prop_assert_eq!(a, b);
                        prop_assert_eq!(self.tokens.model(*ta), *tb);
                    }
                    (Out::Queued, Out::Queued) => self.waiting.push((ticket, r)),
                    _ => prop_assert_eq!(&s, &m),
                }
            }
            Op::Release { r, o, token } => {
                let (ts, tm) = self.token_of(r, token);
                let m = self.model.release(RESOURCES[r], OWNERS[o], tm, now);
                let s = self.shard.release(RESOURCES[r], OWNERS[o], ts, now);
                if let Changed::Ok { token } = s {
                    self.released.insert(token);
                }
                self.compare_events(false)?;
                self.same_change(s, m)?;
                if let Changed::Ok { token } = s
                    && self.holders[r].is_some_and(|h| h.token == token)
                {
                    self.holders[r] = None;
                }
            }
            Op::ForceRelease { r, token } => {
                let (ts, tm) = self.token_of(r, token);
                let m = self.model.force_release(RESOURCES[r], tm, now);
                let s = self.shard.force_release(RESOURCES[r], ts, now);
                if let Changed::Ok { token } = s {
                    self.released.insert(token);
                }
                self.compare_events(false)?;
                self.same_change(s, m)?;
                if let Changed::Ok { token } = s
                    && self.holders[r].is_some_and(|h| h.token == token)
                {
                    self.holders[r] = None;
                }
            }
            Op::Extend { r, o, token, ttl } => {
                let (ts, tm) = self.token_of(r, token);
                let m = self.model.extend(RESOURCES[r], OWNERS[o], tm, ttl, now);
                let s = self.shard.extend(RESOURCES[r], OWNERS[o], ts, ttl, now);
                if let (Changed::Ok { token }, Some(0)) = (s, ttl) {
                    self.released.insert(token);
                }
                self.compare_events(false)?;
                self.same_change(s, m)?;
                if let Changed::Ok { token } = s
                    && self.holders[r].is_some_and(|h| h.token == token)
                {
                    self.holders[r] = (ttl != Some(0)).then_some(Holding { token, since: now, ttl });
                }
            }
            Op::Inspect { r } => {
                let m = self.model.inspect(RESOURCES[r], now);
                let s = self
                    .shard
                    .inspect(RESOURCES[r], now)
                    .map(|i| (i.owner.to_owned(), i.token, i.expires_in, i.waiters));
                self.compare_events(false)?;
                let s = s.map(|(owner, token, expires_in, waiters)| {
                    (owner, self.tokens.model(token), expires_in, waiters)
                });
                prop_assert_eq!(Out::Info(s), m);
            }
            Op::Cancel { pick } => {
                if self.waiting.is_empty() {
                    return Ok(());
                }
                let (ticket, r) = self.waiting[pick % self.waiting.len()];
                let m = self.model.cancel(RESOURCES[r], ticket, now);
                let s = self.shard.cancel_wait(RESOURCES[r], ticket, now);
                self.compare_events(false)?;
                prop_assert_eq!(Out::Cancelled(s), Out::Cancelled(m));
                self.waiting.retain(|(t, _)| *t != ticket);
            }
            Op::List { prefix, limit } => {
                let prefix = ["", "r"][prefix];
                let m = self.model.list(prefix, limit, now);
                let s: Vec<Listed> = self
                    .shard
                    .list(prefix, None, limit, now)
                    .into_iter()
                    .map(|l| Listed { token: self.tokens.model(l.token), ..l })
                    .collect();
                prop_assert_eq!(Out::Listed(s), Out::Listed(m));
            }
            Op::Tick(dt) => self.now += dt,
            Op::Advance(dt, budget) => {
                self.now += dt;
                while self.shard.advance(self.now, budget) {}
                self.model.advance(self.now);
                self.compare_events(true)?;
            }
        }
        prop_assert!(self.shard.len() <= RESOURCES.len());
        self.shard.check();
        let stats = self.shard.stats();
        prop_assert_eq!(stats.wait_times, self.model.wait_times, "wait times");
        prop_assert_eq!(stats.hold_times, self.model.hold_times, "hold times");
        Ok(())
    }

    fn same_change(&self, s: Changed, m: Changed) -> Result<(), TestCaseError> {
        match (s, m) {
            (Changed::Ok { token: a }, Changed::Ok { token: b }) => {
                prop_assert_eq!(self.tokens.model(a), b)
            }
            _ => prop_assert_eq!(s, m),
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The shard and the model give the same answers and events at every step, and the
    /// safety invariants hold throughout: one holder at a time, rising tokens, no early end.
    #[test]
    fn shard_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let mut h = Harness::new();
        for op in ops {
            h.step(op)?;
        }
        // Let everything run out, and check the last hand-offs too.
        h.now += 1_000;
        while h.shard.advance(h.now, ADVANCE_BUDGET) {}
        h.model.advance(h.now);
        h.compare_events(true)?;
        prop_assert_eq!(h.shard.len(), h.model.locks.len());
    }
}
