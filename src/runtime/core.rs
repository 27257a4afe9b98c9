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
use std::rc::Rc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use tokio::sync::Notify;

use crate::api::{self, LockService, Reply, Request};
use crate::metrics::Histogram;
use crate::route::Router;
use crate::shard::{ADVANCE_BUDGET, Caps, Restored, Shard, Ticket, TokenSeries};
use crate::store::record::Record;
use crate::store::recovery::RecoveredLock;

use super::clock::{Clock, DateCache};
use super::journal::Journal;
use super::mailbox::{Delivery, Mailbox, Registry};
use super::mesh::{Batch, Mesh, Msg};
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
}

/// What a durable core starts from.
pub struct Durable {
    /// The locks it held.
    pub locks: Vec<RecoveredLock>,
    /// Bytes of its newest snapshot.
    pub snapshot_bytes: u64,
}

impl Core {
    /// Builds the core; a durable one gets its recovered locks back, each lease running from
    /// now for what was left of it, and the journal marks the start of this run.
    pub(super) fn new(s: CoreSetup) -> Core {
        let clock = Clock::new(s.epoch);
        let mut shard = Shard::new(s.router.hasher().clone(), s.tokens).with_caps(s.caps);
        let journal = s.store.map(|store| {
            let now = clock.tick();
            shard.start_journal();
            shard.journal_record(&Record::Run { at: now });
            for lock in &store.locks {
                shard.restore(Restored {
                    resource: &lock.resource,
                    owner: &lock.owner,
                    token: lock.token,
                    deadline: lock.remaining.map(|ms| now + ms),
                    session: lock.session,
                    watch: None,
                });
            }
            Journal::new(store.snapshot_bytes)
        });
        Core {
            id: s.id,
            shard: RefCell::new(shard),
            router: s.router,
            mesh: s.mesh,
            journal,
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
        let now = self.clock.now();
        let mut reply =
            api::apply(&mut self.shard.borrow_mut(), req, ticket, ticket::session_of(ticket), now);
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
        if let Some(deadline) = self.shard.borrow().next_deadline()
            && deadline < self.timer.armed.get()
        {
            self.timer.armed.set(deadline);
            self.timer.wake.notify_one();
        }
    }

    /// Takes an answer to its ticket's connection: here, or through the mesh to its core.
    fn deliver(&self, ticket: Ticket, reply: Reply) {
        let (conn, slot) = match ticket::address(ticket) {
            Address::Nobody { .. } => return,
            Address::Conn { core, .. } if core != self.id => {
                let msg = Msg::Reply { ticket, reply };
                return match (&self.journal, self.answers_wait_for()) {
                    // The answer leaves this core only once what it says is durable.
                    (Some(j), batch) if batch > j.durable() => j.hold(batch, core, msg),
                    _ => self.mesh.post(core, msg),
                };
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
        if let Some(mailbox) = self.conns.get(conn) {
            let after = self.answers_wait_for();
            mailbox.post(match slot {
                Slot::Request(slot) => Delivery::Reply { slot, reply, after },
                Slot::Session => Delivery::Push { news: reply, after },
            });
        }
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
                more
            };
            if more {
                // A burst of expiries: let connections be served between budgets.
                tokio::task::yield_now().await;
                continue;
            }
            let next = self.shard.borrow().next_deadline();
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
}
