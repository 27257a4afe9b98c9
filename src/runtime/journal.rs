//! A core's group commit: owns how far the core's log is durable and the answers that wait
//! for it (the task that writes it is [`super::commit`]).
//!
//! Every state change the shard makes during a turn goes into its journal (log records). The
//! journal task takes everything gathered so far as one batch, writes it with one write and
//! one sync, and only then lets the answers that depend on it go out:
//! the answers of a turn that made records (a grant, a release, an extension, an expiry) wait
//! for the batch that carries them. Connections hold such answer bytes behind a mark until
//! that batch is durable ([`super::Core::answers_wait_for`], [`super::Core::durable`]); answers for other
//! cores are held here. Answers of a turn that changed nothing (a conflict, an inspection,
//! health, metrics) need not wait, and do not, so they keep coming while the disk fails.
//! While one batch is being written the next gathers, so under load one sync serves every
//! request that arrived during the last one.
//!
//! While a write fails (a full disk, an I/O error) the core refuses every new state change
//! and keeps answering everything else.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use tokio::sync::Notify;

use crate::metrics::{BatchSizes, Histogram, LogStats};

use super::mesh::Msg;

/// The state of a core's log (see the module documentation).
pub(super) struct Journal {
    /// The number the batch being gathered will be written as.
    pub next: Cell<u64>,
    /// Every batch up to this number is durable.
    pub durable: Cell<u64>,
    /// Wakes the journal task: records wait.
    pub wake: Notify,
    /// Tells connections that `durable` went up.
    pub advanced: Notify,
    /// Writes fail: new state changes are refused.
    pub failing: Cell<bool>,
    /// Answers for other cores, with the batch each waits for.
    pub held: RefCell<VecDeque<(u64, usize, Msg)>>,
    /// A snapshot is being written.
    pub snapshotting: Cell<bool>,
    /// Bytes of the last snapshot.
    pub snapshot_bytes: Cell<u64>,
    pub stats: RefCell<Counts>,
    pub sync_times: Histogram,
}

/// What the journal task counts.
#[derive(Default, Clone, Copy)]
pub(super) struct Counts {
    /// The batches made durable, by size.
    pub sizes: BatchSizes,
    pub write_errors: u64,
    pub snapshots: u64,
}

impl Journal {
    pub fn new(snapshot_bytes: u64) -> Journal {
        Journal {
            next: Cell::new(1),
            durable: Cell::new(0),
            wake: Notify::new(),
            advanced: Notify::new(),
            failing: Cell::new(false),
            held: RefCell::new(VecDeque::new()),
            snapshotting: Cell::new(false),
            snapshot_bytes: Cell::new(snapshot_bytes),
            stats: RefCell::new(Counts::default()),
            sync_times: Histogram::default(),
        }
    }

    /// The batch that records made now will be written in.
    pub fn gathering(&self) -> u64 {
        self.next.get()
    }

    pub fn durable(&self) -> u64 {
        self.durable.get()
    }

    pub fn failing(&self) -> bool {
        self.failing.get()
    }

    /// Records were made: the task should write them.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Waits until more batches are durable.
    pub async fn advanced(&self) {
        self.advanced.notified().await
    }

    /// Forgets the answers held for other cores (a leader that stepped down: they may never
    /// commit).
    pub fn drop_held(&self) {
        self.held.borrow_mut().clear();
    }

    /// Holds `msg` for core `to` until batch `seq` is durable.
    pub fn hold(&self, seq: u64, to: usize, msg: Msg) {
        self.held.borrow_mut().push_back((seq, to, msg));
    }

    pub fn stats(&self) -> LogStats {
        let c = *self.stats.borrow();
        LogStats {
            sizes: c.sizes,
            write_errors: c.write_errors,
            snapshots: c.snapshots,
            failing: self.failing.get(),
            sync: self.sync_times.snapshot(),
        }
    }
}
