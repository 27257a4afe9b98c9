//! One shard of the lock engine: owns the locks whose resource names hash to it (a
//! `table::LockTable`), their lease and wait deadlines (a [`TimerWheel`]) and the shard's
//! fencing-token counter. Synchronous, no I/O, no clock: every operation takes `now`, a
//! monotonic time in milliseconds (ticks), so the rules below are testable to the tick.
//!
//! # Rules
//! - **Leases.** A lease of `ttl` ms granted at tick `now` (some real time in `[now, now+1)`) is
//!   held through tick `now + ttl` and ends at tick `now + ttl + 1`: rounded up to the first
//!   tick boundary that is certainly `ttl` after the grant, so a lease never ends early. A
//!   zero lease ends at once (the grant is reported, then the lock is free). `None`: no expiry.
//! - **Mutual exclusion.** A held lock is never granted again, not even to its own owner (many
//!   clients share a default owner name, so re-entry would let two of them in). Only the holder
//!   (same owner, and same token when one is given) releases or extends.
//! - **Fencing tokens** come from one counter per shard, seeded by the caller (the server seeds
//!   it from the wall clock, so tokens keep rising across restarts, and interleaves its
//!   shards' series, so a token names one grant): every grant, hand-off included, takes the
//!   next value, so a resource's tokens strictly increase.
//! - **Waiting.** A busy acquire may wait (at least as long as it asks, rounded up like a
//!   lease): it queues first come, first served, and when the lock
//!   is released or its lease ends the first waiter still waiting gets it in the same call (no
//!   extra round trip, no herd). A waiter whose deadline is at or before the moment the lock
//!   came free has timed out. Outcomes for waiters, and "lease lost" notices for watchers,
//!   come out as [`Event`]s addressed by the [`Ticket`] the caller gave.
//! - **Limits.** A shard holds at most its share of the server's locks and waiters
//!   ([`Caps`]): past them an acquire of a new name, or one that would wait, is
//!   [`Acquired::Refused`] (a held name whose lease is over may always be taken again).
//! - **Expiry is exact and lazy-safe.** Every operation first settles the lock it touches to
//!   `now` (ending a lease that is due even if its timer has not fired yet); the wheel's timers
//!   only make sure that locks nobody touches are settled too. A timer remembers the lock's
//!   token, so a stale timer can never end a newer holder's lease.
//! - **Forced release.** An operator may free a lock whoever holds it
//!   ([`Shard::force_release`]): it is journaled as a release, a watcher is told the lease is
//!   lost, as when it runs out, and the first waiter gets the lock.
//! - **Times.** The shard counts how long each granted wait waited (queued to granted) and each
//!   hold lasted (granted to released, forced or run out), in [`Durations`]. A lock keeps the
//!   tick of its grant in 32 bits (the lock entry has no more room), so a hold is timed modulo
//!   2^32 ms: one longer than 49.7 days is counted too short by a multiple of 49.7 days. A lock
//!   restored from the log has no grant tick: its hold is not counted.

mod durations;
mod index;
mod table;

pub use durations::{DURATION_BUCKETS_MS, Durations};

use crate::route::ResourceHasher;
use crate::store::record::{CONNECTION_SESSION, Record};
use crate::timer::{TimerId, TimerWheel};
use table::{Lock, LockTable, Slot, Waiter};

use hashbrown::HashMap;
pub use table::INDEX_BUCKET_LOCKS;

/// Most acquires that may wait for one lock at once; more are answered [`Acquired::QueueFull`].
/// Bounds the memory one hot name can pin and the work of one hand-off sweep.
pub const MAX_WAITERS_PER_LOCK: usize = 4096;

/// Timer fires handled per [`Shard::advance`] call by default (see [`Shard::advance`]).
pub const ADVANCE_BUDGET: usize = 1024;

/// Bit set in waiter ids, so that they never equal a lease token (tokens stay below 2^63
/// until the year 2262 when seeded from nanoseconds since 1970).
const WAITER_ID_BIT: u64 = 1 << 63;

/// Opaque address of a request, chosen by the caller; events for it carry it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What a timer remembers: the lock's name hash and the token (lease) or waiter id it is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TimerKey {
    hash: u64,
    id: u64,
}

/// The most one shard may hold: its share of the server's `--max-locks` and `--max-waiters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Held locks (leases that are over but not yet swept included).
    pub locks: usize,
    /// Acquires waiting for a lock, all locks together.
    pub waiters: usize,
}

impl Caps {
    /// No limit (tests, benchmarks).
    pub const NONE: Caps = Caps { locks: usize::MAX, waiters: usize::MAX };

    /// Shard `i`'s share of `total` over `shards` shards: each gets the total divided evenly
    /// (rounded up, at least 1), as names spread evenly over shards.
    pub fn share(total: Caps, shards: usize) -> Caps {
        let part = |n: usize| n.div_ceil(shards.max(1)).max(1);
        Caps { locks: part(total.locks), waiters: part(total.waiters) }
    }
}

/// Which of a shard's [`Caps`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    Locks,
    Waiters,
}

/// Options of an acquire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcquireOpts {
    /// Lease length in ms; `None` holds until released.
    pub ttl: Option<u64>,
    /// How long to wait for a busy lock, in ms; 0 answers at once.
    pub wait: u64,
    /// Where events about this acquire go (its grant after waiting, its lease running out).
    pub ticket: Ticket,
    /// Report the end of this grant's lease (when it runs out, or a forced release ends it,
    /// rather than its holder releasing it) to this ticket as [`EventKind::Lost`]: a session
    /// connection's.
    pub watch: Option<Ticket>,
    /// The session that will hold the lock (0: none), as the journal records it.
    pub session: u64,
}

/// A lock as it comes back from the log (see [`Shard::restore`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored<'a> {
    pub resource: &'a str,
    pub owner: &'a str,
    pub token: u64,
    /// The tick its lease ends at; `None`: no expiry.
    pub deadline: Option<u64>,
    pub session: u64,
    pub watch: Option<Ticket>,
}

/// Result of [`Shard::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired<'a> {
    /// The caller holds the lock now.
    Granted { token: u64 },
    /// Somebody holds it; the caller did not ask to wait.
    Busy { owner: &'a str, token: u64 },
    /// Queued; an [`EventKind::Granted`] or [`EventKind::TimedOut`] for the ticket follows.
    Queued,
    /// Busy, and [`MAX_WAITERS_PER_LOCK`] acquires already wait for it.
    QueueFull,
    /// The shard holds its share of the server's locks (a new name) or waiters (a wait).
    Refused(Cap),
}

/// Result of [`Shard::release`] and [`Shard::extend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// Done; the lease's token.
    Ok { token: u64 },
    /// Nobody holds the lock (never taken, released, or expired).
    NotFound,
    /// Another owner holds it.
    NotHolder,
    /// The owner holds it, but under another token (a newer grant).
    TokenMismatch,
}

/// A lock as [`Shard::inspect`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockInfo<'a> {
    pub owner: &'a str,
    pub token: u64,
    /// Ms until the lease ends (`Some(0)`: ends at the next tick); `None`: no expiry.
    pub expires_in: Option<u64>,
    pub waiters: usize,
}

/// One lock of a [`Shard::list`] answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub resource: String,
    pub owner: String,
    pub token: u64,
    pub expires_in: Option<u64>,
    pub waiters: usize,
}

/// What a shard has done since it started, for metrics. Counts, no names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Locks granted, hand-offs to waiters included.
    pub grants: u64,
    /// Acquires answered "held" (including a full queue).
    pub conflicts: u64,
    pub releases: u64,
    pub extends: u64,
    /// Leases that ran out.
    pub expiries: u64,
    /// Acquires that queued to wait.
    pub waits: u64,
    /// Waits that ran out.
    pub wait_timeouts: u64,
    /// Locks freed by a forced release (whoever held them).
    pub forced_releases: u64,
    /// Locks held now (including leases that are over but not yet swept).
    pub held: u64,
    /// Acquires waiting now.
    pub waiters: u64,
    /// Acquires of a new name refused: the shard held its share of `--max-locks`.
    pub refused_locks: u64,
    /// Acquires that would have waited, refused: the shard held its share of `--max-waiters`.
    pub refused_waiters: u64,
    /// Locks list calls looked at to make their pages (and to build the name index).
    pub list_visited: u64,
    /// The most locks the shard may hold (its share of `--max-locks`).
    pub max_locks: u64,
    /// The most acquires that may wait on the shard (its share of `--max-waiters`).
    pub max_waiters: u64,
    /// How long granted waits waited, from queueing to grant.
    pub wait_times: Durations,
    /// How long holds lasted, from grant to release (forced too) or the lease's end.
    pub hold_times: Durations,
}

/// Something that happened to a request other than the one being answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub ticket: Ticket,
    pub kind: EventKind,
}

/// See [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// A waiter's turn came: it holds the lock under `token`.
    Granted { token: u64 },
    /// A waiter's deadline passed first.
    TimedOut,
    /// The watched lease `token` ran out, or was ended by a forced release.
    Lost { token: u64 },
}

/// The first tick at which `ms` have certainly passed since a moment during tick `now`: when a
/// lease of `ms` granted at `now` ends, and when a wait of `ms` begun at `now` runs out (see the
/// module rules). Zero is `now` itself.
pub fn deadline_after(now: u64, ms: u64) -> u64 {
    if ms == 0 { now } else { now.saturating_add(ms).saturating_add(1) }
}

/// The fencing tokens a shard hands out: `first`, then every `step`-th number after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenSeries {
    pub first: u64,
    pub step: u64,
}

impl TokenSeries {
    /// `seed + 1`, `seed + 2`, ... (one shard alone).
    pub fn after(seed: u64) -> TokenSeries {
        TokenSeries { first: seed + 1, step: 1 }
    }

    /// Shard `shard` of `shards`: `seed + shard + 1`, then every `shards`-th, so that no two
    /// shards of a server ever hand out the same token and a token names one grant.
    pub fn for_shard(seed: u64, shard: usize, shards: usize) -> TokenSeries {
        TokenSeries { first: seed + shard as u64 + 1, step: shards as u64 }
    }
}

/// One shard: see the module documentation.
pub struct Shard {
    table: LockTable,
    timers: Timers,
}

/// Everything of a shard but the table, so that it can be borrowed next to one of its locks.
struct Timers {
    wheel: TimerWheel<TimerKey>,
    /// The next token to hand out, and the step to the one after.
    token: u64,
    token_step: u64,
    /// Last waiter id handed out (without [`WAITER_ID_BIT`]).
    waiter: u64,
    events: Vec<Event>,
    fired: Vec<(u64, TimerKey)>,
    stats: Stats,
    caps: Caps,
    /// Acquires waiting, all locks together.
    waiting: usize,
    /// Every state change, encoded as log records (see [`crate::store::record`]), until the
    /// log takes them; `None`: the shard lives in memory only.
    journal: Option<Vec<u8>>,
    /// The locks each resumable session holds here, by name (see [`Shard::end_session`]).
    sessions: HashMap<u64, Vec<Box<str>>>,
}

impl Shard {
    /// An empty shard handing out `tokens`.
    pub fn new(hasher: ResourceHasher, tokens: TokenSeries) -> Shard {
        Shard {
            table: LockTable::new(hasher),
            timers: Timers {
                wheel: TimerWheel::new(),
                token: tokens.first,
                token_step: tokens.step.max(1),
                waiter: 0,
                events: Vec::new(),
                fired: Vec::new(),
                stats: Stats::default(),
                caps: Caps::NONE,
                waiting: 0,
                journal: None,
                sessions: HashMap::new(),
            },
        }
    }

    /// The shard, holding at most `caps`.
    pub fn with_caps(mut self, caps: Caps) -> Shard {
        self.timers.caps = caps;
        self
    }

    /// What the shard may hold at most.
    pub fn caps(&self) -> Caps {
        self.timers.caps
    }

    /// Index buckets of about `target` locks, to test the name index with few locks.
    #[cfg(test)]
    fn with_bucket_target(mut self, target: usize) -> Shard {
        self.table.set_bucket_target(target);
        self
    }

    /// Takes the lock if it is free (or its lease is over), else reports the holder or queues.
    pub fn acquire(&mut self, resource: &str, owner: &str, opts: AcquireOpts, now: u64) -> Acquired<'_> {
        let hash = self.table.hash(resource);
        let full = self.table.len() >= self.timers.caps.locks;
        let t = &mut self.timers;
        let lock = match self.table.entry(hash, resource) {
            Slot::Held(mut held) => {
                if t.settle(hash, held.get_mut(), now) {
                    let lock = held.into_mut();
                    return t.busy(hash, lock, owner, opts, now);
                }
                // Its lease is over and nobody waits (or it would be held again): the caller
                // takes its place, which adds no lock.
                let lock = held.into_mut();
                *lock = Lock::new(resource, owner, 0);
                lock
            }
            Slot::Free(_) if full => {
                t.stats.refused_locks += 1;
                return Acquired::Refused(Cap::Locks);
            }
            Slot::Free(free) => free.insert(Lock::new(resource, owner, 0)),
        };
        Acquired::Granted { token: t.grant(hash, lock, opts.ttl, opts.watch, opts.session, now) }
    }

    /// Releases the lock if `owner` (and `token`, if given) holds it; the first waiter, if
    /// any, gets it in the same call.
    pub fn release(&mut self, resource: &str, owner: &str, token: Option<u64>, now: u64) -> Changed {
        self.change(resource, Some(owner), token, now, |t, hash, lock| {
            t.stats.releases += 1;
            t.record(&Record::Release { token: lock.token });
            t.end_lease(hash, lock);
            t.vacate(hash, lock, now, now, false)
        })
    }

    /// Renews the holder's lease: it now ends `ttl` ms from `now` (`None`: never). A zero `ttl`
    /// ends it at once, like a release.
    pub fn extend(
        &mut self,
        resource: &str,
        owner: &str,
        token: Option<u64>,
        ttl: Option<u64>,
        now: u64,
    ) -> Changed {
        self.change(resource, Some(owner), token, now, |t, hash, lock| {
            t.stats.extends += 1;
            t.end_lease(hash, lock);
            let deadline = t.start_lease(hash, lock, ttl, now);
            t.record(&Record::Extend { token: lock.token, deadline });
            true
        })
    }

    /// Frees the lock whoever holds it (an operator's forced release), if it is held under
    /// `token` when one is given. Journaled as a release; the lease's watcher, if any, is told
    /// it is lost; the first waiter, if any, gets the lock in the same call.
    pub fn force_release(&mut self, resource: &str, token: Option<u64>, now: u64) -> Changed {
        self.change(resource, None, token, now, |t, hash, lock| {
            t.stats.forced_releases += 1;
            t.record(&Record::Release { token: lock.token });
            if let Some(watcher) = lock.extra.as_mut().and_then(|e| e.watcher.take()) {
                t.events.push(Event { ticket: watcher, kind: EventKind::Lost { token: lock.token } });
            }
            t.end_lease(hash, lock);
            t.vacate(hash, lock, now, now, false)
        })
    }

    /// Holder, token, remaining lease and queue length of a lock, if it is held.
    pub fn inspect(&mut self, resource: &str, now: u64) -> Option<LockInfo<'_>> {
        let hash = self.table.hash(resource);
        let t = &mut self.timers;
        let lock = t.settled(hash, self.table.find(hash, resource)?, now)?;
        Some(t.info(hash, lock, now))
    }

    /// Withdraws a waiting acquire (its client went away). Returns whether it was still
    /// waiting; if not, its grant or timeout has already been reported.
    pub fn cancel_wait(&mut self, resource: &str, ticket: Ticket, now: u64) -> bool {
        let hash = self.table.hash(resource);
        let t = &mut self.timers;
        let Some(lock) = self.table.find(hash, resource).and_then(|found| t.settled(hash, found, now)) else {
            return false;
        };
        let Some(extra) = lock.extra.as_mut() else {
            return false;
        };
        let Some(at) = extra.waiters.iter().position(|w| w.ticket == ticket) else {
            return false;
        };
        let waiter = extra.waiters.remove(at).expect("position is in range");
        t.waiting -= 1;
        t.wheel.cancel(waiter.timer, &TimerKey { hash, id: waiter.id });
        lock.trim_extra();
        true
    }

    /// Up to `limit` held locks whose names start with `prefix` and sort after `after`, in
    /// name order. Costs about the page, not the shard (see `table::INDEX_BUCKET_LOCKS`),
    /// but for the first list of a large shard in a while, which builds its name index.
    pub fn list(&mut self, prefix: &str, after: Option<&str>, limit: usize, now: u64) -> Vec<Listed> {
        let built = self.table.listing();
        let (table, t) = (&self.table, &mut self.timers);
        let wanted = |l: &Lock| {
            l.name().starts_with(prefix)
                && after.is_none_or(|a| l.name() > a)
                && t.current_lease_end(table.hash(l.name()), l).is_none_or(|end| end > now)
        };
        let (found, visited) = table.ordered(prefix, after, limit, wanted);
        t.stats.list_visited += (built + visited) as u64;
        found
            .into_iter()
            .map(|l| {
                let info = t.info(table.hash(l.name()), l, now);
                Listed {
                    resource: l.name().to_owned(),
                    owner: info.owner.to_owned(),
                    token: info.token,
                    expires_in: info.expires_in,
                    waiters: info.waiters,
                }
            })
            .collect()
    }

    /// Handles the timers due by `now`, at most `budget` of them; returns `true` if more are
    /// due (call again soon, after serving other work). Outcomes go to [`Shard::drain_events`].
    pub fn advance(&mut self, now: u64, budget: usize) -> bool {
        let t = &mut self.timers;
        let mut fired = std::mem::take(&mut t.fired);
        let more = t.wheel.advance(now, budget, &mut fired);
        // Lease ends first: a fired timer is gone from the wheel, so until its lock has been
        // told that its lease ended at `when`, settling that lock for a waiter's timer would
        // not see the lease end and would time out waiters who were owed the lock.
        let leases = fired.iter().filter(|(_, k)| k.id & WAITER_ID_BIT == 0);
        let waits = fired.iter().filter(|(_, k)| k.id & WAITER_ID_BIT != 0);
        for &(when, key) in leases.chain(waits) {
            let Some(mut found) = self.table.find_by_timer(key.hash, key.id, key.id & WAITER_ID_BIT != 0)
            else {
                continue;
            };
            let lock = found.get_mut();
            let still_held = if lock.token == key.id && !lock.timer.is_none() {
                lock.timer = TimerId::NONE;
                t.vacate(key.hash, lock, when, now, true) && t.settle(key.hash, lock, now)
            } else {
                t.settle(key.hash, lock, now)
            };
            if !still_held {
                found.remove();
            }
        }
        fired.clear();
        t.fired = fired;
        more
    }

    /// The tick by which [`Shard::advance`] should next be called; `None` if no lease or wait
    /// is pending.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.wheel.next_deadline()
    }

    /// Puts back a lock recovered from the log, as it was: held by `owner` under `token`, its
    /// lease ending at `deadline`. The shard's own tokens must start above every restored
    /// token (see [`TokenSeries`]). Records nothing: the log has it already.
    pub fn restore(&mut self, lock: Restored<'_>) {
        let hash = self.table.hash(lock.resource);
        let t = &mut self.timers;
        if let Slot::Free(free) = self.table.entry(hash, lock.resource) {
            let held = free.insert(Lock::new(lock.resource, lock.owner, lock.token));
            if lock.watch.is_some() || lock.session != 0 {
                let extra = held.extra_mut();
                extra.watcher = lock.watch;
                extra.session = lock.session;
            }
            t.index_session(lock.session, lock.resource);
            if let Some(deadline) = lock.deadline {
                held.timer = t.wheel.insert(deadline, TimerKey { hash, id: lock.token });
            }
        }
    }

    /// Releases every lock resumable session `id` holds here: its timeout ran out with no
    /// connection. Returns how many it held; hand-offs to waiters are [`Shard::drain_events`].
    pub fn end_session(&mut self, id: u64, now: u64) -> usize {
        let names = self.timers.sessions.remove(&id).unwrap_or_default();
        let mut ended = 0;
        for name in names {
            let hash = self.table.hash(&name);
            let t = &mut self.timers;
            let Some(mut found) = self.table.find(hash, &name) else { continue };
            let lock = found.get_mut();
            if !t.settle(hash, lock, now) {
                found.remove();
                continue;
            }
            if lock.extra.as_ref().is_none_or(|e| e.session != id) {
                continue;
            }
            ended += 1;
            t.stats.releases += 1;
            t.record(&Record::Release { token: lock.token });
            t.end_lease(hash, lock);
            if !(t.vacate(hash, lock, now, now, false) && t.settle(hash, lock, now)) {
                found.remove();
            }
        }
        ended
    }

    /// Starts recording every state change as log records, for [`Shard::take_journal`].
    pub fn start_journal(&mut self) {
        self.timers.journal.get_or_insert_with(Vec::new);
    }

    /// Whether state changes wait in the journal.
    pub fn journal_pending(&self) -> bool {
        self.journal_len() > 0
    }

    /// Bytes of records waiting in the journal.
    pub fn journal_len(&self) -> usize {
        self.timers.journal.as_ref().map_or(0, Vec::len)
    }

    /// Swaps the journal's records with `into` (which should be empty): the log takes what
    /// the shard recorded, and the shard records on into the buffer it got back.
    pub fn take_journal(&mut self, into: &mut Vec<u8>) {
        if let Some(journal) = self.timers.journal.as_mut() {
            std::mem::swap(journal, into);
        }
    }

    /// Appends `record` to the journal (a marker such as the start of a run), if there is one.
    pub fn journal_record(&mut self, record: &Record<'_>) {
        self.timers.record(record);
    }

    /// Every held lock as the log's `Grant` record of its current lease (for a snapshot).
    pub fn grants(&self) -> impl Iterator<Item = Record<'_>> {
        let t = &self.timers;
        self.table.iter().map(move |lock| {
            let (resource, owner) = lock.names();
            Record::Grant {
                token: lock.token,
                deadline: t.current_lease_end(self.table.hash(resource), lock),
                session: lock.extra.as_ref().map_or(0, |e| e.session),
                resource,
                owner,
            }
        })
    }

    /// The token the shard hands out next.
    pub fn next_token(&self) -> u64 {
        self.timers.token
    }

    /// Takes the events produced since the last call (grants to waiters, timeouts, lost
    /// leases), in the order they happened.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.timers.events.drain(..)
    }

    /// Locks held (including leases that are over but not yet swept).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// What this shard has done since it started.
    pub fn stats(&self) -> Stats {
        let caps = self.timers.caps;
        Stats {
            held: self.table.len() as u64,
            waiters: self.timers.waiting as u64,
            max_locks: u64::try_from(caps.locks).unwrap_or(u64::MAX),
            max_waiters: u64::try_from(caps.waiters).unwrap_or(u64::MAX),
            ..self.timers.stats
        }
    }

    /// Checks what the shard keeps beside its locks: the name index, and the count of waiters.
    #[cfg(test)]
    fn check(&self) {
        self.table.check_order();
        assert_eq!(self.timers.waiting, self.table.iter().map(Lock::waiter_count).sum::<usize>());
    }

    /// Heap bytes held by the table, its locks and the timer wheel.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.timers.wheel.heap_bytes()
    }

    /// The common frame of release, extend and forced release: settle, check the holder (if
    /// `owner` names one), apply `op`, and remove the lock if `op` (and any zero lease that
    /// follows) left it free.
    fn change(
        &mut self,
        resource: &str,
        owner: Option<&str>,
        token: Option<u64>,
        now: u64,
        op: impl FnOnce(&mut Timers, u64, &mut Lock) -> bool,
    ) -> Changed {
        let hash = self.table.hash(resource);
        let t = &mut self.timers;
        let Some(mut found) = self.table.find(hash, resource) else {
            return Changed::NotFound;
        };
        let lock = found.get_mut();
        if !t.settle(hash, lock, now) {
            found.remove();
            return Changed::NotFound;
        }
        if owner.is_some_and(|o| !lock.held_by(o)) {
            return Changed::NotHolder;
        }
        if token.is_some_and(|tk| tk != lock.token) {
            return Changed::TokenMismatch;
        }
        let held_token = lock.token;
        if !(op(t, hash, lock) && t.settle(hash, lock, now)) {
            found.remove();
        }
        Changed::Ok { token: held_token }
    }
}

impl Timers {
    fn next_token(&mut self) -> u64 {
        let token = self.token;
        self.token += self.token_step;
        token
    }

    /// Notes that resumable session `session` holds the lock `name` (nothing for no session, or
    /// a connection's: those go with their connection).
    fn index_session(&mut self, session: u64, name: &str) {
        if session != 0 && session != CONNECTION_SESSION {
            self.sessions.entry(session).or_default().push(name.into());
        }
    }

    /// Forgets that resumable session `session` holds `name`.
    fn unindex_session(&mut self, session: u64, name: &str) {
        if let hashbrown::hash_map::Entry::Occupied(mut names) = self.sessions.entry(session) {
            if let Some(at) = names.get().iter().position(|n| &**n == name) {
                names.get_mut().swap_remove(at);
            }
            if names.get().is_empty() {
                names.remove();
            }
        }
    }

    /// Appends `record` to the journal, if there is one.
    fn record(&mut self, record: &Record<'_>) {
        if let Some(journal) = self.journal.as_mut() {
            crate::store::record::encode(journal, record);
        }
    }

    /// Makes `lock` (fresh or just vacated) the caller's, with a new token.
    fn grant(
        &mut self,
        hash: u64,
        lock: &mut Lock,
        ttl: Option<u64>,
        watcher: Option<Ticket>,
        session: u64,
        now: u64,
    ) -> u64 {
        lock.token = self.next_token();
        lock.granted = table::grant_tick(now);
        self.stats.grants += 1;
        if watcher.is_some() || session != 0 {
            let extra = lock.extra_mut();
            extra.watcher = watcher;
            extra.session = session;
        }
        let deadline = self.start_lease(hash, lock, ttl, now);
        // Only a journal and a resumable session read the names (a shard in memory only would
        // decode them for nothing).
        if self.journal.is_some() {
            let (resource, owner) = lock.names();
            self.record(&Record::Grant { token: lock.token, deadline, session, resource, owner });
        }
        if session != 0 && session != CONNECTION_SESSION {
            self.index_session(session, lock.name());
        }
        lock.token
    }

    /// The answer to an acquire of a lock that is held after settling.
    fn busy<'a>(
        &mut self,
        hash: u64,
        lock: &'a mut Lock,
        owner: &str,
        opts: AcquireOpts,
        now: u64,
    ) -> Acquired<'a> {
        if opts.wait == 0 {
            self.stats.conflicts += 1;
            return Acquired::Busy { owner: lock.owner(), token: lock.token };
        }
        if lock.waiter_count() >= MAX_WAITERS_PER_LOCK {
            self.stats.conflicts += 1;
            return Acquired::QueueFull;
        }
        if self.waiting >= self.caps.waiters {
            self.stats.refused_waiters += 1;
            return Acquired::Refused(Cap::Waiters);
        }
        self.stats.waits += 1;
        self.waiting += 1;
        self.waiter += 1;
        let id = WAITER_ID_BIT | self.waiter;
        let deadline = deadline_after(now, opts.wait);
        let timer = self.wheel.insert(deadline, TimerKey { hash, id });
        lock.extra_mut().waiters.push_back(Waiter {
            id,
            ticket: opts.ticket,
            owner: owner.into(),
            ttl: opts.ttl,
            deadline,
            timer,
            watch: opts.watch,
            session: opts.session,
            queued: now,
        });
        Acquired::Queued
    }

    /// Starts the lease of `ttl` ms from `now`; returns the tick it ends at.
    fn start_lease(&mut self, hash: u64, lock: &mut Lock, ttl: Option<u64>, now: u64) -> Option<u64> {
        let deadline = ttl.map(|ttl| deadline_after(now, ttl));
        lock.timer = match deadline {
            Some(at) => self.wheel.insert(at, TimerKey { hash, id: lock.token }),
            None => TimerId::NONE,
        };
        deadline
    }

    fn end_lease(&mut self, hash: u64, lock: &mut Lock) {
        self.wheel.cancel(lock.timer, &TimerKey { hash, id: lock.token });
        lock.timer = TimerId::NONE;
    }

    /// When the current lease ends, if it has an end.
    fn current_lease_end(&self, hash: u64, lock: &Lock) -> Option<u64> {
        self.wheel.deadline(lock.timer, &TimerKey { hash, id: lock.token })
    }

    fn info<'a>(&self, hash: u64, lock: &'a Lock, now: u64) -> LockInfo<'a> {
        LockInfo {
            owner: lock.owner(),
            token: lock.token,
            expires_in: self.current_lease_end(hash, lock).map(|end| end.saturating_sub(now + 1)),
            waiters: lock.waiter_count(),
        }
    }

    /// Settles a found lock, removing it if nobody holds it any more.
    fn settled<'a>(&mut self, hash: u64, mut found: table::Found<'a>, now: u64) -> Option<&'a mut Lock> {
        if self.settle(hash, found.get_mut(), now) {
            Some(found.into_mut())
        } else {
            found.remove();
            None
        }
    }

    /// Brings `lock` up to `now`: ends leases that are due (handing the lock on), and times
    /// out waiters whose deadline has come. Returns whether the lock is still held.
    fn settle(&mut self, hash: u64, lock: &mut Lock, now: u64) -> bool {
        while let Some(end) = self.current_lease_end(hash, lock).filter(|&end| end <= now) {
            self.end_lease(hash, lock);
            if !self.vacate(hash, lock, end, now, true) {
                return false;
            }
        }
        self.time_out_waiters(hash, lock, now);
        true
    }

    /// The holder is gone (released at `free_at`, or its lease ended then): count how long it
    /// held the lock, tell its watcher if the lease ran out, time out the waiters who gave up
    /// by `free_at`, and hand the lock to the first one left, at `now`. Returns whether the
    /// lock is held again.
    fn vacate(&mut self, hash: u64, lock: &mut Lock, free_at: u64, now: u64, expired: bool) -> bool {
        if let Some(ms) = table::held_for(lock.granted, free_at) {
            self.stats.hold_times.record(ms);
        }
        if expired {
            self.stats.expiries += 1;
            self.record(&Record::Expire { token: lock.token });
        }
        let Some(extra) = lock.extra.as_mut() else {
            return false;
        };
        let session = std::mem::take(&mut extra.session);
        if session != 0 {
            self.unindex_session(session, lock.name());
        }
        let Some(extra) = lock.extra.as_mut() else {
            return false;
        };
        if let Some(watcher) = extra.watcher.take()
            && expired
        {
            self.events.push(Event { ticket: watcher, kind: EventKind::Lost { token: lock.token } });
        }
        self.time_out_waiters(hash, lock, free_at);
        let Some(next) = lock.extra.as_mut().and_then(|e| e.waiters.pop_front()) else {
            lock.trim_extra();
            return false;
        };
        self.waiting -= 1;
        self.wheel.cancel(next.timer, &TimerKey { hash, id: next.id });
        self.stats.wait_times.record(now.saturating_sub(next.queued));
        lock.set_owner(&next.owner);
        let token = self.grant(hash, lock, next.ttl, next.watch, next.session, now);
        self.events.push(Event { ticket: next.ticket, kind: EventKind::Granted { token } });
        lock.trim_extra();
        true
    }

    fn time_out_waiters(&mut self, hash: u64, lock: &mut Lock, by: u64) {
        let Some(extra) = lock.extra.as_mut() else {
            return;
        };
        let (wheel, events, stats, waiting) =
            (&mut self.wheel, &mut self.events, &mut self.stats, &mut self.waiting);
        extra.waiters.retain(|w| {
            if w.deadline > by {
                return true;
            }
            stats.wait_timeouts += 1;
            *waiting -= 1;
            wheel.cancel(w.timer, &TimerKey { hash, id: w.id });
            events.push(Event { ticket: w.ticket, kind: EventKind::TimedOut });
            false
        });
        lock.trim_extra();
    }
}

#[cfg(test)]
mod tests;
