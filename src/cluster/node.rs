//! A running member: the consensus thread (its own tokio runtime, with openraft, the consensus
//! port, bootstrap, the leader's start and the queue of submissions) and the [`Handle`] the
//! server's cores hold.
//!
//! The handle's methods work from any thread and any runtime: a submission is queued on a
//! channel at once (so batches keep the order they were submitted in), and everything else runs
//! as a task on the consensus runtime, awaited through its join handle.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::runtime::Handle as Runtime;
use tokio::sync::{mpsc, oneshot, watch};

use super::listener::{self, Identity};
use super::machine::Machine;
use super::network::{self, Network};
use super::{
    Batch, ClusterConfig, ClusterStatus, ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS,
    ENTRIES_KEPT_AFTER_SNAPSHOT, HEARTBEAT_MS, LEAD_GRACE_MS, Member, MemberStatus, MembershipError,
    NotLeader, PeerTls, QUORUM_LOST_MS, Role, TypeConfig, logstore, machine,
};
use crate::auth::Secret;
use crate::log::Level;
use crate::store::record::{self, Record};

/// Entries one append call carries at most: each is a core's batch (tens of KB under load), so
/// a call stays a few MB, well inside [`super::wire::MAX_FRAME_BYTES`] and one RPC timeout.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Snapshot chunks, in bytes: a chunk is one RPC, sent within
/// [`INSTALL_SNAPSHOT_TIMEOUT_MS`].
const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// How long one snapshot chunk may take to send and install (the last one installs the whole
/// state: decoding a million locks and a durable write).
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;
/// How long [`Handle::add_member`] waits for the new member to catch up with the log before
/// it gives up (it stays a learner then; adding it again goes on from there).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often bootstrap asks the peers again while some do not answer.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(200);

/// A running member.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    raft: Raft<TypeConfig>,
    rt: Runtime,
    roles: watch::Receiver<Role>,
    shared: Arc<Shared>,
    submits: mpsc::UnboundedSender<Submit>,
    machine: Machine,
    secret: Secret,
    tls: Option<PeerTls>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle gone: the consensus thread stops (not waited for; see shutdown).
        if let Some(stop) = self.stop.lock().expect("stop lock").take() {
            let _ = stop.send(());
        }
    }
}

/// What the tasks on the consensus thread share with the handle.
struct Shared {
    /// The term whose `Lead` this member committed and announced, while it leads (0: it does
    /// not). Submissions of any other term are refused at once.
    accepting: AtomicU64,
}

struct Submit {
    batch: Batch,
    done: oneshot::Sender<Result<(), NotLeader>>,
}

/// Starts a member: opens `DATA_DIR/raft/`, binds the consensus address `peers[node_id]`, and
/// runs the consensus on a thread of its own. Fails if the address cannot be bound or the
/// directory cannot be read (damage is named with the file and the offset).
pub fn start(config: ClusterConfig) -> io::Result<Handle> {
    let Some(addr) = config.peers.get(&config.node_id).cloned() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--peers names no address for this member (id {})", config.node_id),
        ));
    };
    let bound = std::net::TcpListener::bind(&addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind the consensus address {addr}: {e}")))?;
    bound.set_nonblocking(true)?;
    let raft_dir = config.data_dir.join("raft");
    let opened = logstore::open(&raft_dir).map_err(io::Error::other)?;
    let machine = machine::open(&raft_dir).map_err(io::Error::other)?;
    let me = Arc::new(Identity {
        id: config.node_id,
        member: Member {
            raft_addr: addr,
            api_addr: config.api_addr.clone(),
            incarnation: opened.incarnation,
        },
        secret: config.secret.clone(),
        tls: config.tls.clone(),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread =
        std::thread::Builder::new().name(format!("ringlock-raft-{}", config.node_id)).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(run(config, bound, opened, machine, me, ready_tx));
            // The runtime ends here, and every task with it: connections close, the port is
            // released.
        })?;
    let mut inner = match ready_rx.recv() {
        Ok(Ok(inner)) => inner,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(io::Error::other("the consensus thread ended before it started")),
    };
    inner.thread = Mutex::new(Some(thread));
    Ok(Handle { inner: Arc::new(inner) })
}

fn raft_config(snapshot_every: u64) -> io::Result<openraft::Config> {
    openraft::Config {
        cluster_name: "ringlock".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        // A follower further behind than what the log keeps gets a snapshot.
        replication_lag_threshold: snapshot_every + ENTRIES_KEPT_AFTER_SNAPSHOT,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        max_in_snapshot_log_to_keep: ENTRIES_KEPT_AFTER_SNAPSHOT.min(snapshot_every),
        ..Default::default()
    }
    .validate()
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

async fn run(
    config: ClusterConfig,
    bound: std::net::TcpListener,
    opened: logstore::Opened,
    machine: Machine,
    me: Arc<Identity>,
    ready: std::sync::mpsc::SyncSender<io::Result<Inner>>,
) {
    let pristine = opened.pristine && machine.is_empty().await;
    let started = async {
        let listener = tokio::net::TcpListener::from_std(bound)?;
        let raft_config = Arc::new(raft_config(config.snapshot_every)?);
        let network = Network { me: me.id, secret: me.secret.clone(), tls: me.tls.clone() };
        let raft = Raft::new(me.id, raft_config, network, opened.store, machine.clone())
            .await
            .map_err(io::Error::other)?;
        Ok::<_, io::Error>((listener, raft))
    };
    let (listener, raft) = match started.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (roles_tx, roles_rx) = watch::channel(Role::Follower { leader: None });
    let shared = Arc::new(Shared { accepting: AtomicU64::new(0) });
    let (submit_tx, submit_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let tasks = [
        tokio::spawn(listener::serve(listener, raft.clone(), me.clone())),
        tokio::spawn(lead(
            raft.clone(),
            machine.clone(),
            shared.clone(),
            roles_tx,
            config.clock.clone(),
            me.id,
        )),
        tokio::spawn(submissions(raft.clone(), shared.clone(), submit_rx, me.id)),
        tokio::spawn(bootstrap(raft.clone(), config.clone(), me.clone(), pristine)),
    ];
    let inner = Inner {
        node_id: me.id,
        raft: raft.clone(),
        rt: Runtime::current(),
        roles: roles_rx,
        shared,
        submits: submit_tx,
        machine,
        secret: me.secret.clone(),
        tls: me.tls.clone(),
        stop: Mutex::new(Some(stop_tx)),
        thread: Mutex::new(None),
    };
    if ready.send(Ok(inner)).is_err() {
        return;
    }
    // A stop, or the last handle dropped.
    let _ = stop_rx.await;
    for task in tasks {
        task.abort();
    }
    if let Err(e) = raft.shutdown().await {
        crate::log!(Level::Warn, "the consensus did not stop cleanly: {e}");
    }
}

/// The leader that `metrics` names, if it is not this member.
fn leader_of(m: &RaftMetrics<u64, Member>, me: u64) -> Option<Member> {
    let id = m.current_leader.filter(|&id| id != me)?;
    m.membership_config.membership().get_node(&id).cloned()
}

/// Whether `m` shows this member leading in `term`.
fn leads(m: &RaftMetrics<u64, Member>, me: u64, term: u64) -> bool {
    m.state == ServerState::Leader && m.current_leader == Some(me) && m.current_term == term
}

/// Announces roles. On becoming leader of a term: refuses submissions, commits that term's
/// `Lead`, reads the state after it, and only then announces [`Role::Leader`] and accepts the
/// term's submissions.
async fn lead(
    raft: Raft<TypeConfig>,
    machine: Machine,
    shared: Arc<Shared>,
    roles: watch::Sender<Role>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    me: u64,
) {
    let mut metrics = raft.metrics();
    // The term announced as leader (0: none), and the leader last announced to followers.
    let mut led = 0;
    let mut follows: Option<Option<Member>> = None;
    loop {
        let m = metrics.borrow_and_update().clone();
        let term = m.current_term;
        if m.state == ServerState::Leader && m.current_leader == Some(me) {
            if led == term && m.millis_since_quorum_ack.is_none_or(|ms| ms > QUORUM_LOST_MS) {
                // Cut off from a majority: nothing can commit, so serving would only hang.
                // Serve nothing until a new `Lead` of this term commits (the majority is back;
                // every batch proposed before it is then applied) or another member leads.
                crate::log!(Level::Warn, [term = term], "this member leads but hears from no majority");
                shared.accepting.store(0, Ordering::SeqCst);
                roles.send_replace(Role::Follower { leader: None });
                follows = Some(None);
                led = 0;
            }
            if led != term {
                shared.accepting.store(0, Ordering::SeqCst);
                if led != 0 || follows.as_ref().is_some_and(Option::is_some) {
                    roles.send_replace(Role::Follower { leader: None });
                    follows = Some(None);
                }
                led = 0;
                let at = clock();
                let mut records = Vec::new();
                record::encode(&mut records, &Record::Lead { at, grace_ms: LEAD_GRACE_MS });
                let write = raft.client_write(Batch { term, at, records });
                let mut watching = raft.metrics();
                let deposed = watching.wait_for(|m| !leads(m, me, term));
                let written = tokio::select! {
                    w = write => w.ok(),
                    _ = deposed => None,
                };
                if written.is_some_and(|w: ClientWriteResponse<TypeConfig>| w.log_id.leader_id.term == term) {
                    let start = machine.leader_start(term).await;
                    if leads(&raft.metrics().borrow(), me, term) {
                        crate::log!(
                            Level::Info,
                            [term = term, locks = start.locks.len() as u64],
                            "this member leads the cluster"
                        );
                        led = term;
                        follows = None;
                        shared.accepting.store(term, Ordering::SeqCst);
                        roles.send_replace(Role::Leader(Arc::new(start)));
                    }
                }
                // Whatever happened, look at the metrics as they are now.
                if led == 0 && !metrics.has_changed().unwrap_or(false) && metrics.changed().await.is_err() {
                    return;
                }
                continue;
            }
        } else {
            shared.accepting.store(0, Ordering::SeqCst);
            led = 0;
            let leader = leader_of(&m, me);
            if follows.as_ref() != Some(&leader) {
                roles.send_replace(Role::Follower { leader: leader.clone() });
                follows = Some(leader);
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Proposes submitted batches in the order they came, each while its term is the one
/// accepted, and answers each once it is applied (or refused).
async fn submissions(
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    mut queue: mpsc::UnboundedReceiver<Submit>,
    me: u64,
) {
    while let Some(Submit { batch, done }) = queue.recv().await {
        let term = batch.term;
        if shared.accepting.load(Ordering::SeqCst) != term {
            let _ = done.send(Err(not_leader(&raft, me)));
            continue;
        }
        let Ok(applied) = raft.client_write_ff(batch).await else {
            let _ = done.send(Err(NotLeader { leader: None }));
            continue;
        };
        let raft = raft.clone();
        tokio::spawn(async move {
            let answer = match applied.await {
                // Applied only if logged in the term it was decided in (the state machine
                // drops it otherwise).
                Ok(Ok(written)) if written.log_id.leader_id.term == term => Ok(()),
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                    Err(NotLeader { leader: f.leader_node.filter(|_| f.leader_id != Some(me)) })
                }
                _ => Err(not_leader(&raft, me)),
            };
            let _ = done.send(answer);
        });
    }
}

fn not_leader(raft: &Raft<TypeConfig>, me: u64) -> NotLeader {
    NotLeader { leader: leader_of(&raft.metrics().borrow(), me) }
}

/// On a pristine directory, the lowest id forms the cluster with every peer once all answer
/// and none belongs to a cluster yet.
async fn bootstrap(raft: Raft<TypeConfig>, config: ClusterConfig, me: Arc<Identity>, pristine: bool) {
    let lowest = config.peers.keys().next() == Some(&me.id);
    if !pristine || config.join || !lowest {
        return;
    }
    loop {
        if raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let mut members = BTreeMap::from([(me.id, me.member.clone())]);
        let mut missing = 0;
        for (&id, addr) in config.peers.iter().filter(|&(&id, _)| id != me.id) {
            match network::describe(addr, id, &me.secret, me.tls.as_ref()).await {
                Ok(d) if d.initialized => {
                    crate::log!(
                        Level::Warn,
                        "not forming a cluster: member {id} ({addr}) already belongs to one; this member waits to be added (ringlock cluster add)"
                    );
                    return;
                }
                Ok(d) => {
                    members.insert(id, d.member);
                }
                Err(_) => missing += 1,
            }
        }
        if missing == 0 {
            match raft.initialize(members).await {
                Ok(()) => {
                    crate::log!(Level::Info, [members = config.peers.len() as u64], "formed the cluster");
                    return;
                }
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return,
                Err(e) => crate::log!(Level::Warn, "could not form the cluster yet: {e}"),
            }
        }
        tokio::time::sleep(BOOTSTRAP_RETRY).await;
    }
}

impl Handle {
    /// This member's id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Proposes one batch, queued now (batches are proposed in the order of the calls).
    /// Resolves once a majority has it and this member has applied it; fails with
    /// [`NotLeader`] if this member does not lead in `batch.term` (any more). A failure is
    /// indeterminate: the batch may still be committed, under the term it was decided in.
    pub fn submit(&self, batch: Batch) -> impl Future<Output = Result<(), NotLeader>> + Send + 'static {
        debug_assert!(
            record::Records::new(&batch.records).all(|r| r.is_ok()),
            "a batch whose records do not parse"
        );
        let (done, answer) = oneshot::channel();
        let refused = if batch.term == 0 || self.inner.shared.accepting.load(Ordering::SeqCst) != batch.term {
            Some(not_leader(&self.inner.raft, self.inner.node_id))
        } else {
            match self.inner.submits.send(Submit { batch, done }) {
                Ok(()) => None,
                Err(_) => Some(NotLeader { leader: None }),
            }
        };
        async move {
            match refused {
                Some(e) => Err(e),
                None => answer.await.unwrap_or(Err(NotLeader { leader: None })),
            }
        }
    }

    /// Role changes: [`Role::Leader`] once this member's `Lead` is committed, with the state
    /// after it; [`Role::Follower`] otherwise.
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.inner.roles.clone()
    }

    /// Where the cluster stands, as this member sees it.
    pub fn status(&self) -> ClusterStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(&id, node)| {
                let role = if m.current_leader == Some(id) {
                    "leader"
                } else if voters.contains(&id) {
                    "follower"
                } else {
                    "learner"
                };
                let behind = m.replication.as_ref().map(|r| match r.get(&id) {
                    Some(Some(matched)) => last.saturating_sub(matched.index),
                    _ if id == m.id => 0,
                    _ => m.last_log_index.map_or(0, |l| l + 1),
                });
                MemberStatus {
                    id,
                    raft_addr: node.raft_addr.clone(),
                    api_addr: node.api_addr.clone(),
                    role,
                    behind,
                }
            })
            .collect();
        ClusterStatus {
            node_id: m.id,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map_or(0, |l| l.index),
            members,
        }
    }

    /// Runs `f` on the consensus runtime, and awaits it from anywhere.
    fn on_consensus<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, MembershipError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, MembershipError>> + Send + 'static {
        let task = self.inner.rt.spawn(f);
        async move { task.await.unwrap_or(Err(MembershipError::Stopped)) }
    }

    /// A linearizable read barrier (ReadIndex): once it returns, this member leads and has
    /// applied everything committed before the call.
    pub async fn ensure_linearizable(&self) -> Result<(), NotLeader> {
        let raft = self.inner.raft.clone();
        let me = self.inner.node_id;
        let read = self.on_consensus(async move {
            raft.ensure_linearizable()
                .await
                .map(|_| ())
                .map_err(|_| MembershipError::NotLeader(not_leader(&raft, me)))
        });
        read.await.map_err(|e| match e {
            MembershipError::NotLeader(e) => e,
            _ => NotLeader { leader: None },
        })
    }

    /// Adds member `id` at `raft_addr`: asks it who it is (its incarnation), removes an older
    /// incarnation of it from the membership if there is one, adds it as a learner, waits for
    /// it to catch up ([`CATCH_UP_TIMEOUT`]), then makes it a voter (joint consensus). Adding a
    /// member that is already a voter, as it is, changes nothing.
    pub async fn add_member(&self, id: u64, raft_addr: String) -> Result<(), MembershipError> {
        let raft = self.inner.raft.clone();
        let secret = self.inner.secret.clone();
        let tls = self.inner.tls.clone();
        let me = self.inner.node_id;
        self.on_consensus(add_member(raft, secret, tls, me, id, raft_addr)).await
    }

    /// Removes member `id` from the membership (joint consensus); a member not in it is no
    /// error.
    pub async fn remove_member(&self, id: u64) -> Result<(), MembershipError> {
        let raft = self.inner.raft.clone();
        let me = self.inner.node_id;
        self.on_consensus(async move {
            let m = raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let change = if membership.voter_ids().any(|v| v == id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else if membership.get_node(&id).is_some() {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            } else {
                return Ok(());
            };
            raft.change_membership(change, false).await.map(|_| ()).map_err(|e| change_error(&raft, me, e))
        })
        .await
    }

    /// Stops the member and waits until it has: the log closed, the directory and the port
    /// released. Other clones of the handle then get [`NotLeader`] (no leader known). Must not
    /// be called on the consensus thread itself.
    pub fn shutdown(self) {
        if let Some(stop) = self.inner.stop.lock().expect("stop lock").take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.inner.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
    }

    /// The state machine's bytes and last applied entry (tests compare members by them).
    #[cfg(test)]
    pub(crate) async fn digest(&self) -> (Option<openraft::LogId<u64>>, Vec<u8>) {
        self.inner.machine.digest().await
    }

    /// openraft's metrics, for tests that wait on them.
    #[cfg(test)]
    pub(crate) fn metrics(&self) -> watch::Receiver<RaftMetrics<u64, Member>> {
        self.inner.raft.metrics()
    }
}

fn change_error(
    raft: &Raft<TypeConfig>,
    me: u64,
    e: RaftError<u64, ClientWriteError<u64, Member>>,
) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            MembershipError::NotLeader(not_leader(raft, me))
        }
        RaftError::Fatal(_) => MembershipError::Stopped,
        other => MembershipError::Refused(other.to_string()),
    }
}

async fn add_member(
    raft: Raft<TypeConfig>,
    secret: Secret,
    tls: Option<PeerTls>,
    me: u64,
    id: u64,
    raft_addr: String,
) -> Result<(), MembershipError> {
    let m = raft.metrics().borrow().clone();
    if !(m.state == ServerState::Leader && m.current_leader == Some(me)) {
        return Err(MembershipError::NotLeader(NotLeader { leader: leader_of(&m, me) }));
    }
    let described = network::describe(&raft_addr, id, &secret, tls.as_ref())
        .await
        .map_err(|e| MembershipError::Unreachable { id, addr: raft_addr.clone(), reason: e.to_string() })?;
    let member = described.member;
    let membership = m.membership_config.membership();
    let voter = membership.voter_ids().any(|v| v == id);
    match membership.get_node(&id) {
        Some(known) if *known == member && voter => return Ok(()),
        Some(known) if *known != member => {
            // Another incarnation (or address) of it: out first, so that nothing counts the
            // old one any more, then in as it is now.
            crate::log!(
                Level::Info,
                "member {id} is now {member}, no longer {known}: removing the old one before adding it"
            );
            let change = if voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            raft.change_membership(change, false).await.map_err(|e| change_error(&raft, me, e))?;
        }
        _ => {}
    }
    raft.add_learner(id, member, false).await.map_err(|e| change_error(&raft, me, e))?;
    let target = raft.metrics().borrow().last_log_index;
    let caught_up = raft
        .wait(Some(CATCH_UP_TIMEOUT))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten());
                m.state != ServerState::Leader || matched.map(|l| l.index) >= target
            },
            "the new member catches up",
        )
        .await;
    match caught_up {
        Ok(m) if m.state != ServerState::Leader => {
            return Err(MembershipError::NotLeader(NotLeader { leader: leader_of(&m, me) }));
        }
        Ok(_) => {}
        Err(_) => return Err(MembershipError::NotCaughtUp { id }),
    }
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map(|_| ())
        .map_err(|e| change_error(&raft, me, e))
}
