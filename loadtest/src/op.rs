//! One request and how it went, in no protocol's terms: the [`Op`] a workload asks for, its
//! [`OpKind`] (what a reply is classified by) and the [`Outcome`] a protocol reads from the
//! reply. The workloads, the protocols and the statistics all speak these, and this module
//! names none of them.

/// One request, protocol-neutral. Keys are numbers; each protocol spells key `n` as `lt-<n>`
/// and the connection's owner as `lt-<conn>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Take a lock for this connection's owner.
    Acquire {
        /// The lock's name, as a number.
        key: u64,
    },
    /// Give a lock back, if this connection's owner holds it.
    Release {
        /// The lock's name, as a number.
        key: u64,
    },
    /// Ask the server whether it is up, doing no lock work (the transport's ceiling).
    Health,
}

/// Which kind of request a reply answers; replies are classified by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// See [`Op::Acquire`].
    Acquire,
    /// See [`Op::Release`].
    Release,
    /// See [`Op::Health`].
    Health,
}

impl Op {
    /// The kind of this request.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Acquire { .. } => OpKind::Acquire,
            Op::Release { .. } => OpKind::Release,
            Op::Health => OpKind::Health,
        }
    }
}

/// How a server answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An acquire that got the lock.
    Granted,
    /// A lock request refused because of another owner (or no owner): 409, Redis nil or `:0`.
    Conflict,
    /// A release or health probe that succeeded.
    Done,
    /// Anything else: a 4xx other than 409, a 5xx, a Redis error, a reply of the wrong type.
    Error,
}
