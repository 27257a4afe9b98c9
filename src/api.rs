//! The protocol-neutral request and reply. Every protocol parses into a [`Request`] and encodes
//! a [`Reply`]; [`LockService`] is all a protocol may ask of the server; [`apply`] is the one
//! place where a request meets a shard. Also owns what a request may ask for, which every
//! protocol checks alike ([`check`], with the configured [`Limits`] and the constants below).

use crate::cluster::{ClusterStatus, MembershipError};
use crate::config::Limits;
use crate::metrics::CoreStats;
use crate::shard::{AcquireOpts, Acquired, Cap, Changed, EventKind, Listed, Shard, Ticket};

/// Longest lease, in ms: one year. Longer asks are refused rather than clamped.
pub const MAX_TTL_MS: u64 = 365 * 24 * 3600 * 1000;
/// Longest server-side wait, in ms: one day.
pub const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;
/// Most locks one list request returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Locks a list request returns when it does not say.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// A request, generic over how it holds its strings: borrowed from a read buffer (`&str`)
/// while it is served on the core that parsed it, owned (`Box<str>`) when it travels to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<S = Box<str>> {
    /// Take a lock; `ttl` in ms (`None`: until released), wait up to `wait` ms if it is busy.
    /// `session`: the session that will hold it ([`NO_SESSION`]; [`CONNECTION_SESSION`], a lock
    /// released when the connection that took it closes; or a resumable session's id).
    Acquire {
        resource: S,
        owner: S,
        ttl: Option<u64>,
        wait: u64,
        session: u64,
    },
    Release {
        resource: S,
        owner: S,
        token: Option<u64>,
    },
    /// Free the lock whoever holds it (an operator's tool), if it is held under `token` when
    /// one is given; a session holder is told it is lost.
    ForceRelease {
        resource: S,
        token: Option<u64>,
    },
    /// Renew the lease: it ends `ttl` ms from now (`None`: never).
    Extend {
        resource: S,
        owner: S,
        token: Option<u64>,
        ttl: Option<u64>,
    },
    Inspect {
        resource: S,
    },
    /// Held locks whose names start with `prefix`, after `after`, at most `limit`, by name.
    List {
        prefix: S,
        after: Option<S>,
        limit: usize,
    },
    /// What a core has done: counts for `/metrics`.
    Stats,
}

/// The answer to a request (or a later word about it, for waits and sessions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The lock is the requester's, under this fencing token.
    Granted { token: u64 },
    /// Held by someone else (or by the same owner: locks are not re-entrant).
    Busy,
    /// Held, and too many requests already wait for it.
    QueueFull,
    /// The request waited for its whole wait time.
    TimedOut,
    /// Released or extended; the lease's token.
    Done { token: u64 },
    /// Nobody holds the lock.
    NotFound,
    /// Somebody else holds the lock.
    NotHolder,
    /// The owner holds the lock under another token (a newer grant).
    TokenMismatch,
    /// The lock, if held.
    Info(Option<Box<Listed>>),
    /// Part of a list answer: one shard's share.
    Listed(Vec<Listed>),
    /// A session lock's lease ran out, or an operator freed it (a forced release).
    Lost { token: u64 },
    /// One core's share of a stats answer.
    Stats(Box<CoreStats>),
    /// The server cannot keep the change (its log cannot be written): nothing was done, try
    /// again later.
    Unavailable,
    /// The connection belongs to the resumable session `session` now, which outlives it for
    /// `timeout_ms`; `resumed`: the session asked for, with its locks (else a new one).
    Attached { session: u64, timeout_ms: u64, resumed: bool },
    /// A cluster member that does not lead, with no leader to send the request to: nothing
    /// was done; try again (an election is under way).
    NoLeader,
    /// The cluster as this member sees it; `None`: the server is no cluster's member.
    Cluster(Option<Box<ClusterStatus>>),
    /// Whether a membership change was made.
    Membership(Result<(), MembershipError>),
    /// The server holds its limit of locks (for a new name) or of waiters (for a wait):
    /// nothing was done, try again later.
    Refused(Cap),
}

/// What an operator may ask of the cluster (HTTP only: `/cluster`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOp {
    /// Where the cluster stands, as this member sees it.
    Status,
    /// Adds member `id`, whose consensus address is `addr` (`HOST:PORT`).
    AddMember { id: u64, addr: String },
    /// Removes member `id`.
    RemoveMember { id: u64 },
}

/// An acquire's `session` when the lock belongs to no session.
pub const NO_SESSION: u64 = 0;
pub use crate::store::record::CONNECTION_SESSION;

/// What a connection's protocol session may ask of the lock service, during one turn of its
/// core's loop. A session numbers its requests in flight with slots of its own choosing (below
/// its in-flight limit); an answer that is not given at once comes later to the same slot
/// (through the connection's mailbox), as do the parts of a request for every shard.
pub trait LockService {
    /// Serves `req`, a request about one resource. `Some`: the answer now; `None`: it comes
    /// later to `slot`.
    fn submit<S: AsRef<str>>(&mut self, slot: usize, req: &Request<S>) -> Option<Reply>;

    /// Serves a request for every shard (a list, stats): this core's share now, and how many
    /// shares will follow to `slot`.
    fn submit_all<S: AsRef<str>>(&mut self, slot: usize, req: &Request<S>) -> (Option<Reply>, usize);

    /// Withdraws the waiting acquire in `slot` on `resource` by `owner` (its client went away).
    /// If it was granted meanwhile, the grant is released when it arrives.
    fn withdraw(&mut self, slot: usize, resource: &str, owner: &str);

    /// The acquire in `slot` (of `resource` by `owner`) lost its client: if it is granted
    /// after all, the grant is released when it arrives.
    fn abandon(&mut self, slot: usize, resource: &str, owner: &str);

    /// Releases the lock `token` on `resource` held by `owner` for a client that is gone (a
    /// closed connection's session lock).
    fn release_for_gone(&mut self, resource: &str, owner: &str, token: u64);

    /// Makes the connection the one of resumable session `session` (0: a new session) with
    /// `timeout_ms`; the answer ([`Reply::Attached`]) now, or later to `slot`.
    fn attach(&mut self, slot: usize, session: u64, timeout_ms: u64) -> Option<Reply>;

    /// The connection of resumable session `session` is gone: the session outlives it for its
    /// timeout, and a connection that attaches to it meanwhile takes it over.
    fn detach(&mut self, session: u64);

    /// Serves an operator's request about the cluster: the answer now, or later to `slot` (a
    /// membership change takes the cluster's time).
    fn cluster(&mut self, slot: usize, op: ClusterOp) -> Option<Reply>;
}

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    Nul,
}

impl NameError {
    /// A one-line reason naming the field and its limit.
    pub fn describe(self, field: &str, max: usize) -> String {
        match self {
            NameError::Empty => format!("{field} must not be empty"),
            NameError::TooLong => format!("{field} is longer than {max} bytes"),
            NameError::Nul => format!("{field} must not contain NUL"),
        }
    }
}

/// Checks a name: at most `max` bytes, no NUL, and not empty unless `may_be_empty`.
pub fn check_name(name: &str, max: usize, may_be_empty: bool) -> Result<(), NameError> {
    if name.is_empty() && !may_be_empty {
        Err(NameError::Empty)
    } else if name.len() > max {
        Err(NameError::TooLong)
    } else if name.as_bytes().contains(&0) {
        Err(NameError::Nul)
    } else {
        Ok(())
    }
}

/// Checks a request's names and durations against `limits` and the maxima above; the error
/// is a one-line reason for the client.
pub fn check<S: AsRef<str>>(req: &Request<S>, limits: &Limits) -> Result<(), String> {
    let (resource, owner, ttl, wait) = match req {
        Request::Acquire { resource, owner, ttl, wait, .. } => (Some(resource), Some(owner), *ttl, *wait),
        Request::Release { resource, owner, .. } => (Some(resource), Some(owner), None, 0),
        Request::ForceRelease { resource, .. } => (Some(resource), None, None, 0),
        Request::Extend { resource, owner, ttl, .. } => (Some(resource), Some(owner), *ttl, 0),
        Request::Inspect { resource } => (Some(resource), None, None, 0),
        Request::List { prefix, after, .. } => {
            let long = |s: &S| s.as_ref().len() > limits.max_resource_bytes;
            if long(prefix) || after.as_ref().is_some_and(long) {
                return Err(format!("prefix and after must be at most {} bytes", limits.max_resource_bytes));
            }
            (None, None, None, 0)
        }
        Request::Stats => (None, None, None, 0),
    };
    if let Some(r) = resource {
        check_name(r.as_ref(), limits.max_resource_bytes, false)
            .map_err(|e| e.describe("resource", limits.max_resource_bytes))?;
    }
    if let Some(o) = owner {
        check_name(o.as_ref(), limits.max_owner_bytes, true)
            .map_err(|e| e.describe("owner", limits.max_owner_bytes))?;
    }
    if ttl.is_some_and(|t| t > MAX_TTL_MS) {
        return Err(format!("ttl must be at most {MAX_TTL_MS} ms"));
    }
    if wait > MAX_WAIT_MS {
        return Err(format!("wait must be at most {MAX_WAIT_MS} ms"));
    }
    Ok(())
}

impl<S: AsRef<str>> Request<S> {
    /// The resource the request is about; `None` for a list or stats, which ask every shard.
    pub fn resource(&self) -> Option<&str> {
        match self {
            Request::Acquire { resource, .. }
            | Request::Release { resource, .. }
            | Request::ForceRelease { resource, .. }
            | Request::Extend { resource, .. }
            | Request::Inspect { resource } => Some(resource.as_ref()),
            Request::List { .. } | Request::Stats => None,
        }
    }

    /// Whether serving it may change a lock (and so must be logged before it is answered).
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Acquire { .. }
                | Request::Release { .. }
                | Request::ForceRelease { .. }
                | Request::Extend { .. }
        )
    }

    /// An owned copy, to send to another core.
    pub fn to_owned(&self) -> Request {
        let own = |s: &S| Box::<str>::from(s.as_ref());
        match self {
            Request::Acquire { resource, owner, ttl, wait, session } => Request::Acquire {
                resource: own(resource),
                owner: own(owner),
                ttl: *ttl,
                wait: *wait,
                session: *session,
            },
            Request::Release { resource, owner, token } => {
                Request::Release { resource: own(resource), owner: own(owner), token: *token }
            }
            Request::ForceRelease { resource, token } => {
                Request::ForceRelease { resource: own(resource), token: *token }
            }
            Request::Extend { resource, owner, token, ttl } => {
                Request::Extend { resource: own(resource), owner: own(owner), token: *token, ttl: *ttl }
            }
            Request::Inspect { resource } => Request::Inspect { resource: own(resource) },
            Request::List { prefix, after, limit } => {
                Request::List { prefix: own(prefix), after: after.as_ref().map(own), limit: *limit }
            }
            Request::Stats => Request::Stats,
        }
    }
}

/// Serves `req` on `shard` at `now`. `None` means the request waits: its answer comes later
/// as an event for `ticket`. A session acquire's lease running out is reported to `watcher`
/// (its connection's, or its session's). Events for other tickets go to
/// [`Shard::drain_events`].
pub fn apply<S: AsRef<str>>(
    shard: &mut Shard,
    req: &Request<S>,
    ticket: Ticket,
    watcher: Ticket,
    now: u64,
) -> Option<Reply> {
    Some(match req {
        Request::Acquire { resource, owner, ttl, wait, session } => {
            let opts = AcquireOpts {
                ttl: *ttl,
                wait: *wait,
                ticket,
                watch: (*session != NO_SESSION).then_some(watcher),
                session: *session,
            };
            match shard.acquire(resource.as_ref(), owner.as_ref(), opts, now) {
                Acquired::Granted { token } => Reply::Granted { token },
                Acquired::Busy { .. } => Reply::Busy,
                Acquired::Queued => return None,
                Acquired::QueueFull => Reply::QueueFull,
                Acquired::Refused(cap) => Reply::Refused(cap),
            }
        }
        Request::Release { resource, owner, token } => {
            changed(shard.release(resource.as_ref(), owner.as_ref(), *token, now))
        }
        Request::ForceRelease { resource, token } => {
            changed(shard.force_release(resource.as_ref(), *token, now))
        }
        Request::Extend { resource, owner, token, ttl } => {
            changed(shard.extend(resource.as_ref(), owner.as_ref(), *token, *ttl, now))
        }
        Request::Inspect { resource } => Reply::Info(shard.inspect(resource.as_ref(), now).map(|i| {
            Box::new(Listed {
                resource: resource.as_ref().to_owned(),
                owner: i.owner.to_owned(),
                token: i.token,
                expires_in: i.expires_in,
                waiters: i.waiters,
            })
        })),
        Request::List { prefix, after, limit } => {
            Reply::Listed(shard.list(prefix.as_ref(), after.as_ref().map(AsRef::as_ref), *limit, now))
        }
        Request::Stats => Reply::Stats(Box::new(CoreStats { shard: shard.stats(), ..CoreStats::default() })),
    })
}

fn changed(c: Changed) -> Reply {
    match c {
        Changed::Ok { token } => Reply::Done { token },
        Changed::NotFound => Reply::NotFound,
        Changed::NotHolder => Reply::NotHolder,
        Changed::TokenMismatch => Reply::TokenMismatch,
    }
}

impl From<EventKind> for Reply {
    fn from(kind: EventKind) -> Reply {
        match kind {
            EventKind::Granted { token } => Reply::Granted { token },
            EventKind::TimedOut => Reply::TimedOut,
            EventKind::Lost { token } => Reply::Lost { token },
        }
    }
}

/// Merges shards' list answers (each sorted by name) into the first `limit` by name, and
/// the cursor to continue from if there may be more.
pub fn merge_lists(parts: Vec<Vec<Listed>>, limit: usize) -> (Vec<Listed>, Option<String>) {
    let maybe_more = parts.iter().any(|p| p.len() >= limit);
    let mut all: Vec<Listed> = parts.into_iter().flatten().collect();
    all.sort_unstable_by(|a, b| a.resource.cmp(&b.resource));
    let truncated = all.len() > limit;
    all.truncate(limit);
    let next =
        if (truncated || maybe_more) && limit > 0 { all.last().map(|l| l.resource.clone()) } else { None };
    (all, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ResourceHasher;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("a", 1024, false), Ok(()));
        assert_eq!(check_name("", 1024, false), Err(NameError::Empty));
        assert_eq!(check_name("", 256, true), Ok(()));
        assert_eq!(check_name(&"x".repeat(1025), 1024, false), Err(NameError::TooLong));
        assert_eq!(check_name("a\0b", 1024, false), Err(NameError::Nul));
        assert_eq!(NameError::TooLong.describe("owner", 256), "owner is longer than 256 bytes");
    }

    #[test]
    fn requests_are_checked_against_the_limits() {
        let limits = Limits { max_resource_bytes: 4, max_owner_bytes: 2, ..Limits::default() };
        let acq =
            |resource, owner, ttl, wait| Request::Acquire { resource, owner, ttl, wait, session: NO_SESSION };
        assert_eq!(check(&acq("abcd", "xy", Some(MAX_TTL_MS), MAX_WAIT_MS), &limits), Ok(()));
        assert_eq!(
            check(&acq("abcde", "x", None, 0), &limits),
            Err("resource is longer than 4 bytes".into())
        );
        assert_eq!(check(&acq("a", "xyz", None, 0), &limits), Err("owner is longer than 2 bytes".into()));
        assert_eq!(
            check(&acq("a", "x", Some(MAX_TTL_MS + 1), 0), &limits),
            Err("ttl must be at most 31536000000 ms".into())
        );
        assert_eq!(
            check(&acq("a", "x", None, MAX_WAIT_MS + 1), &limits),
            Err("wait must be at most 86400000 ms".into())
        );
        assert_eq!(
            check(&Request::Inspect { resource: "" }, &limits),
            Err("resource must not be empty".into())
        );
        let list = Request::List { prefix: "abcde", after: None, limit: 1 };
        assert_eq!(check(&list, &limits), Err("prefix and after must be at most 4 bytes".into()));
    }

    #[test]
    fn apply_maps_engine_results() {
        let mut s = Shard::new(ResourceHasher::new(), crate::shard::TokenSeries::after(0));
        let acq = |ttl| Request::Acquire { resource: "r", owner: "o", ttl, wait: 0, session: NO_SESSION };
        assert_eq!(apply(&mut s, &acq(None), Ticket(1), Ticket(0), 0), Some(Reply::Granted { token: 1 }));
        assert_eq!(apply(&mut s, &acq(None), Ticket(1), Ticket(0), 0), Some(Reply::Busy));
        let waiting =
            Request::Acquire { resource: "r", owner: "p", ttl: None, wait: 10, session: NO_SESSION };
        assert_eq!(apply(&mut s, &waiting, Ticket(2), Ticket(0), 0), None);
        let info = apply(&mut s, &Request::Inspect { resource: "r" }, Ticket(3), Ticket(0), 0);
        assert_eq!(
            info,
            Some(Reply::Info(Some(Box::new(Listed {
                resource: "r".into(),
                owner: "o".into(),
                token: 1,
                expires_in: None,
                waiters: 1
            }))))
        );
        let rel = Request::Release { resource: "r", owner: "o", token: Some(1) };
        assert_eq!(apply(&mut s, &rel, Ticket(4), Ticket(0), 1), Some(Reply::Done { token: 1 }));
        let events: Vec<Reply> = s.drain_events().map(|e| e.kind.into()).collect();
        assert_eq!(events, vec![Reply::Granted { token: 2 }]);
        assert_eq!(apply(&mut s, &rel, Ticket(4), Ticket(0), 1), Some(Reply::NotHolder));
    }

    #[test]
    fn a_forced_release_frees_a_session_lock_and_its_connection_hears_it_is_lost() {
        let mut s = Shard::new(ResourceHasher::new(), crate::shard::TokenSeries::after(0));
        let session =
            Request::Acquire { resource: "r", owner: "o", ttl: None, wait: 0, session: CONNECTION_SESSION };
        assert_eq!(apply(&mut s, &session, Ticket(1), Ticket(7), 0), Some(Reply::Granted { token: 1 }));
        let force = |token| Request::ForceRelease { resource: "r", token };
        assert_eq!(apply(&mut s, &force(Some(2)), Ticket(2), Ticket(0), 1), Some(Reply::TokenMismatch));
        assert_eq!(apply(&mut s, &force(None), Ticket(2), Ticket(0), 1), Some(Reply::Done { token: 1 }));
        let events: Vec<(Ticket, Reply)> = s.drain_events().map(|e| (e.ticket, e.kind.into())).collect();
        assert_eq!(events, vec![(Ticket(7), Reply::Lost { token: 1 })], "to the session's watcher");
        assert_eq!(apply(&mut s, &force(None), Ticket(2), Ticket(0), 1), Some(Reply::NotFound));
        assert!(force(None).changes_state(), "logged before it is answered");
        assert_eq!(force(None).resource(), Some("r"));
        assert_eq!(
            check(&Request::ForceRelease { resource: "", token: None }, &Limits::default()),
            Err("resource must not be empty".into())
        );
    }

    #[test]
    fn list_parts_merge_in_name_order_with_a_cursor() {
        let l = |n: &str| Listed {
            resource: n.into(),
            owner: "o".into(),
            token: 1,
            expires_in: None,
            waiters: 0,
        };
        let (all, next) = merge_lists(vec![vec![l("a"), l("d")], vec![l("b"), l("c")]], 3);
        assert_eq!(all.iter().map(|l| l.resource.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(next.as_deref(), Some("c"));
        let (all, next) = merge_lists(vec![vec![l("a")], vec![]], 3);
        assert_eq!((all.len(), next), (1, None));
    }
}
