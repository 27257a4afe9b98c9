//! Tickets: the address of a request in flight, packed into the [`Ticket`] the shard carries
//! back with its answer. A ticket names a core, a connection of that core and one of the
//! connection's slots (or the connection itself, where news of its session locks goes), or a
//! resumable session at its home core (where news of that session's locks goes, to be passed
//! to whichever connection it has now). The layout is this module's alone: everyone else
//! builds and reads tickets through it.

use crate::shard::Ticket;

/// Bits of a ticket for the connection's slot; slots are per-connection request numbers and
/// stay below the in-flight limit (at most 2^20, see `config`).
const SLOT_BITS: u32 = 24;
/// Bits of a ticket for the connection id (the 8 above them name the core).
const CONN_BITS: u32 = 32;
/// The slot that stands for a connection itself; never a request's (those stay below the
/// in-flight limit, far under 2^24 - 1).
const SESSION_SLOT: u64 = (1 << SLOT_BITS) - 1;
/// Connection id that stands for "nobody": replies to its tickets are dropped.
const NOBODY: u32 = 0;
/// Connection ids with this bit set are not connections: the rest of the id and the slot
/// bits together hold a session id (below 2^55, see `sessions::MAX_SESSION_ID`).
const SESSION_BIT: u32 = 1 << 31;

/// A connection of one core: unique among that core's open connections, never [`NOBODY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(u32);

impl ConnId {
    /// The id after `self` (wrapping, and skipping "nobody").
    pub(super) fn next(self) -> ConnId {
        match self.0.wrapping_add(1) & !SESSION_BIT {
            NOBODY => ConnId(NOBODY + 1),
            id => ConnId(id),
        }
    }

    /// The id before any connection's.
    pub(super) const START: ConnId = ConnId(NOBODY);
}

/// Where a ticket points within its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The request the connection keeps in this slot.
    Request(usize),
    /// The connection itself: news about the session locks it holds.
    Session,
}

/// Where a ticket leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address {
    /// Nobody waits for the answer (a release on behalf of a client that is gone).
    Nobody {
        core: usize,
    },
    Conn {
        core: usize,
        conn: ConnId,
        slot: Slot,
    },
    /// Resumable session `id`, at its home core.
    Session {
        core: usize,
        id: u64,
    },
}

impl Address {
    /// The core the ticket belongs to.
    pub fn core(self) -> usize {
        match self {
            Address::Nobody { core } | Address::Conn { core, .. } | Address::Session { core, .. } => core,
        }
    }
}

/// The ticket for `slot` of connection `conn` of core `core`.
pub fn ticket(core: usize, conn: ConnId, slot: Slot) -> Ticket {
    let slot = match slot {
        Slot::Request(n) => {
            debug_assert!((n as u64) < SESSION_SLOT, "slot {n} beyond the ticket layout");
            n as u64
        }
        Slot::Session => SESSION_SLOT,
    };
    Ticket(((core as u64) << (SLOT_BITS + CONN_BITS)) | (u64::from(conn.0) << SLOT_BITS) | slot)
}

/// A ticket whose answer nobody waits for, on core `core`.
pub fn nobody(core: usize) -> Ticket {
    ticket(core, ConnId(NOBODY), Slot::Request(0))
}

/// The ticket of resumable session `id` (below 2^55) at its home core `core`.
pub fn for_session(core: usize, id: u64) -> Ticket {
    debug_assert!(id < 1 << 55, "session id {id} beyond the ticket layout");
    let conn = SESSION_BIT | (id >> SLOT_BITS) as u32;
    Ticket(((core as u64) << (SLOT_BITS + CONN_BITS)) | (u64::from(conn) << SLOT_BITS) | (id & SESSION_SLOT))
}

/// The session ticket of the connection `ticket` belongs to.
pub fn session_of(ticket: Ticket) -> Ticket {
    Ticket(ticket.0 | SESSION_SLOT)
}

/// Where `ticket` leads.
pub fn address(ticket: Ticket) -> Address {
    let core = (ticket.0 >> (SLOT_BITS + CONN_BITS)) as usize;
    let conn = (ticket.0 >> SLOT_BITS) as u32;
    if conn == NOBODY {
        return Address::Nobody { core };
    }
    if conn & SESSION_BIT != 0 {
        let id = (u64::from(conn & !SESSION_BIT) << SLOT_BITS) | (ticket.0 & SESSION_SLOT);
        return Address::Session { core, id };
    }
    let slot = match ticket.0 & SESSION_SLOT {
        SESSION_SLOT => Slot::Session,
        n => Slot::Request(n as usize),
    };
    Address::Conn { core, conn: ConnId(conn), slot }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip() {
        let conn = ConnId(0x5EAD_BEEF);
        for (core, slot) in [(0, Slot::Request(0)), (255, Slot::Request(1 << 20)), (3, Slot::Session)] {
            assert_eq!(address(ticket(core, conn, slot)), Address::Conn { core, conn, slot });
        }
        let t = ticket(7, conn, Slot::Request(42));
        assert_eq!(address(session_of(t)), Address::Conn { core: 7, conn, slot: Slot::Session });
        assert_eq!(address(nobody(9)), Address::Nobody { core: 9 });
        assert_eq!(ConnId(SESSION_BIT - 1).next(), ConnId(1), "never nobody, never a session");
        for id in [1, (1 << 24) - 1, 1 << 24, (1 << 55) - 1] {
            assert_eq!(address(for_session(5, id)), Address::Session { core: 5, id });
        }
    }
}
