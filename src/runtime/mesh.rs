//! The cross-core mesh: owns the messages cores send each other and each core's outboxes.
//!
//! Cores share nothing; a request for a resource another core owns travels there as a
//! [`Msg`], and its reply travels back the same way. Messages are batched: a core collects
//! what it has for each peer while it serves one batch of work (a read, a timer tick, an
//! inbox batch) and sends each peer one `Vec` at the end, so one wake-up of the peer carries
//! many requests. Each (sender, receiver) pair is a FIFO, which the cancel protocol in
//! `core` relies on.

use std::cell::RefCell;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::api::{Reply, Request};
use crate::shard::Ticket;

/// A message between cores.
#[derive(Debug)]
pub enum Msg {
    /// Serve this request on your shard; reply to `ticket` (unless it is nobody's).
    Request { ticket: Ticket, req: Request },
    /// The reply (or later news) for one of your tickets.
    Reply { ticket: Ticket, reply: Reply },
    /// Withdraw the waiting acquire `ticket` on `resource`; its connection closed.
    Cancel { ticket: Ticket, resource: Box<str> },
    /// The waiting acquire `ticket` was withdrawn before it got an answer.
    Cancelled { ticket: Ticket },
    /// Attach the connection of `ticket` to resumable session `session` (you are its home; 0:
    /// make a new one there), and answer `ticket`.
    Attach { ticket: Ticket, session: u64, timeout_ms: u64 },
    /// The connection whose session ticket is `conn` left resumable session `session`.
    Detach { session: u64, conn: Ticket },
    /// Resumable session `id` ended: release the locks it holds on your shard.
    EndSession { id: u64 },
    /// Stop: finish what is in flight and exit.
    Shutdown,
}

/// What one wake-up carries.
pub type Batch = Vec<Msg>;

/// One core's ends of the mesh.
pub struct Mesh {
    peers: Vec<UnboundedSender<Batch>>,
    outboxes: RefCell<Vec<Batch>>,
}

/// A mesh of `n` cores: the senders (one per core, cloned to every core) and each core's
/// receiver.
pub(super) fn channels(n: usize) -> (Vec<UnboundedSender<Batch>>, Vec<UnboundedReceiver<Batch>>) {
    (0..n).map(|_| unbounded_channel()).unzip()
}

impl Mesh {
    pub(super) fn new(peers: Vec<UnboundedSender<Batch>>) -> Mesh {
        let outboxes = RefCell::new(peers.iter().map(|_| Vec::new()).collect());
        Mesh { peers, outboxes }
    }

    /// Queues `msg` for core `to`; it leaves at the next [`Mesh::flush`].
    pub(super) fn post(&self, to: usize, msg: Msg) {
        self.outboxes.borrow_mut()[to].push(msg);
    }

    /// Sends every non-empty outbox as one batch.
    pub(super) fn flush(&self) {
        let mut outboxes = self.outboxes.borrow_mut();
        for (to, outbox) in outboxes.iter_mut().enumerate() {
            if !outbox.is_empty() {
                // A peer that has exited drops its receiver; its messages have nowhere to go.
                let _ = self.peers[to].send(std::mem::take(outbox));
            }
        }
    }
}
