//! The resumable sessions a core is home to (protocol version 2): which connection each is
//! attached to, and when each detached one ends. A session's home is `id % cores`, so any core
//! finds it from its id alone; ids are never handed out twice (they rise above every id the
//! log has seen). Pure bookkeeping: `now` is passed in, and the core does what the answers say
//! (logging a new session, ending an expired one everywhere).

use std::collections::BTreeSet;

use hashbrown::HashMap;

use crate::shard::Ticket;

/// Session ids stay below this, so that one fits a ticket (see `ticket::for_session`).
pub const MAX_SESSION_ID: u64 = 1 << 55;

struct Entry {
    timeout_ms: u64,
    /// The session ticket of the connection it is attached to.
    attached: Option<Ticket>,
    /// When it ends, if it is detached.
    expires: Option<u64>,
}

/// One core's home sessions.
pub(super) struct Sessions {
    core: u64,
    cores: u64,
    /// The next id is `next * cores + core`.
    next: u64,
    map: HashMap<u64, Entry>,
    /// `(deadline, id)` of the detached sessions.
    expiries: BTreeSet<(u64, u64)>,
}

/// What an attach did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attached {
    /// The session asked for, resumed.
    Resumed { timeout_ms: u64 },
    /// A new session (the one asked for, if any, is not open); log it.
    New { id: u64 },
    /// No id is left below [`MAX_SESSION_ID`].
    Exhausted,
}

impl Sessions {
    /// The sessions of core `core` of `cores`; new ids rise above `max_seen`.
    pub fn new(core: usize, cores: usize, max_seen: u64) -> Sessions {
        let cores = cores.max(1) as u64;
        Sessions {
            core: core as u64,
            cores,
            next: max_seen / cores + 1,
            map: HashMap::new(),
            expiries: BTreeSet::new(),
        }
    }

    /// The core that is home to session `id`.
    pub fn home(id: u64, cores: usize) -> usize {
        (id % cores.max(1) as u64) as usize
    }

    /// A session open before the restart: detached, ending `timeout_ms` from `now`.
    pub fn restore(&mut self, id: u64, timeout_ms: u64, now: u64) {
        let expires = now.saturating_add(timeout_ms);
        self.map.insert(id, Entry { timeout_ms, attached: None, expires: Some(expires) });
        self.expiries.insert((expires, id));
    }

    /// Attaches connection `conn` to session `id` (0: a new one).
    pub fn attach(&mut self, id: u64, timeout_ms: u64, conn: Ticket) -> Attached {
        if let Some(entry) = self.map.get_mut(&id) {
            if let Some(expires) = entry.expires.take() {
                self.expiries.remove(&(expires, id));
            }
            // A connection that attaches takes the session over from one that is still open
            // (the client lost it first; the server has not noticed yet).
            entry.attached = Some(conn);
            return Attached::Resumed { timeout_ms: entry.timeout_ms };
        }
        let id = self.next * self.cores + self.core;
        if id >= MAX_SESSION_ID {
            return Attached::Exhausted;
        }
        self.next += 1;
        self.map.insert(id, Entry { timeout_ms, attached: Some(conn), expires: None });
        Attached::New { id }
    }

    /// Connection `conn` of session `id` is gone: the session ends its timeout from `now`,
    /// unless another connection has taken it over.
    pub fn detach(&mut self, id: u64, conn: Ticket, now: u64) {
        let Some(entry) = self.map.get_mut(&id) else { return };
        if entry.attached != Some(conn) {
            return;
        }
        entry.attached = None;
        let expires = now.saturating_add(entry.timeout_ms);
        entry.expires = Some(expires);
        self.expiries.insert((expires, id));
    }

    /// The connection session `id` is attached to.
    pub fn attached(&self, id: u64) -> Option<Ticket> {
        self.map.get(&id).and_then(|e| e.attached)
    }

    /// Removes and returns the sessions that have ended by `now`.
    pub fn ended(&mut self, now: u64) -> Vec<u64> {
        let mut ended = Vec::new();
        while let Some(&(at, id)) = self.expiries.first()
            && at <= now
        {
            self.expiries.pop_first();
            self.map.remove(&id);
            ended.push(id);
        }
        ended
    }

    /// When the next detached session ends.
    pub fn next_deadline(&self) -> Option<u64> {
        self.expiries.first().map(|&(at, _)| at)
    }

    /// The highest id this core handed out or has seen, if it is not open any more (for a
    /// snapshot: no id is handed out twice).
    pub fn highest_issued(&self) -> Option<u64> {
        let highest = self.next.checked_sub(1)? * self.cores + self.core;
        (highest > 0 && !self.map.contains_key(&highest)).then_some(highest)
    }

    /// Every open session, `(id, timeout ms)`, for a snapshot.
    pub fn open(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&id, e)| (id, e.timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_outlives_its_connection_for_its_timeout() {
        let mut s = Sessions::new(1, 2, 0);
        let Attached::New { id } = s.attach(0, 500, Ticket(10)) else { panic!() };
        assert_eq!((id, Sessions::home(id, 2)), (3, 1), "ids are homed by id % cores");
        assert_eq!(s.attach(id, 9, Ticket(11)), Attached::Resumed { timeout_ms: 500 }, "taken over");
        s.detach(id, Ticket(10), 0);
        assert_eq!(s.next_deadline(), None, "an old connection's end does not detach the new one");
        s.detach(id, Ticket(11), 100);
        assert_eq!((s.next_deadline(), s.attached(id)), (Some(600), None));
        assert_eq!(s.ended(599), Vec::<u64>::new());
        assert_eq!(s.attach(id, 500, Ticket(12)), Attached::Resumed { timeout_ms: 500 }, "resumed in time");
        s.detach(id, Ticket(12), 1_000);
        assert_eq!(s.ended(1_500), vec![id]);
        assert_eq!(s.attach(id, 500, Ticket(13)), Attached::New { id: 5 }, "too late: a new session");
    }

    #[test]
    fn ids_rise_above_what_the_log_has_seen_and_restored_sessions_wait_for_their_client() {
        let mut s = Sessions::new(0, 2, 41);
        s.restore(41, 1_000, 5);
        assert_eq!(s.attach(0, 1, Ticket(1)), Attached::New { id: 42 });
        assert_eq!(s.next_deadline(), Some(1_005));
        assert_eq!(s.attach(41, 1, Ticket(2)), Attached::Resumed { timeout_ms: 1_000 });
        let mut open: Vec<_> = s.open().collect();
        open.sort();
        assert_eq!(open, [(41, 1_000), (42, 1)]);
        let mut full = Sessions::new(0, 1, MAX_SESSION_ID - 1);
        assert_eq!(full.attach(0, 1, Ticket(1)), Attached::Exhausted);
    }
}
