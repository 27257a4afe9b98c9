//! The plain data that calls take and give: how to acquire, what a grant is, a lock as the
//! server sees it, and a session lock lost. No behaviour; the connection and the client
//! both use it.

use std::time::Duration;

/// How to acquire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcquireOptions {
    /// Lease length; `None` holds until released (or, for a session lock, until its session
    /// ends).
    pub ttl: Option<Duration>,
    /// How long to wait server-side if the lock is held; `None` answers at once.
    pub wait: Option<Duration>,
    /// Bind the lock to this client's session: released when the session ends (protocol
    /// version 2: [`Config::session_timeout`](crate::Config::session_timeout) after the client
    /// is gone without a word; version 1: when its connection closes).
    pub session: bool,
}

/// A granted lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub resource: String,
    /// Its fencing token: pass it to the storage you write to, which should refuse a lower one.
    pub token: u64,
}

/// A lock as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub owner: String,
    pub token: u64,
    /// Time left of the lease; `None` for no expiry.
    pub expires_in: Option<Duration>,
    pub waiters: u32,
}

/// A session lock that is gone: its lease ran out (pushed by the server), or its session
/// ended while the client was away (found when it reconnected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub resource: String,
    pub token: u64,
}
