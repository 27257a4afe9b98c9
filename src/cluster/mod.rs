//! Replication: a ringlock cluster's consensus, through openraft (pinned `=0.9.25`). Owns the
//! replicated log on disk, the state machine every member applies, the members' network and the
//! leader's start; the server's cores use it only through a [`Handle`].
//!
//! # What the server gets
//! - [`start`]`(`[`ClusterConfig`]`) -> `[`Handle`]: opens `DATA_DIR/raft/`, binds the consensus
//!   address (`peers[node_id]`) and runs openraft on a thread of its own with its own tokio
//!   runtime (the cores are tokio-uring and `!Send`). The handle is `Send + Sync + Clone`, and
//!   its futures need no particular runtime.
//! - [`Handle::submit`]`(`[`Batch`]`)`: one core's group-commit batch (records in the
//!   `store::record` format, stamped with the leader's clock and the term of the
//!   [`LeaderStart`] it was decided under). Resolves once a majority has it and this member has
//!   applied it, or fails with [`NotLeader`] (naming the leader when known). A failure is
//!   indeterminate, as in any Raft: the batch may still commit later, and the next leader's
//!   [`LeaderStart`] then holds it.
//! - [`Handle::roles`]: a watch of [`Role`]. On becoming leader the member first commits a
//!   `Lead { at, grace_ms }` entry (`at` from [`ClusterConfig::clock`]) and only then announces
//!   [`Role::Leader`] with the whole state after that entry ([`LeaderStart`]: locks with their
//!   deadlines in that clock, sessions, tokens). Anything else is [`Role::Follower`].
//! - [`Handle::status`] (serializable, for `GET /cluster`), [`Handle::add_member`] and
//!   [`Handle::remove_member`] (joint consensus), [`Handle::ensure_linearizable`] (ReadIndex:
//!   a read after it sees every write committed before it), [`Handle::shutdown`].
//!
//! # The state machine is recovery's fold
//! Applying a committed entry is [`Replay::batch`](crate::store::recovery::Replay::batch) of its
//! records: a follower's state is what the single server would recover from the same records,
//! and followers never expire anything on their own clock. A new leader's `Lead` record is
//! `Run` with a grace: every running lease keeps what it had left at the old leader's last batch,
//! plus [`LEAD_GRACE_MS`] (no lease ends early across a failover). Tokens come from the
//! replicated state, so they never go back.
//!
//! **A batch counts only under the leadership it was decided in**: a batch is applied only if
//! its entry's term is its [`Batch::term`] and the last `Lead` applied is of that term (`Lead`
//! entries set it). A deposed leader's cores may still submit, but what they decided on a stale
//! state never reaches the state machine, on any member (the rule is a pure function of the
//! log, so every member drops the same batches).
//!
//! # Files (`DATA_DIR/raft/`)
//! - `INCARNATION`: a random number drawn when the directory is made. A member that lost its
//!   data comes back with another, and the others refuse to count it until a membership change
//!   records the new one ([`Handle::add_member`]).
//! - `LOCK`: `flock`ed while the member runs.
//! - `<n>.log`: the log (entries, votes, truncations, purges) as frames in `store::record`'s
//!   batch framing (length, CRC-32); every append and vote is written and `fdatasync`ed before
//!   it is acknowledged (`logstore`).
//! - `snapshot`: the state machine at a log index, in `store::dir::encode_snapshot`'s format
//!   behind a header (`machine`); replaced atomically (write, sync, rename).
//!
//! # Network (`wire`, `network`, `listener`)
//! TCP between consensus addresses; frames of a `u32` length and a bincode body. A connection
//! opens with a handshake presenting the shared secret (compared in constant time) and the node
//! id and incarnation the caller expects; a member refuses one that is not for itself. The same
//! port answers `Describe` (who are you, are you in a cluster yet), which bootstrap and
//! [`Handle::add_member`] use. Connections are made on first use and again after any failure;
//! every call has a timeout. When the server has a TLS certificate, every connection between
//! members is TLS (rustls over tokio): the consensus port serves the server's certificate (and
//! requires a client certificate when the server does), and a member dials the others
//! presenting its certificate and trusting the peer CA (`crate::tls`).
//!
//! # Bootstrap
//! Each member is given its id and every member's consensus address. On a pristine directory
//! the lowest id describes every peer and, once all answer and none is in a cluster yet,
//! initializes the cluster with all of them; the others wait to be contacted. With
//! [`ClusterConfig::join`] a member never bootstraps (it waits for [`Handle::add_member`]), and
//! nor does a lowest-id member that finds any peer already in a cluster (it lost its data: it is
//! added back, never founds a second cluster).

mod listener;
mod logstore;
mod machine;
mod network;
mod node;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::Secret;

pub use node::{Handle, start};

/// A leader's heartbeat, in ms: a follower hears from its leader 12 to 16 times in the lease
/// and election timeout it waits before it stands, so a few late heartbeats (a loaded
/// machine, a slow `fdatasync` on the leader) do not start an election.
pub const HEARTBEAT_MS: u64 = 50;
/// The shortest election timeout, in ms: well above a round trip and a log sync on a LAN, so a
/// live leader is not deposed. A follower that has had a leader waits openraft's leader lease
/// (the longest timeout) plus its own timeout after the last heartbeat before it stands, so a
/// failover takes 600 to 800 ms, one more timeout when the first round splits: far below issue
/// 12's 2 s.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 200;
/// The longest election timeout, in ms: twice the shortest, so that members' timeouts spread
/// and one candidate usually wins the first round.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 400;
/// What a new leader adds to every running lease, in ms: the longest election timeout, the time
/// during which the holder could reach no leader to renew through.
pub const LEAD_GRACE_MS: u64 = ELECTION_TIMEOUT_MAX_MS;
/// A leader that has heard from no majority for this long, in ms, stops serving until it has
/// again: nothing it proposes can commit meanwhile, so its clients would only hang. The longest
/// election timeout: by then its followers are electing another leader anyway.
pub const QUORUM_LOST_MS: u64 = ELECTION_TIMEOUT_MAX_MS;
/// A snapshot is taken once this many entries were applied since the last: the log kept in
/// memory and on disk stays bounded (about this many batches) while a snapshot, a pass over
/// every lock, stays rare (at 200 batches a second, one every 25 s).
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 5_000;
/// Entries kept after a snapshot covers them, so a follower that fell a little behind catches
/// up from the log rather than by a whole snapshot.
pub const ENTRIES_KEPT_AFTER_SNAPSHOT: u64 = 1_000;

openraft::declare_raft_types!(
    /// openraft's types for ringlock: entries are [`Batch`]es, applying one answers nothing
    /// (`()`), members are [`Member`]s.
    pub TypeConfig:
        D = Batch,
        R = (),
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What the cluster knows of a member (kept in the replicated membership).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its consensus address (`HOST:PORT`).
    pub raft_addr: String,
    /// Its client address, where followers forward requests.
    pub api_addr: String,
    /// Drawn when its data directory was made: a member that lost its data has another.
    pub incarnation: u64,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (api {}, incarnation {:x})", self.raft_addr, self.api_addr, self.incarnation)
    }
}

/// One log entry: one core's group-commit batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The term of the [`LeaderStart`] the batch was decided under: applied only while that
    /// leadership's `Lead` is the last one applied (see the module docs).
    pub term: u64,
    /// The leader's clock (ms) when the batch was cut.
    pub at: u64,
    /// Records in the `store::record` format.
    #[serde(with = "wire::bytes")]
    pub records: Vec<u8>,
}

/// A lock held when a leader starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLock {
    pub resource: Box<str>,
    pub owner: Box<str>,
    pub token: u64,
    /// When its lease ends, in the clock of [`LeaderStart::at`]; `None`: no expiry.
    pub deadline: Option<u64>,
    /// The session that holds it (0: none).
    pub session: u64,
}

/// The whole state a new leader starts from: everything committed, after its `Lead` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderStart {
    /// The leadership: every [`Batch`] decided from this state carries it.
    pub term: u64,
    /// The clock (ms, [`ClusterConfig::clock`]) the `Lead` entry was stamped with.
    pub at: u64,
    /// Every lock held, in token order.
    pub locks: Vec<HeldLock>,
    /// The resumable sessions open, `(id, timeout ms)`, in id order: each outlives the change
    /// of leader for its whole timeout.
    pub sessions: Vec<(u64, u64)>,
    /// Above every token ever handed out.
    pub next_token: u64,
    /// The highest session id ever handed out.
    pub max_session: u64,
}

/// What this member is now.
#[derive(Clone, Debug)]
pub enum Role {
    /// It leads, from this state (shared: it may hold millions of locks).
    Leader(Arc<LeaderStart>),
    /// It follows (or there is no leader yet): requests go to `leader`, when known.
    Follower { leader: Option<Member> },
}

/// This member does not lead (any more); the leader, if it knows one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLeader {
    pub leader: Option<Member>,
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.leader {
            Some(m) => write!(f, "not the leader; the leader is {m}"),
            None => f.write_str("not the leader, and no leader is known"),
        }
    }
}

impl std::error::Error for NotLeader {}

/// Why a membership change did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// Changes are made by the leader.
    NotLeader(NotLeader),
    /// The member to add did not answer at its consensus address, or is not the node named.
    Unreachable { id: u64, addr: String, reason: String },
    /// The new member did not catch up with the log in [`node::CATCH_UP_TIMEOUT`].
    NotCaughtUp { id: u64 },
    /// openraft refused the change (another change in progress, say).
    Refused(String),
    /// The member is shutting down.
    Stopped,
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::NotLeader(e) => e.fmt(f),
            MembershipError::Unreachable { id, addr, reason } => {
                write!(f, "member {id} at {addr} cannot be added: {reason}")
            }
            MembershipError::NotCaughtUp { id } => {
                write!(f, "member {id} did not catch up with the log in time")
            }
            MembershipError::Refused(reason) => write!(f, "the membership change was refused: {reason}"),
            MembershipError::Stopped => f.write_str("this member is shutting down"),
        }
    }
}

impl std::error::Error for MembershipError {}

/// `GET /cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// `null` while there is none.
    pub leader_id: Option<u64>,
    pub term: u64,
    /// The highest log index this member knows committed and has applied (0: none).
    pub commit_index: u64,
    /// Every member of the current membership, by id.
    pub members: Vec<MemberStatus>,
}

/// One member in [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    /// `leader`, `follower` (a voter) or `learner` (catching up, does not vote).
    pub role: &'static str,
    /// Entries it lacks of the leader's log; known on the leader only (`null` elsewhere).
    pub behind: Option<u64>,
}

/// How to run a member.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This member's id.
    pub node_id: u64,
    /// The consensus address of every member, this one included (it binds its own).
    pub peers: BTreeMap<u64, String>,
    /// This member's client address, told to the others (followers forward to the leader's).
    pub api_addr: String,
    /// The shared secret members present to each other.
    pub secret: Secret,
    /// The data directory; the consensus keeps its files in `raft/` inside it.
    pub data_dir: PathBuf,
    /// Never bootstrap: this member waits to be added ([`Handle::add_member`]).
    pub join: bool,
    /// The clock (ms) `Lead` entries are stamped with: the clock the cores' deadlines use.
    pub clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// [`SNAPSHOT_EVERY_ENTRIES`] unless a test wants snapshots sooner.
    pub snapshot_every: u64,
    /// TLS between members (`None`: plaintext): the consensus port serves with the server
    /// config, and calls others with the peer config; the configs in force at each new
    /// connection (a reload sends new ones).
    pub tls: Option<PeerTls>,
}

/// The TLS configs members speak to each other with, as a reload leaves them.
pub type PeerTls = tokio::sync::watch::Receiver<crate::tls::TlsConfigs>;

/// A connection between members: a socket, or TLS over one.
pub(crate) trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> Duplex for T {}

impl ClusterConfig {
    /// A member that bootstraps when it may, with the default snapshot policy.
    pub fn new(
        node_id: u64,
        peers: BTreeMap<u64, String>,
        api_addr: String,
        secret: Secret,
        data_dir: PathBuf,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> ClusterConfig {
        ClusterConfig {
            node_id,
            peers,
            api_addr,
            secret,
            data_dir,
            join: false,
            clock,
            snapshot_every: SNAPSHOT_EVERY_ENTRIES,
            tls: None,
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("peers", &self.peers)
            .field("api_addr", &self.api_addr)
            .field("data_dir", &self.data_dir)
            .field("join", &self.join)
            .field("snapshot_every", &self.snapshot_every)
            .finish_non_exhaustive()
    }
}
