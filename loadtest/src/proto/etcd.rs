//! etcd's lock: which requests of etcd's v3 API each [`Op`] is, and what their answers mean.
//! Not a [`Protocol`](super::Protocol): gRPC (HTTP/2 frames, protobuf) is `etcd-client`'s and
//! tonic's business, and the run's etcd driver (`run::etcd`) does the calls. What is left is
//! pure and built here: the transactions, the leases' lengths, and each answer's [`Outcome`].
//!
//! A lock on etcd 3.4, as etcd's own `concurrency` package builds one:
//! - **acquire**: `Txn: if create_revision(key) == 0 then put(key, owner, lease) else get(key)`.
//!   A create revision of 0 means the key does not exist, so the put happens only if nobody
//!   holds the lock; the `get` tells a real client who does (the generator only counts the
//!   conflict).
//! - **release**: `Txn: if value(key) == owner then delete(key)`, a compare-and-delete like
//!   Redis's release script, so that a release never deletes a lock another owner holds (one
//!   sent behind a lost acquire, as every target's scripts do, or after the lease ran out).
//! - **the lease**: one per connection, a session as etcd's `concurrency.Session` makes: granted
//!   when the connection opens, kept alive (every third of its TTL) while the run lasts, and
//!   revoked at its end, which deletes any key still on it. Every acquire of the connection
//!   puts its key with that lease. The ttl workload is the exception: its locks must end by
//!   themselves, [`Lease::PerAcquire`], so each acquire first grants a lease of its own.
//!
//! # What each request costs in etcd writes
//! etcd answers a transaction without consensus only when all its operations are reads; these
//! put or delete, so each one, whether its compare holds or not, is a Raft entry: appended to
//! the leader's log and fsynced on a majority of members before the answer. (etcd batches the
//! entries of concurrent requests into one append and one fsync.) An entry whose compare held
//! also makes one MVCC revision.
//!
//! | request                                  | Raft entries | revisions |
//! |------------------------------------------|--------------|-----------|
//! | acquire, granted (session lease)         | 1            | 1         |
//! | acquire, refused (the key exists)        | 1            | 0         |
//! | release, deleted                         | 1            | 1         |
//! | release, refused (not ours)              | 1            | 0         |
//! | ttl acquire (lease per acquire)          | 2: `LeaseGrant`, then the txn; and 1 more when the lease expires (the leader's `LeaseRevoke`, which deletes the key) | 1, and 1 at expiry |
//! | a connection's session                   | 1 `LeaseGrant` when it opens, 1 `LeaseRevoke` when it closes; keep-alives are renewed by the leader alone, no entry | |
//!
//! So an acquire and its release, the unit of the uncontended and contended workloads, cost
//! **two** Raft entries; a lock with its own lease costs three.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::Name;
use crate::op::{OpKind, Outcome};

/// The lease of every lock when the run gives none: an etcd lock has a lease (without one, a
/// crashed holder would keep it forever), as a Redis lock has a TTL.
pub const DEFAULT_TTL_MS: u64 = 30_000;

/// How often a session lease is renewed, as a share of its TTL: etcd's own client renews every
/// third of it, so two renewals may be lost before the lease ends.
pub const KEEPALIVE_FRACTION: u32 = 3;

/// Which lease a connection's locks are put with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// One lease per connection, granted when it opens and kept alive: an acquire is one
    /// transaction.
    Session,
    /// A lease of its own for each acquire, granted just before it and never renewed, so the
    /// lock ends by itself (the ttl workload): an acquire is a `LeaseGrant` and a transaction.
    PerAcquire,
}

impl Lease {
    /// The lease a run's locks take: their own when the workload never releases.
    pub fn for_workload(releases: bool) -> Lease {
        if releases { Lease::Session } else { Lease::PerAcquire }
    }
}

/// The TTL to ask etcd for, in its unit, whole seconds: `ttl_ms` rounded up (never shorter than
/// asked), [`DEFAULT_TTL_MS`] if none. etcd raises a TTL below its minimum (1.5 election
/// timeouts, rounded up: 2 s with the default 1 s) to that minimum, and says so in its answer.
pub fn lease_seconds(ttl_ms: Option<u64>) -> i64 {
    let ms = ttl_ms.unwrap_or(DEFAULT_TTL_MS).max(1);
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// How long between the renewals of a session lease of `ttl_s` seconds (as granted).
pub fn keepalive_interval(ttl_s: i64) -> Duration {
    let ttl = Duration::from_secs(u64::try_from(ttl_s.max(1)).unwrap_or(1));
    ttl / KEEPALIVE_FRACTION
}

/// The acquire of `key` by `owner` with `lease`: `if create_revision(key) == 0 then put(key,
/// owner, lease) else get(key)`.
pub fn acquire(key: u64, owner: &Name, lease: i64) -> Txn {
    let key = Name::new(key);
    Txn::new()
        .when([Compare::create_revision(key.as_bytes(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.as_bytes(), owner.as_bytes(), Some(PutOptions::new().with_lease(lease)))])
        .or_else([TxnOp::get(key.as_bytes(), None)])
}

/// The release of `key` by `owner`: `if value(key) == owner then delete(key)`.
pub fn release(key: u64, owner: &Name) -> Txn {
    let key = Name::new(key);
    Txn::new()
        .when([Compare::value(key.as_bytes(), CompareOp::Equal, owner.as_bytes())])
        .and_then([TxnOp::delete(key.as_bytes(), None)])
}

/// What a transaction's answer means for a request of kind `kind`: its compare held (the put
/// or the delete happened) or not. A health probe is no etcd request, so any answer to one is
/// an error.
pub fn classify(kind: OpKind, succeeded: bool) -> Outcome {
    match (kind, succeeded) {
        (OpKind::Acquire, true) => Outcome::Granted,
        (OpKind::Release, true) => Outcome::Done,
        (OpKind::Acquire | OpKind::Release, false) => Outcome::Conflict,
        (OpKind::Health, _) => Outcome::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request a builder made, as etcd-client shows it: prost's `Debug` of etcd's own
    /// `TxnRequest`, with keys and values as byte lists.
    fn shown(txn: &Txn) -> String {
        format!("{txn:?}")
    }

    fn bytes(s: &str) -> String {
        format!("{:?}", s.as_bytes())
    }

    #[test]
    fn acquire_puts_with_the_lease_only_if_the_key_was_never_created() {
        let txn = shown(&acquire(42, &Name::new(7), 0x1234));
        let (key, owner) = (bytes("lt-42"), bytes("lt-7"));
        let compare = format!(
            "compare: [Compare {{ result: Equal, target: Create, key: {key}, range_end: [], \
             target_union: Some(CreateRevision(0)) }}]"
        );
        assert!(txn.contains(&compare), "{txn}");
        let put = format!(
            "success: [RequestOp {{ request: Some(RequestPut(PutRequest {{ key: {key}, value: {owner}, lease: 4660,"
        );
        assert!(txn.contains(&put), "{txn}");
        let get = format!(
            "failure: [RequestOp {{ request: Some(RequestRange(RangeRequest {{ key: {key}, range_end: [],"
        );
        assert!(txn.contains(&get), "{txn}");
    }

    #[test]
    fn release_deletes_only_the_owners_own_key() {
        let txn = shown(&release(42, &Name::new(7)));
        let (key, owner) = (bytes("lt-42"), bytes("lt-7"));
        let compare = format!(
            "compare: [Compare {{ result: Equal, target: Value, key: {key}, range_end: [], \
             target_union: Some(Value({owner})) }}]"
        );
        assert!(txn.contains(&compare), "{txn}");
        let delete = format!(
            "success: [RequestOp {{ request: Some(RequestDeleteRange(DeleteRangeRequest {{ key: {key}, range_end: [],"
        );
        assert!(txn.contains(&delete), "{txn}");
        assert!(txn.contains("failure: []"), "{txn}");
    }

    #[test]
    fn answers_classify_by_whether_the_compare_held() {
        assert_eq!(classify(OpKind::Acquire, true), Outcome::Granted);
        assert_eq!(classify(OpKind::Acquire, false), Outcome::Conflict);
        assert_eq!(classify(OpKind::Release, true), Outcome::Done);
        assert_eq!(classify(OpKind::Release, false), Outcome::Conflict);
        assert_eq!(classify(OpKind::Health, true), Outcome::Error);
    }

    #[test]
    fn leases_are_whole_seconds_rounded_up() {
        assert_eq!(lease_seconds(None), 30);
        assert_eq!(lease_seconds(Some(30_000)), 30);
        assert_eq!(lease_seconds(Some(1000)), 1);
        assert_eq!(lease_seconds(Some(1001)), 2);
        assert_eq!(lease_seconds(Some(1)), 1);
        assert_eq!(lease_seconds(Some(u64::MAX)), i64::try_from(u64::MAX.div_ceil(1000)).unwrap());
    }

    #[test]
    fn sessions_are_renewed_every_third_of_their_ttl() {
        assert_eq!(keepalive_interval(30), Duration::from_secs(10));
        assert_eq!(keepalive_interval(2), Duration::from_nanos(666_666_666));
        assert_eq!(keepalive_interval(0), Duration::from_secs(1) / 3);
    }

    #[test]
    fn only_the_workload_that_never_releases_takes_a_lease_per_acquire() {
        assert_eq!(Lease::for_workload(true), Lease::Session);
        assert_eq!(Lease::for_workload(false), Lease::PerAcquire);
    }
}
