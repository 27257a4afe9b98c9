//! One core's state and its work: owns the core's shard, its connections, its outboxes and its
//! clock; serves requests for the resources it owns, forwards the others, and delivers every
//! reply to the connection waiting for it, wherever the reply was made. Everything here is
//! `Rc`/`RefCell`, built on the core's own thread and never shared.
//!
//! # Tickets
//! A request in flight is addressed by a [`Ticket`]: its core, its connection and the slot the
//! connection keeps for it. The shard that serves the request hands the ticket back with the
//! reply (at once, or later for a wait), and [`Core::deliver`] takes it home.
//!
//! # Connections that close while waiting
//! When a connection closes with a waiting acquire, the wait is withdrawn and the ticket noted
//! as an orphan. If the lock was granted before the withdrawal arrived (the grant is already on
//! its way back: each pair of cores is a FIFO), the grant reaches the orphan and is released at
//! once, so no lock stays held by a client that is gone.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use hashbrown::HashMap;
use tokio::sync::Notify;

use crate::api::{self, Reply, Request};
use crate::auth::Secret;
use crate::config::Limits;
use crate::metrics::Histogram;
use crate::net::conn::Conn;
use crate::route::{ResourceHasher, shard_for};
use crate::shard::{ADVANCE_BUDGET, Shard, Ticket, TokenSeries};

use super::mesh::{Batch, Mesh, Msg};

/// Connection id that stands for "nobody": replies to its tickets are dropped.
const NOBODY: u32 = 0;
/// Bits of a ticket for the connection's slot; slots are per-connection request numbers and
/// stay below the in-flight limit.
const SLOT_BITS: u32 = 24;
/// Bits of a ticket for the connection id (the top 8 name the core).
const CONN_BITS: u32 = 32;
/// The slot that stands for a connection itself, where news about its session locks goes
/// (never a request's slot: those stay below the in-flight limit).
pub const SESSION_SLOT: usize = (1 << SLOT_BITS) - 1;

/// Core, connection and slot of a ticket.
fn split(ticket: Ticket) -> (usize, u32, usize) {
    let core = (ticket.0 >> (SLOT_BITS + CONN_BITS)) as usize;
    let conn = (ticket.0 >> SLOT_BITS) as u32;
    (core, conn, (ticket.0 & ((1 << SLOT_BITS) - 1)) as usize)
}

/// The session ticket of the connection that `ticket` belongs to.
fn session_of(ticket: Ticket) -> Ticket {
    Ticket(ticket.0 | SESSION_SLOT as u64)
}

/// What a core keeps of a waiting acquire whose connection has closed.
struct Orphan {
    resource: Box<str>,
    owner: Box<str>,
}

/// Everything one core owns. See the module documentation.
pub struct Core {
    pub id: usize,
    cores: usize,
    hasher: ResourceHasher,
    pub secret: Secret,
    pub limits: Limits,
    epoch: Instant,
    shard: RefCell<Shard>,
    mesh: Mesh,
    conns: RefCell<HashMap<u32, Rc<Conn>>>,
    next_conn: Cell<u32>,
    /// Replies and events made while serving, delivered at the next [`Core::flush`], once no
    /// connection is borrowed.
    deliveries: RefCell<VecDeque<(Ticket, Reply)>>,
    orphans: RefCell<HashMap<Ticket, Orphan>>,
    /// Wakes the timer task when a deadline earlier than the one it sleeps for appears.
    timer: Notify,
    /// The tick the timer task sleeps until (`u64::MAX`: no deadline).
    armed: Cell<u64>,
    date: DateCache,
    /// See [`Core::now`].
    clock: Cell<u64>,
    /// Set by [`Msg::Shutdown`]; `stop` wakes everything that waits, to stop.
    pub stopping: Cell<bool>,
    pub stop: Notify,
    /// Wakes [`Core::drain`] when a connection closes.
    conns_changed: Notify,
    /// Service times of the requests this core's connections sent.
    pub service_times: Histogram,
}

/// Parameters of one core.
pub struct CoreSetup {
    pub id: usize,
    pub cores: usize,
    pub hasher: ResourceHasher,
    pub secret: Secret,
    pub limits: Limits,
    pub epoch: Instant,
    pub token_seed: u64,
    pub mesh: Mesh,
}

impl Core {
    pub fn new(s: CoreSetup) -> Core {
        Core {
            id: s.id,
            cores: s.cores,
            shard: RefCell::new(Shard::new(
                s.hasher.clone(),
                TokenSeries::for_shard(s.token_seed, s.id, s.cores),
            )),
            hasher: s.hasher,
            secret: s.secret,
            limits: s.limits,
            epoch: s.epoch,
            mesh: s.mesh,
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(NOBODY),
            deliveries: RefCell::new(VecDeque::new()),
            orphans: RefCell::new(HashMap::new()),
            timer: Notify::new(),
            armed: Cell::new(u64::MAX),
            date: DateCache::default(),
            clock: Cell::new(0),
            stopping: Cell::new(false),
            stop: Notify::new(),
            conns_changed: Notify::new(),
            service_times: Histogram::default(),
        }
    }

    /// The clock, in ms since the server started (the shards' clock; the same epoch on every
    /// core), as read by the last [`Core::tick`].
    pub fn now(&self) -> u64 {
        self.clock.get()
    }

    /// Reads the clock; call at the start of each batch of work (a read, an inbox batch, a
    /// timer turn, a connection's end). One reading serves the whole batch: every request in
    /// it arrived before the reading, so a lease computed from it (rounded up, see
    /// [`crate::shard`]) still never ends before the request's arrival plus its length.
    pub fn tick(&self) -> u64 {
        let now = (self.epoch.elapsed().as_millis() as u64).max(self.clock.get());
        self.clock.set(now);
        now
    }

    /// The current `Date` header value.
    pub fn date(&self) -> [u8; 29] {
        self.date.get()
    }

    /// Registers a new connection (`protected`: see [`Conn::new`]).
    pub fn add_conn(&self, protected: bool) -> Rc<Conn> {
        let mut id = self.next_conn.get().wrapping_add(1);
        let conns = self.conns.borrow();
        while id == NOBODY || conns.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        drop(conns);
        self.next_conn.set(id);
        let conn = Rc::new(Conn::new(id, protected));
        self.conns.borrow_mut().insert(id, conn.clone());
        conn
    }

    /// Forgets a connection; replies still on their way to it become orphans' or are dropped.
    pub fn remove_conn(&self, id: u32) {
        self.conns.borrow_mut().remove(&id);
        self.conns_changed.notify_waiters();
    }

    /// Waits until every connection has closed, or `timeout` has passed; returns how many
    /// are still open.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.conns_changed.notified();
            let open = self.conn_count();
            if open == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return open;
            }
        }
    }

    /// Cores of the server.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Connections open on this core.
    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// The ticket for slot `slot` of connection `conn` of this core.
    pub fn ticket(&self, conn: u32, slot: usize) -> Ticket {
        debug_assert!(slot < 1 << SLOT_BITS);
        Ticket(((self.id as u64) << (SLOT_BITS + CONN_BITS)) | (u64::from(conn) << SLOT_BITS) | slot as u64)
    }

    fn owner_of(&self, resource: &str) -> usize {
        if self.cores == 1 {
            // One shard owns everything: no need to hash the name to route it.
            return 0;
        }
        shard_for(self.hasher.hash(resource), self.cores)
    }

    /// Serves `req` (not a list) for `ticket`: on this core's shard if it owns the resource,
    /// else by sending it to the owner. `Some` is the answer now; `None`: it comes later,
    /// through [`Conn::on_reply`].
    pub fn submit<S: AsRef<str>>(&self, ticket: Ticket, req: &Request<S>) -> Option<Reply> {
        let owner = req.resource().map_or(self.id, |r| self.owner_of(r));
        if owner == self.id {
            return self.apply(ticket, req);
        }
        self.mesh.post(owner, Msg::Request { ticket, req: req.to_owned() });
        None
    }

    /// Serves a request for every core (a list, stats): this core's share now, and how many
    /// shares will follow for `ticket`.
    pub fn submit_all<S: AsRef<str>>(&self, ticket: Ticket, req: &Request<S>) -> (Option<Reply>, usize) {
        for core in (0..self.cores).filter(|&c| c != self.id) {
            self.mesh.post(core, Msg::Request { ticket, req: req.to_owned() });
        }
        (self.apply(ticket, req), self.cores - 1)
    }

    /// Withdraws the waiting acquire `ticket` (its connection closed). If it was granted
    /// meanwhile, the grant is released when it arrives.
    pub fn cancel_wait(&self, ticket: Ticket, resource: &str, owner: &str) {
        self.orphan(ticket, resource, owner);
        let core = self.owner_of(resource);
        if core != self.id {
            self.mesh.post(core, Msg::Cancel { ticket, resource: resource.into() });
        } else if self.shard.borrow_mut().cancel_wait(resource, ticket, self.now()) {
            self.orphans.borrow_mut().remove(&ticket);
        }
    }

    /// Notes that the request `ticket` (an acquire of `resource` by `owner`) has lost its
    /// connection: if it is granted after all, the grant is released when it arrives.
    pub fn orphan(&self, ticket: Ticket, resource: &str, owner: &str) {
        self.orphans.borrow_mut().insert(ticket, Orphan { resource: resource.into(), owner: owner.into() });
    }

    /// Releases a lock on behalf of a client that is gone (a session's, or an orphan's grant).
    pub fn release_for_gone(&self, resource: &str, owner: &str, token: u64) {
        let req = Request::Release { resource, owner, token: Some(token) };
        self.submit(self.ticket(NOBODY, 0), &req);
    }

    /// Serves `req` on this core's shard, collecting the events it caused.
    fn apply<S: AsRef<str>>(&self, ticket: Ticket, req: &Request<S>) -> Option<Reply> {
        let mut reply = api::apply(&mut self.shard.borrow_mut(), req, ticket, session_of(ticket), self.now());
        self.collect_events();
        if let Some(Reply::Stats(stats)) = &mut reply {
            stats.core = self.id;
            stats.connections = self.conn_count();
            stats.latency = self.service_times.snapshot();
        }
        reply
    }

    /// Moves the shard's events to the deliveries.
    fn collect_events(&self) {
        let mut shard = self.shard.borrow_mut();
        let mut deliveries = self.deliveries.borrow_mut();
        deliveries.extend(shard.drain_events().map(|e| (e.ticket, Reply::from(e.kind))));
    }

    /// Delivers everything made since the last flush, sends the outboxes, and makes sure the
    /// timer task will wake for the shard's earliest deadline. Call with no connection borrowed.
    pub fn flush(&self) {
        loop {
            let next = self.deliveries.borrow_mut().pop_front();
            match next {
                Some((ticket, reply)) => self.deliver(ticket, reply),
                None => break,
            }
        }
        self.mesh.flush();
        if let Some(deadline) = self.shard.borrow().next_deadline()
            && deadline < self.armed.get()
        {
            self.armed.set(deadline);
            self.timer.notify_one();
        }
    }

    /// Takes a reply to its ticket's connection: here, or through the mesh to its core.
    fn deliver(&self, ticket: Ticket, reply: Reply) {
        let (core, conn_id, slot) = split(ticket);
        if core != self.id {
            if conn_id != NOBODY {
                self.mesh.post(core, Msg::Reply { ticket, reply });
            }
            return;
        }
        // An orphan's reply goes nowhere, even while its connection is still closing: the
        // client gave the request up, so a grant it would never hear of is released.
        let orphan = self.orphans.borrow_mut().remove(&ticket);
        if let Some(o) = orphan {
            if let Reply::Granted { token } = reply {
                self.release_for_gone(&o.resource, &o.owner, token);
            }
            return;
        }
        let conn = self.conns.borrow().get(&conn_id).cloned();
        if let Some(conn) = conn {
            conn.on_reply(self, slot, reply);
        }
    }

    /// Serves a batch from the mesh (call [`Core::tick`] before, [`Core::flush`] after).
    pub fn serve_batch(&self, batch: Batch) {
        for msg in batch {
            match msg {
                Msg::Request { ticket, req } => {
                    if let Some(reply) = self.apply(ticket, &req) {
                        self.deliveries.borrow_mut().push_back((ticket, reply));
                    }
                }
                Msg::Reply { ticket, reply } => self.deliveries.borrow_mut().push_back((ticket, reply)),
                Msg::Cancel { ticket, resource } => {
                    if self.shard.borrow_mut().cancel_wait(&resource, ticket, self.now()) {
                        self.mesh.post(split(ticket).0, Msg::Cancelled { ticket });
                    }
                    self.collect_events();
                }
                Msg::Cancelled { ticket } => {
                    self.orphans.borrow_mut().remove(&ticket);
                }
                Msg::Shutdown => {
                    self.stopping.set(true);
                    self.stop.notify_waiters();
                }
            }
        }
    }

    /// Keeps the `Date` header current: refreshes it just after each second turns.
    pub async fn run_date(self: Rc<Self>) {
        loop {
            self.date.refresh();
            let into =
                SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            tokio::time::sleep(Duration::from_nanos(1_000_000_000 - u64::from(into) + 1_000)).await;
        }
    }

    /// The timer task: ends leases and waits on time. Sleeps until the shard's next deadline,
    /// or until [`Core::flush`] finds an earlier one.
    pub async fn run_timers(self: Rc<Self>) {
        loop {
            // Awake: nobody needs to wake us until we sleep again.
            self.armed.set(0);
            let more = self.shard.borrow_mut().advance(self.tick(), ADVANCE_BUDGET);
            self.collect_events();
            self.flush();
            if more {
                // A burst of expiries: let connections be served between budgets.
                tokio::task::yield_now().await;
                continue;
            }
            let next = self.shard.borrow().next_deadline();
            self.armed.set(next.unwrap_or(u64::MAX));
            match next {
                Some(at) => {
                    let when = tokio::time::Instant::from_std(self.epoch + Duration::from_millis(at));
                    tokio::select! {
                        _ = tokio::time::sleep_until(when) => {}
                        _ = self.timer.notified() => {}
                    }
                }
                None => self.timer.notified().await,
            }
        }
    }
}

/// A core of its own, for tests that drive a session without sockets.
#[cfg(test)]
pub fn lone_core(secret: &str) -> Core {
    let (senders, _) = super::mesh::channels(1);
    Core::new(CoreSetup {
        id: 0,
        cores: 1,
        hasher: ResourceHasher::new(),
        secret: Secret::new(secret),
        limits: Limits::default(),
        epoch: Instant::now(),
        token_seed: 0,
        mesh: Mesh::new(senders),
    })
}

/// The `Date` header value, formatted once a second by [`Core::run_date`] so that answering
/// costs no clock reading.
struct DateCache(Cell<[u8; 29]>);

impl Default for DateCache {
    fn default() -> Self {
        let cache = DateCache(Cell::new([b' '; 29]));
        cache.refresh();
        cache
    }
}

impl DateCache {
    fn get(&self) -> [u8; 29] {
        self.0.get()
    }

    fn refresh(&self) {
        let mut value = [0u8; 29];
        value.copy_from_slice(&httpdate::fmt_http_date(SystemTime::now()).as_bytes()[..29]);
        self.0.set(value);
    }
}
