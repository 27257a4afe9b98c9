//! One core's lock service: its shard, the requests it serves for the resources it owns, the
//! ones it forwards to their owners over the mesh, and the delivery of every answer to the
//! mailbox of the connection waiting for it, wherever the answer was made. Everything here is
//! `Rc`/`RefCell`, built on the core's own thread and never shared.
//!
//! # Turns
//! All work happens in turns: a [`Turn`] (for a connection's batch of requests) or an inner
//! turn (an inbox batch, a timer sweep) reads the clock once when it begins and, when it ends,
//! delivers what the turn made, sends the mesh's outboxes and re-arms the timer task. The guard
//! makes the pairing a matter of types rather than of care; delivering only pushes into
//! mailboxes, so it can never re-enter a connection.
//!
//! # Connections that close while waiting
//! When a connection closes with a waiting acquire, the wait is withdrawn and the ticket noted
//! as an orphan. If the lock was granted before the withdrawal arrived (the grant is already on
//! its way back: each pair of cores is a FIFO), the grant reaches the orphan and is released at
//! once, so no lock stays held by a client that is gone.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use tokio::sync::{Notify, watch};

use crate::api::{self, CONNECTION_SESSION, ClusterOp, LockService, NO_SESSION, Reply, Request};
use crate::cluster::{Handle, LeaderStart, Role};
use crate::log::Level;
use crate::metrics::Histogram;
use crate::route::Router;
use crate::shard::{ADVANCE_BUDGET, Caps, Restored, Shard, Ticket, TokenSeries};
use crate::store::record::Record;
use crate::store::recovery::RecoveredLock;

use super::clock::{Clock, DateCache};
use super::journal::Journal;
use super::mailbox::{Delivery, Mailbox, Registry};
use super::mesh::{Batch, Mesh, Msg};
use super::sessions::{Attached, Sessions};
use super::ticket::{self, Address, ConnId, Slot};

/// What a core keeps of an acquire whose connection has closed.
struct Orphan {
    resource: Box<str>,
    owner: Box<str>,
}

/// Everything one core owns. See the module documentation.
pub struct Core {
    id: usize,
    router: Router,
    pub(super) shard: RefCell<Shard>,
    pub(super) mesh: Mesh,
    /// The core's log (`None`: the server keeps its locks in memory only).
    pub(super) journal: Option<Journal>,
    /// The resumable sessions this core is home to.
    pub(super) sessions: RefCell<Sessions>,
    conns: Registry,
    /// The journal's length when the current turn began: records beyond it are the turn's.
    turn_start: Cell<usize>,
    /// Answers and events made during the current turn, delivered when it ends.
    deliveries: RefCell<VecDeque<(Ticket, Reply)>>,
    orphans: RefCell<HashMap<Ticket, Orphan>>,
    pub(super) clock: Clock,
    date: DateCache,
    timer: TimerArm,
    stop: Stop,
    /// Service times of the requests this core's connections sent.
    service_times: Histogram,
    /// Requests this core's connections refused for a missing or wrong secret.
    auth_failures: Cell<u64>,
    /// The cluster's consensus (`None`: a single server) and this core's part in it.
    cluster: Option<Handle>,
    mode: Cell<Mode>,
    /// Wakes connections that follow the leader: the core's part changed.
    mode_changed: Notify,
    /// Membership changes asked of this core, for its admin task to make.
    changes: RefCell<VecDeque<(Ticket, ClusterOp)>>,
    changes_wake: Notify,
}

/// When the timer task must wake.
struct TimerArm {
    /// Wakes the timer task when a deadline earlier than the one it sleeps for appears.
    wake: Notify,
    /// The tick the timer task sleeps until (`u64::MAX`: no deadline; 0: it is awake).
    armed: Cell<u64>,
}

/// Whether the server is shutting down.
struct Stop {
    stopping: Cell<bool>,
    /// Wakes everything that waits, to stop.
    notify: Notify,
}

/// Parameters of one core.
pub(super) struct CoreSetup {
    pub id: usize,
    pub router: Router,
    pub epoch: Instant,
    pub tokens: TokenSeries,
    /// This core's share of the server's limits.
    pub caps: Caps,
    pub mesh: Mesh,
    /// What the core recovered, if the server keeps a log.
    pub store: Option<Durable>,
    /// The cluster, if this server is a member of one.
    pub cluster: Option<Handle>,
}

/// What a core does with the requests it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// It serves them: a single server, or a cluster's leader under this leadership.
    Locks,
    /// A cluster member that does not lead: connections go to the leader at this address.
    ForwardTo(SocketAddr),
    /// A cluster member with no leader to go to (an election is under way).
    NoLeader,
}

/// A core's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Single,
    /// It leads, under the leadership of this term.
    Leader {
        term: u64,
    },
    Follower {
        leader: Option<SocketAddr>,
    },
}

/// What a durable core starts from.
pub struct Durable {
    /// The locks it held.
    pub locks: Vec<RecoveredLock>,
    /// The resumable sessions it is home to, `(id, timeout ms)`.
    pub sessions: Vec<(u64, u64)>,
    /// The highest session id any core's log has seen.
    pub max_session: u64,
    /// Bytes of its newest snapshot.
    pub snapshot_bytes: u64,
}

impl Core {
    /// Builds the core; a durable one gets its recovered locks back, each lease running from
    /// now for what was left of it, and the journal marks the start of this run.
    pub(super) fn new(s: CoreSetup) -> Core {
        let clock = Clock::new(s.epoch);
        let cores = s.router.cores();
        let mut shard = Shard::new(s.router.hasher().clone(), s.tokens).with_caps(s.caps);
        let mut sessions = Sessions::new(s.id, cores, s.store.as_ref().map_or(0, |d| d.max_session));
        // A cluster member's changes go to the cluster's log: it journals from the start (and
        // serves only once it leads, from the state the cluster hands it).
        if s.cluster.is_some() {
            shard.start_journal();
        }
        let clustered = s.cluster.is_some().then(|| Journal::new(0));
        let journal = s
            .store
            .map(|store| {
                let now = clock.tick();
                shard.start_journal();
                shard.journal_record(&Record::Run { at: now });
                for lock in &store.locks {
                    // A resumable session's lock tells the session's home when its lease ends.
                    let watch = (lock.session != 0)
                        .then(|| ticket::for_session(Sessions::home(lock.session, cores), lock.session));
                    shard.restore(Restored {
                        resource: &lock.resource,
                        owner: &lock.owner,
                        token: lock.token,
                        deadline: lock.remaining.map(|ms| now + ms),
                        session: lock.session,
                        watch,
                    });
                }
                for &(id, timeout_ms) in &store.sessions {
                    sessions.restore(id, timeout_ms, now);
                }
                Journal::new(store.snapshot_bytes)
            })
            .or(clustered);
        Core {
            id: s.id,
            shard: RefCell::new(shard),
            router: s.router,
            mesh: s.mesh,
            journal,
            sessions: RefCell::new(sessions),
            conns: Registry::default(),
            turn_start: Cell::new(0),
            deliveries: RefCell::new(VecDeque::new()),
            orphans: RefCell::new(HashMap::new()),
            clock,
            date: DateCache::default(),
            timer: TimerArm { wake: Notify::new(), armed: Cell::new(u64::MAX) },
            stop: Stop { stopping: Cell::new(false), notify: Notify::new() },
            service_times: Histogram::default(),
            auth_failures: Cell::new(0),
            mode: Cell::new(if s.cluster.is_some() { Mode::Follower { leader: None } } else { Mode::Single }),
            cluster: s.cluster,
            mode_changed: Notify::new(),
            changes: RefCell::new(VecDeque::new()),
            changes_wake: Notify::new(),
        }
    }

    /// This core's number.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Cores of the server.
    pub fn cores(&self) -> usize {
        self.router.cores()
    }

    /// Begins a turn of work for connection `conn`: the clock is read now, and what the turn
    /// made is delivered when the guard drops.
    pub fn turn(&self, conn: ConnId) -> Turn<'_> {
        Turn { work: Work::begin(self), conn }
    }

    /// Registers a new connection: its id, and the mailbox its answers will come to.
    pub fn open_conn(&self) -> (ConnId, Rc<Mailbox>) {
        self.conns.open()
    }

    /// Forgets a connection; answers still on their way to it become orphans' or are dropped.
    pub fn close_conn(&self, id: ConnId) {
        self.conns.close(id);
    }

    /// Connections open on this core.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Waits until every connection has closed, or `timeout` has passed; returns how many
    /// are still open.
    pub async fn drained(&self, timeout: Duration) -> usize {
        self.conns.drained(timeout).await
    }

    /// The current `Date` header value.
    pub fn date(&self) -> [u8; 29] {
        self.date.get()
    }

    /// Service times of the requests this core's connections sent.
    pub fn service_times(&self) -> &Histogram {
        &self.service_times
    }

    /// The log batch that the answers of the current turn must wait for before they may be
    /// sent: the batch that will carry the records the turn made, or 0 if it made none.
    pub fn answers_wait_for(&self) -> u64 {
        match &self.journal {
            Some(j) if self.shard.borrow().journal_len() > self.turn_start.get() => j.gathering(),
            _ => 0,
        }
    }

    /// Every log batch up to this one is durable.
    pub fn durable(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::durable)
    }

    /// Waits until more of the log is durable (never, without a log).
    pub async fn durable_advanced(&self) {
        match &self.journal {
            Some(j) => j.advanced().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the core refuses state changes because its log cannot be written.
    fn refusing(&self) -> bool {
        self.journal.as_ref().is_some_and(Journal::failing)
    }

    /// The count of requests this core's connections refused for their secret.
    pub fn auth_failures(&self) -> &Cell<u64> {
        &self.auth_failures
    }

    /// What the core does with requests now.
    pub fn serving(&self) -> Serving {
        match self.mode.get() {
            Mode::Single | Mode::Leader { .. } => Serving::Locks,
            Mode::Follower { leader: Some(addr) } => Serving::ForwardTo(addr),
            Mode::Follower { leader: None } => Serving::NoLeader,
        }
    }

    /// The leadership a cluster leader's batches are decided under (`None`: it does not lead).
    pub(super) fn leading(&self) -> Option<u64> {
        match self.mode.get() {
            Mode::Leader { term } => Some(term),
            _ => None,
        }
    }

    /// Follows this member's role in the cluster, for as long as the core lives.
    pub(super) async fn follow_roles(self: Rc<Self>, mut roles: watch::Receiver<Role>) {
        loop {
            let role = roles.borrow_and_update().clone();
            match role {
                Role::Leader(start) => self.lead(&start),
                Role::Follower { leader } => {
                    let addr = leader.and_then(|m| m.api_addr.to_socket_addrs().ok()?.next());
                    self.follow(addr);
                }
            }
            if roles.changed().await.is_err() {
                // The consensus stopped: serve nothing more.
                self.follow(None);
                return;
            }
        }
    }

    /// Starts leading from the cluster's state: this core's share of its locks and sessions,
    /// with tokens above every token ever handed out.
    fn lead(&self, start: &LeaderStart) {
        let work = Work::begin(self);
        let cores = self.cores();
        let tokens = TokenSeries::for_shard(start.next_token.saturating_sub(1), self.id, cores);
        let caps = self.shard.borrow().caps();
        let mut shard = Shard::new(self.router.hasher().clone(), tokens).with_caps(caps);
        shard.start_journal();
        for lock in start.locks.iter().filter(|l| self.router.owner(&l.resource) == self.id) {
            let watch = (lock.session != 0 && lock.session != CONNECTION_SESSION)
                .then(|| ticket::for_session(Sessions::home(lock.session, cores), lock.session));
            shard.restore(Restored {
                resource: &lock.resource,
                owner: &lock.owner,
                token: lock.token,
                deadline: lock.deadline,
                session: lock.session,
                watch,
            });
        }
        let mut sessions = Sessions::new(self.id, cores, start.max_session);
        for &(id, timeout_ms) in start.sessions.iter().filter(|(id, _)| Sessions::home(*id, cores) == self.id)
        {
            sessions.restore(id, timeout_ms, work.now);
        }
        *self.shard.borrow_mut() = shard;
        *self.sessions.borrow_mut() = sessions;
        self.orphans.borrow_mut().clear();
        self.mode.set(Mode::Leader { term: start.term });
        self.mode_changed.notify_waiters();
        crate::log!(
            Level::Info,
            [core = self.id, term = start.term],
            "core {}: leading (term {})",
            self.id,
            start.term
        );
    }

    /// Stops leading (or never started): what the core held was the leader's, and what it had
    /// not yet committed may never be. Its connections are closed, unanswered (their clients
    /// retry), and new ones go to `leader`.
    pub(super) fn follow(&self, leader: Option<SocketAddr>) {
        let was = self.mode.replace(Mode::Follower { leader });
        if was == self.mode.get() {
            return;
        }
        self.mode_changed.notify_waiters();
        let caps = self.shard.borrow().caps();
        let mut shard = Shard::new(self.router.hasher().clone(), TokenSeries::after(0)).with_caps(caps);
        shard.start_journal();
        *self.shard.borrow_mut() = shard;
        *self.sessions.borrow_mut() = Sessions::new(self.id, self.cores(), 0);
        self.orphans.borrow_mut().clear();
        self.deliveries.borrow_mut().clear();
        if let Some(journal) = &self.journal {
            journal.drop_held();
        }
        if matches!(was, Mode::Leader { .. }) {
            self.conns.close_all();
            crate::log!(Level::Info, [core = self.id], "core {}: not leading any more", self.id);
        }
    }

    /// Whether the server is a cluster's member.
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Resolves once the core's part in the cluster changes (it leads, follows another
    /// leader, or knows none) after this call.
    pub fn serving_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.mode_changed.notified()
    }

    /// Serves an operator's request about the cluster for `ticket`.
    fn cluster(&self, ticket: Ticket, op: ClusterOp) -> Option<Reply> {
        let Some(handle) = &self.cluster else { return Some(Reply::Cluster(None)) };
        if op == ClusterOp::Status {
            return Some(Reply::Cluster(Some(Box::new(handle.status()))));
        }
        self.changes.borrow_mut().push_back((ticket, op));
        self.changes_wake.notify_one();
        None
    }

    /// The admin task: makes the membership changes asked of this core, each on a task of its
    /// own (one takes as long as a new member needs to catch up), and answers each when done.
    pub(super) async fn run_changes(self: Rc<Self>, handle: Handle) {
        loop {
            let next = self.changes.borrow_mut().pop_front();
            let Some((ticket, op)) = next else {
                self.changes_wake.notified().await;
                continue;
            };
            let (core, handle) = (self.clone(), handle.clone());
            super::panic::spawn_vital(self.id, "a membership change", async move {
                let done = match op {
                    ClusterOp::AddMember { id, addr } => handle.add_member(id, addr).await,
                    ClusterOp::RemoveMember { id } => handle.remove_member(id).await,
                    ClusterOp::Status => Ok(()),
                };
                let _work = Work::begin(&core);
                core.deliveries.borrow_mut().push_back((ticket, Reply::Membership(done)));
            });
        }
    }

    /// Whether the server is shutting down.
    pub fn stopping(&self) -> bool {
        self.stop.stopping.get()
    }

    /// Waits until the server shuts down (at once if it is).
    pub async fn stopped(&self) {
        let notified = self.stop.notify.notified();
        if !self.stopping() {
            notified.await;
        }
    }

    /// Serves `req` for `ticket`: on this core's shard if it owns the resource, else by
    /// sending it to the owner (`None`: the answer comes later).
    fn submit<S: AsRef<str>>(&self, ticket: Ticket, req: &Request<S>) -> Option<Reply> {
        let owner = req.resource().map_or(self.id, |r| self.router.owner(r));
        if owner == self.id {
            return self.apply(ticket, req);
        }
        self.mesh.post(owner, Msg::Request { ticket, req: req.to_owned() });
        None
    }

    fn submit_all<S: AsRef<str>>(&self, ticket: Ticket, req: &Request<S>) -> (Option<Reply>, usize) {
        for core in (0..self.cores()).filter(|&c| c != self.id) {
            self.mesh.post(core, Msg::Request { ticket, req: req.to_owned() });
        }
        (self.apply(ticket, req), self.cores() - 1)
    }

    fn withdraw(&self, ticket: Ticket, resource: &str, owner: &str) {
        self.abandon(ticket, resource, owner);
        let core = self.router.owner(resource);
        if core != self.id {
            self.mesh.post(core, Msg::Cancel { ticket, resource: resource.into() });
        } else {
            let still_waiting = self.shard.borrow_mut().cancel_wait(resource, ticket, self.clock.now());
            self.collect_events();
            if still_waiting {
                self.orphans.borrow_mut().remove(&ticket);
            }
        }
    }

    fn abandon(&self, ticket: Ticket, resource: &str, owner: &str) {
        self.orphans.borrow_mut().insert(ticket, Orphan { resource: resource.into(), owner: owner.into() });
    }

    /// Attaches the connection of `ticket` to resumable session `session` (0: a new one), at
    /// the session's home (here, or through the mesh).
    fn attach(&self, ticket: Ticket, session: u64, timeout_ms: u64) -> Option<Reply> {
        if matches!(self.mode.get(), Mode::Follower { .. }) {
            // A member that does not lead has no sessions: a new one here would tell a client
            // resuming its session that the session is gone (and wait for a log it cannot
            // commit). "No leader": the client tries again, here or at another member.
            return Some(Reply::NoLeader);
        }
        let home = if session == 0 { self.id } else { Sessions::home(session, self.cores()) };
        if home != self.id {
            self.mesh.post(home, Msg::Attach { ticket, session, timeout_ms });
            return None;
        }
        let conn = ticket::session_of(ticket);
        Some(match self.sessions.borrow_mut().attach(session, timeout_ms, conn) {
            Attached::Resumed { timeout_ms } => Reply::Attached { session, timeout_ms, resumed: true },
            Attached::New { id } => {
                // Logged before its answer goes: a lock taken in the session after that is
                // the session's across a crash too.
                self.shard.borrow_mut().journal_record(&Record::SessionOpen { id, timeout_ms });
                Reply::Attached { session: id, timeout_ms, resumed: false }
            }
            Attached::Exhausted => Reply::Unavailable,
        })
    }

    /// The connection whose session ticket is `conn` left resumable session `session`.
    fn detach(&self, session: u64, conn: Ticket) {
        let home = Sessions::home(session, self.cores());
        if home == self.id {
            self.sessions.borrow_mut().detach(session, conn, self.clock.now());
        } else {
            self.mesh.post(home, Msg::Detach { session, conn });
        }
    }

    /// Ends the sessions whose timeout ran out with no connection: logged here, then every
    /// core releases their locks.
    fn end_sessions(&self, now: u64) {
        let ended = self.sessions.borrow_mut().ended(now);
        for id in ended {
            self.shard.borrow_mut().journal_record(&Record::SessionEnd { id });
            for core in (0..self.cores()).filter(|&c| c != self.id) {
                self.mesh.post(core, Msg::EndSession { id });
            }
            self.end_session_here(id);
        }
    }

    fn end_session_here(&self, id: u64) {
        self.shard.borrow_mut().end_session(id, self.clock.now());
        self.collect_events();
    }

    fn release_for_gone(&self, resource: &str, owner: &str, token: u64) {
        let req = Request::Release { resource, owner, token: Some(token) };
        self.submit(ticket::nobody(self.id), &req);
    }

    /// Serves `req` on this core's shard, collecting the events it caused.
    fn apply<S: AsRef<str>>(&self, ticket: Ticket, req: &Request<S>) -> Option<Reply> {
        if req.changes_state() && self.refusing() {
            // Nothing may be granted (or freed) that the log cannot keep.
            return Some(Reply::Unavailable);
        }
        match self.mode.get() {
            // A member that does not lead has no locks to answer from.
            Mode::Follower { .. } if !matches!(req, Request::Stats) => return Some(Reply::NoLeader),
            // A leader answers an inspection only once the cluster has confirmed it still
            // leads: a record of no effect makes the answer wait for its batch to commit.
            Mode::Leader { .. } if matches!(req, Request::Inspect { .. } | Request::List { .. }) => {
                let mut shard = self.shard.borrow_mut();
                let next = shard.next_token();
                shard.journal_record(&Record::Tokens { next });
            }
            _ => {}
        }
        let now = self.clock.now();
        // Where news of a session lock's lease goes: its connection, or its session's home.
        let watcher = match req {
            Request::Acquire { session, .. } if *session != CONNECTION_SESSION && *session != NO_SESSION => {
                ticket::for_session(Sessions::home(*session, self.cores()), *session)
            }
            _ => ticket::session_of(ticket),
        };
        let mut reply = api::apply(&mut self.shard.borrow_mut(), req, ticket, watcher, now);
        self.collect_events();
        if let Some(Reply::Stats(stats)) = &mut reply {
            stats.core = self.id;
            stats.connections = self.conns.len();
            stats.latency = self.service_times.snapshot();
            stats.log = self.journal.as_ref().map(Journal::stats);
            stats.auth_failures = self.auth_failures.get();
        }
        reply
    }

    /// Moves the shard's events to the deliveries.
    fn collect_events(&self) {
        let mut shard = self.shard.borrow_mut();
        let mut deliveries = self.deliveries.borrow_mut();
        deliveries.extend(shard.drain_events().map(|e| (e.ticket, Reply::from(e.kind))));
    }

    /// Ends a turn: delivers everything it made, sends the outboxes, and makes sure the timer
    /// task will wake for the shard's earliest deadline.
    fn flush(&self) {
        loop {
            let next = self.deliveries.borrow_mut().pop_front();
            match next {
                Some((ticket, reply)) => self.deliver(ticket, reply),
                None => break,
            }
        }
        self.mesh.flush();
        if let Some(journal) = &self.journal
            && self.shard.borrow().journal_pending()
        {
            journal.poke();
        }
        if let Some(deadline) = self.next_deadline()
            && deadline < self.timer.armed.get()
        {
            self.timer.armed.set(deadline);
            self.timer.wake.notify_one();
        }
    }

    /// Takes an answer to its ticket's connection: here, or through the mesh to its core.
    fn deliver(&self, ticket: Ticket, reply: Reply) {
        let address = ticket::address(ticket);
        if address.core() != self.id {
            let (core, msg) = (address.core(), Msg::Reply { ticket, reply });
            return match (&self.journal, self.answers_wait_for()) {
                _ if matches!(address, Address::Nobody { .. }) => {}
                // The answer leaves this core only once what it says is durable.
                (Some(j), batch) if batch > j.durable() => j.hold(batch, core, msg),
                _ => self.mesh.post(core, msg),
            };
        }
        let (conn, slot) = match address {
            Address::Nobody { .. } => return,
            Address::Session { id, .. } => {
                // News of a session's lock: to the connection it has now, if any.
                let attached = self.sessions.borrow().attached(id);
                if let Some(conn) = attached {
                    self.deliver(conn, reply);
                }
                return;
            }
            Address::Conn { conn, slot, .. } => (conn, slot),
        };
        // An orphan's answer goes nowhere, even while its connection is still closing: the
        // client gave the request up, so a grant it would never hear of is released.
        let orphan = self.orphans.borrow_mut().remove(&ticket);
        if let Some(o) = orphan {
            if let Reply::Granted { token } = reply {
                self.release_for_gone(&o.resource, &o.owner, token);
            }
            return;
        }
        match self.conns.get(conn) {
            Some(mailbox) => {
                let after = self.answers_wait_for();
                mailbox.post(match slot {
                    Slot::Request(slot) => Delivery::Reply { slot, reply, after },
                    Slot::Session => Delivery::Push { news: reply, after },
                });
            }
            // The connection went while its session was being attached: the session is left
            // detached, to end in its time unless the client comes back.
            None => {
                if let Reply::Attached { session, .. } = reply {
                    self.detach(session, ticket::session_of(ticket));
                }
            }
        }
    }

    /// The tick by which the timer task must next run: the shard's next lease or wait end, or
    /// the next detached session's end.
    fn next_deadline(&self) -> Option<u64> {
        let shard = self.shard.borrow().next_deadline();
        let sessions = self.sessions.borrow().next_deadline();
        shard.into_iter().chain(sessions).min()
    }

    /// Serves batches from the mesh, in one turn.
    pub(super) fn serve_batches(&self, batches: impl Iterator<Item = Batch>) {
        let _work = Work::begin(self);
        for msg in batches.flatten() {
            match msg {
                Msg::Request { ticket, req } => {
                    if let Some(reply) = self.apply(ticket, &req) {
                        self.deliveries.borrow_mut().push_back((ticket, reply));
                    }
                }
                Msg::Reply { ticket, reply } => self.deliveries.borrow_mut().push_back((ticket, reply)),
                Msg::Cancel { ticket, resource } => {
                    if self.shard.borrow_mut().cancel_wait(&resource, ticket, self.clock.now()) {
                        self.mesh.post(ticket::address(ticket).core(), Msg::Cancelled { ticket });
                    }
                    self.collect_events();
                }
                Msg::Cancelled { ticket } => {
                    self.orphans.borrow_mut().remove(&ticket);
                }
                Msg::Attach { ticket, session, timeout_ms } => {
                    if let Some(reply) = self.attach(ticket, session, timeout_ms) {
                        self.deliveries.borrow_mut().push_back((ticket, reply));
                    }
                }
                Msg::Detach { session, conn } => self.detach(session, conn),
                Msg::EndSession { id } => self.end_session_here(id),
                Msg::Shutdown => {
                    self.stop.stopping.set(true);
                    self.stop.notify.notify_waiters();
                }
            }
        }
    }

    /// Keeps the `Date` header current: refreshes it just after each second turns.
    pub(super) async fn run_date(self: Rc<Self>) {
        loop {
            self.date.refresh();
            tokio::time::sleep(DateCache::until_next_second()).await;
        }
    }

    /// The timer task: ends leases and waits on time. Sleeps until the shard's next deadline,
    /// or until a turn finds an earlier one.
    pub(super) async fn run_timers(self: Rc<Self>) {
        loop {
            // Awake: nobody needs to wake us until we sleep again.
            self.timer.armed.set(0);
            let more = {
                let work = Work::begin(self.as_ref());
                let more = self.shard.borrow_mut().advance(work.now, ADVANCE_BUDGET);
                self.collect_events();
                self.end_sessions(work.now);
                more
            };
            if more {
                // A burst of expiries: let connections be served between budgets.
                tokio::task::yield_now().await;
                continue;
            }
            let next = self.next_deadline();
            self.timer.armed.set(next.unwrap_or(u64::MAX));
            match next {
                Some(at) => {
                    let when = tokio::time::Instant::from_std(self.clock.instant(at));
                    tokio::select! {
                        _ = tokio::time::sleep_until(when) => {}
                        _ = self.timer.wake.notified() => {}
                    }
                }
                None => self.timer.wake.notified().await,
            }
        }
    }
}

/// A turn of work: the clock read at its start, and a flush at its end.
struct Work<'a> {
    core: &'a Core,
    now: u64,
}

impl<'a> Work<'a> {
    fn begin(core: &'a Core) -> Work<'a> {
        core.turn_start.set(core.shard.borrow().journal_len());
        Work { core, now: core.clock.tick() }
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        self.core.flush();
    }
}

/// A connection's turn of work with its core: what its protocol session may ask (see
/// [`LockService`]), with the clock read once when it began. Ending it (dropping the guard)
/// delivers what it made to every connection concerned.
pub struct Turn<'a> {
    work: Work<'a>,
    conn: ConnId,
}

impl Turn<'_> {
    fn ticket(&self, slot: usize) -> Ticket {
        ticket::ticket(self.work.core.id, self.conn, Slot::Request(slot))
    }
}

impl LockService for Turn<'_> {
    fn submit<S: AsRef<str>>(&mut self, slot: usize, req: &Request<S>) -> Option<Reply> {
        self.work.core.submit(self.ticket(slot), req)
    }

    fn submit_all<S: AsRef<str>>(&mut self, slot: usize, req: &Request<S>) -> (Option<Reply>, usize) {
        self.work.core.submit_all(self.ticket(slot), req)
    }

    fn withdraw(&mut self, slot: usize, resource: &str, owner: &str) {
        self.work.core.withdraw(self.ticket(slot), resource, owner)
    }

    fn abandon(&mut self, slot: usize, resource: &str, owner: &str) {
        self.work.core.abandon(self.ticket(slot), resource, owner)
    }

    fn release_for_gone(&mut self, resource: &str, owner: &str, token: u64) {
        self.work.core.release_for_gone(resource, owner, token)
    }

    fn attach(&mut self, slot: usize, session: u64, timeout_ms: u64) -> Option<Reply> {
        self.work.core.attach(self.ticket(slot), session, timeout_ms)
    }

    fn detach(&mut self, session: u64) {
        let conn = ticket::session_of(self.ticket(0));
        self.work.core.detach(session, conn)
    }

    fn cluster(&mut self, slot: usize, op: ClusterOp) -> Option<Reply> {
        self.work.core.cluster(self.ticket(slot), op)
    }
}
