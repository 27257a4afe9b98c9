//! A core's journal task: the group commit itself. It takes everything the turns recorded
//! since the last batch, makes it durable, marks it so ([`super::journal::Journal`]) and lets
//! the answers that waited for it go. A single server writes the batch with one write and one
//! sync ([`crate::store::wal`]), and now and then writes a snapshot beside a new log segment
//! so that the log stays small; a cluster's leader proposes it to the cluster
//! ([`crate::cluster::Handle::submit`]), durable once a majority has it.
//!
//! A write or sync that fails (a full disk, an I/O error) is retried, the same batch written
//! again, until it succeeds; meanwhile the core refuses new state changes. A proposal that
//! fails means the member does not lead any more: the core stops serving, and what the batch
//! held is never answered.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::cluster::{Batch as ClusterBatch, Handle};
use crate::log::Level;
use crate::store::dir::encode_snapshot;
use crate::store::wal::{self, Wal};

use super::core::Core;

/// Log bytes since the last snapshot below which no snapshot is written: small logs replay
/// fast, and a snapshot costs a pass over every lock.
const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// A snapshot is written once the log since the last one is this many times the size of that
/// snapshot, so the data directory stays within a small multiple of what is held.
const COMPACT_RATIO: u64 = 2;
/// First pause before a failed write is tried again, and the longest.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Where a core's batches go.
pub(super) enum Sink {
    /// The core's own log.
    Wal(Wal),
    /// The cluster's log, while this member leads.
    Raft(Handle),
}

/// Runs the journal task of `core` for as long as the core lives.
pub(super) async fn run(core: Rc<Core>, sink: Sink) {
    match sink {
        Sink::Wal(wal) => run_wal(core, wal).await,
        Sink::Raft(handle) => run_raft(core, handle).await,
    }
}

/// The next batch's records, once there are any; its number and its time.
async fn next_batch(core: &Core, body: &mut Vec<u8>) -> (u64, u64) {
    let log = core.journal.as_ref().expect("a journal task runs only with a journal");
    while !core.shard.borrow().journal_pending() {
        log.wake.notified().await;
    }
    core.shard.borrow_mut().take_journal(body);
    let seq = log.next.get();
    log.next.set(seq + 1);
    (seq, core.clock.tick())
}

/// Batch `seq` is durable: what waited for it goes.
fn durable(core: &Core, seq: u64) {
    let log = core.journal.as_ref().expect("journal");
    log.durable.set(seq);
    log.advanced.notify_waiters();
    release_held(core, seq);
}

/// A cluster leader's group commit: each batch proposed under the leadership it was decided
/// in, durable once committed.
async fn run_raft(core: Rc<Core>, handle: Handle) {
    let mut body = Vec::new();
    loop {
        let (seq, at) = next_batch(&core, &mut body).await;
        let Some(term) = core.leading() else {
            // Records made while not leading (there are none to speak of: the core refuses
            // changes then) belong to no leadership.
            body.clear();
            continue;
        };
        let log = core.journal.as_ref().expect("journal");
        let started = Instant::now();
        let records = std::mem::take(&mut body);
        let len = records.len() as u64;
        match handle.submit(ClusterBatch { term, at, records }).await {
            Ok(()) => {
                log.sync_times.record(started.elapsed(), 1);
                log.stats.borrow_mut().sizes.record(len);
                durable(&core, seq);
            }
            Err(not_leader) => {
                crate::log!(
                    Level::Warn,
                    [core = core.id()],
                    "core {}: a batch was not committed: {not_leader}",
                    core.id()
                );
                // Unless the core has moved on already (it follows a leader it has learned of,
                // or leads again from a newer start).
                if core.leading() == Some(term) {
                    core.follow(None);
                }
            }
        }
    }
}

/// A single server's group commit into the core's own log.
async fn run_wal(core: Rc<Core>, mut wal: Wal) {
    let log = core.journal.as_ref().expect("a journal task runs only with a journal");
    let mut body = Vec::new();
    loop {
        let (seq, at) = next_batch(&core, &mut body).await;
        let started = Instant::now();
        let mut backoff = RETRY_MIN;
        while let Err(e) = wal.append(at, &body).await {
            log.stats.borrow_mut().write_errors += 1;
            if !log.failing.replace(true) {
                crate::log!(
                    Level::Error,
                    "core {}: cannot write the log ({e}); refusing changes until it can be written",
                    core.id()
                );
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
        if log.failing.replace(false) {
            crate::log!(Level::Info, "core {}: the log can be written again; serving changes", core.id());
        }
        log.sync_times.record(started.elapsed(), 1);
        log.stats.borrow_mut().sizes.record(body.len() as u64);
        body.clear();
        durable(&core, seq);
        let threshold = COMPACT_MIN_BYTES.max(COMPACT_RATIO * log.snapshot_bytes.get());
        if wal.since_snapshot() >= threshold && !log.snapshotting.get() {
            compact(core.clone(), &mut wal);
        }
    }
}

/// Sends on the answers for other cores that batch `seq` made durable.
fn release_held(core: &Core, seq: u64) {
    let log = core.journal.as_ref().expect("journal");
    let mut held = log.held.borrow_mut();
    let mut any = false;
    while held.front().is_some_and(|(s, ..)| *s <= seq) {
        let (_, to, msg) = held.pop_front().expect("front");
        core.mesh.post(to, msg);
        any = true;
    }
    drop(held);
    if any {
        core.mesh.flush();
    }
}

/// Starts the next log segment and writes a snapshot of the state at this point beside it,
/// in a task of its own; once the snapshot is durable, the files it covers go. Records the
/// turns make meanwhile go to the new segment: replaying a record whose effect the snapshot
/// already holds changes nothing (records say what is, by token), so the two may overlap.
fn compact(core: Rc<Core>, wal: &mut Wal) {
    let log = core.journal.as_ref().expect("journal");
    let seq = match wal.rotate() {
        Ok(seq) => seq,
        Err(e) => {
            crate::log!(
                Level::Warn,
                "core {}: cannot start a new log segment ({e}); trying later",
                core.id()
            );
            return;
        }
    };
    let bytes = {
        let (shard, sessions) = (core.shard.borrow(), core.sessions.borrow());
        let (open, issued) = (sessions.open(), sessions.highest_issued());
        encode_snapshot(shard.grants(), open, issued, shard.next_token(), core.clock.now())
    };
    let (dir, len) = (wal.dir().to_owned(), bytes.len() as u64);
    log.snapshotting.set(true);
    tokio_uring::spawn(async move {
        let log = core.journal.as_ref().expect("journal");
        match wal::write_snapshot(&dir, seq, bytes).await {
            Ok(()) => {
                log.snapshot_bytes.set(len);
                log.stats.borrow_mut().snapshots += 1;
            }
            Err(e) => {
                crate::log!(Level::Warn, "core {}: cannot write a snapshot ({e}); trying later", core.id())
            }
        }
        log.snapshotting.set(false);
    });
}
