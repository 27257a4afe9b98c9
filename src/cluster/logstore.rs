//! The Raft log and vote on disk: openraft's `RaftLogStorage`, kept to its contract. An append
//! and a vote are written **and `fdatasync`ed before** they are acknowledged (the `LogFlushed`
//! callback, `save_vote`'s return); every write goes through one writer thread, in the order
//! openraft asked for it.
//!
//! # Files (`DATA_DIR/raft/`)
//! ```text
//! INCARNATION        this directory's incarnation (hex), drawn when it was made
//! LOCK               flock(2)ed while the member runs (store::dir::DataDir)
//! <n>.log            a segment: frames, in store::record's batch framing (u32 length, CRC-32,
//!                    u64 frame number, u64 zero) around a kind byte and a bincode body
//! ```
//! | kind | frame | body |
//! |---|---|---|
//! | 1 | entries | the entries of one `append`, in order (an entry replaces any at or after its index) |
//! | 2 | vote | the vote |
//! | 3 | truncate | index: entries from it on are gone |
//! | 4 | purge | log id: entries up to it are gone, and it is the last purged |
//! | 5 | state | vote and last purged: the first frame of every segment |
//!
//! Every segment opens with a state frame, so the oldest segments can be removed once a purge
//! covers every entry in them (and the purge is synced): what is left is a suffix of the
//! history, which folds into the same log. A new segment starts after [`SEGMENT_BYTES`].
//!
//! # Recovery
//! The segments are read in order and folded into the log. A torn tail of the last one (a crash
//! mid-write: nothing in it was acknowledged) is cut off, as the single server does; a bad frame
//! with good ones after it, or anywhere but the last segment, stops the start with the file and
//! offset named.
//!
//! # The writer
//! A thread takes everything queued, writes it with one write and syncs once if anything in it
//! waits for an acknowledgement, then acknowledges in order (group commit). A segment is given
//! room ahead of its writes, as the single server's log is (`store::wal`): its zeros end the
//! log when it is read. File operations go
//! through [`Disk`], so a test can see their order. After a failed write nothing more is
//! written (what reached the file may be half a frame, which recovery cuts off as a torn
//! tail): every later operation fails, and openraft stops the member.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::RangeBounds;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError, Vote};
use serde::{Serialize, de::DeserializeOwned};

use super::TypeConfig;
use crate::log::Level;
use crate::store::dir::{DataDir, StoreError, sync_dir, write_durably};
use crate::store::record;

/// A segment is closed, and a new one begun, once it holds this many bytes: small enough that
/// removing purged segments keeps the directory near the live log's size, large enough that
/// rotation (a create and two syncs) is rare.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Operations one write gathers at most, so that one acknowledgement never waits behind an
/// unbounded queue.
const MAX_GROUP: usize = 1024;
/// The segment suffix.
const LOG: &str = "log";
/// The incarnation's file.
pub const INCARNATION: &str = "INCARNATION";

mod kind {
    pub const ENTRIES: u8 = 1;
    pub const VOTE: u8 = 2;
    pub const TRUNCATE: u8 = 3;
    pub const PURGE: u8 = 4;
    pub const STATE: u8 = 5;
}

type Id = LogId<u64>;

/// The file operations of the writer (and of opening), one segment being written at a time.
pub trait Disk: Send + 'static {
    /// Creates segment `n` (it must not exist), makes its name durable, and writes to it from
    /// now on.
    fn create(&mut self, n: u64) -> io::Result<()>;
    /// Appends `bytes` to the current segment.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes what was written to the current segment durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Removes segment `n`.
    fn remove(&mut self, n: u64) -> io::Result<()>;
}

/// [`Disk`] on the file system.
pub struct FsDisk {
    dir: PathBuf,
    file: Option<File>,
    /// Where the next write goes in the current segment.
    at: u64,
    /// A write that would end past this asks for more room first.
    room: u64,
}

impl FsDisk {
    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(segment_name(n))
    }
}

impl Disk for FsDisk {
    fn create(&mut self, n: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).create_new(true).open(self.path(n))?;
        File::open(&self.dir)?.sync_all()?;
        if let Some(old) = self.file.replace(file) {
            // The room the segment left behind had no writes: given back (not synced; zeros
            // come back as room should a crash undo it).
            let _ = old.set_len(self.at);
        }
        (self.at, self.room) = (0, 0);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self.file.as_ref().ok_or_else(no_segment)?;
        let end = self.at + bytes.len() as u64;
        if end > self.room {
            // Best effort, as in `store::wal`: without room the write is a plain append.
            let room = crate::store::wal::room_for(end);
            // SAFETY: fallocate on our own open file, with no pointers.
            let _ = unsafe {
                libc::fallocate(
                    file.as_raw_fd(),
                    0,
                    self.room as libc::off_t,
                    (room - self.room) as libc::off_t,
                )
            };
            self.room = room;
        }
        file.write_all_at(bytes, self.at)?;
        self.at = end;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.as_mut().ok_or_else(no_segment)?.sync_data()
    }

    fn remove(&mut self, n: u64) -> io::Result<()> {
        fs::remove_file(self.path(n))
    }
}

fn no_segment() -> io::Error {
    io::Error::other("no log segment is open")
}

fn segment_name(n: u64) -> String {
    format!("{n:020}.{LOG}")
}

/// An acknowledgement the writer gives once an operation is durable (or failed).
pub trait Flushed: Send + 'static {
    fn flushed(self: Box<Self>, result: io::Result<()>);
}

impl Flushed for LogFlushed<TypeConfig> {
    fn flushed(self: Box<Self>, result: io::Result<()>) {
        self.log_io_completed(result);
    }
}

impl Flushed for tokio::sync::oneshot::Sender<io::Result<()>> {
    fn flushed(self: Box<Self>, result: io::Result<()>) {
        let _ = self.send(result);
    }
}

/// The log as it is now (what readers see).
#[derive(Default)]
struct Mem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    purged: Option<Id>,
    vote: Option<Vote<u64>>,
}

impl Mem {
    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) {
        if let Some(first) = entries.first() {
            self.entries.split_off(&first.log_id.index);
        }
        for e in entries {
            self.entries.insert(e.log_id.index, e);
        }
    }

    fn truncate(&mut self, index: u64) {
        self.entries.split_off(&index);
    }

    fn purge(&mut self, id: Id) {
        if self.purged.is_some_and(|p| p.index >= id.index) {
            return;
        }
        self.entries = self.entries.split_off(&(id.index + 1));
        self.purged = Some(id);
    }

    fn last(&self) -> Option<Id> {
        self.entries.values().next_back().map(|e| e.log_id).or(self.purged)
    }
}

/// One operation for the writer.
struct Op {
    /// Kind byte and body.
    frame: Vec<u8>,
    effect: Effect,
    /// Waiting for durability: the frame is synced before this is called.
    done: Option<Box<dyn Flushed>>,
}

/// What an operation changes in what the writer tracks for rotation and removal.
enum Effect {
    Entries { last: u64 },
    Vote(Vote<u64>),
    Truncate,
    Purge(Id),
}

fn frame<T: Serialize>(kind: u8, body: &T) -> Vec<u8> {
    let mut out = vec![kind];
    bincode::serialize_into(&mut out, body).expect("log frames serialize");
    out
}

/// The log store openraft owns.
pub struct LogStore {
    mem: Arc<Mutex<Mem>>,
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    /// Released last, once the writer is done.
    _dir: DataDir,
}

/// A reader of the log (replication streams hold one each).
#[derive(Clone)]
pub struct LogReader {
    mem: Arc<Mutex<Mem>>,
}

/// What [`open`] found.
pub struct Opened {
    pub store: LogStore,
    /// This directory's incarnation.
    pub incarnation: u64,
    /// No vote and no log: this member has never been in a cluster (or lost its data).
    pub pristine: bool,
}

/// Opens (creating it if need be) and locks the log in `dir`, and recovers it.
pub fn open(dir: &Path) -> Result<Opened, StoreError> {
    open_with(dir, SEGMENT_BYTES, |fs| Box::new(fs))
}

/// [`open`], with segments of `segment_bytes` and the file operations `disk` makes of the real
/// ones (tests watch or delay them).
pub fn open_with(
    dir: &Path,
    segment_bytes: u64,
    disk: impl FnOnce(FsDisk) -> Box<dyn Disk>,
) -> Result<Opened, StoreError> {
    let locked = DataDir::open(dir)?;
    let io_at = |path: &Path| {
        let path = path.to_owned();
        move |error| StoreError::Io { path, error }
    };
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some((n, LOG)) = name.to_str().and_then(|s| s.split_once('.')) else {
            continue;
        };
        if let Ok(n) = n.parse::<u64>() {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    let incarnation = read_incarnation(dir, !segments.is_empty())?;

    let mut mem = Mem::default();
    // The highest index written to each segment (whatever a later truncation did).
    let mut written: BTreeMap<u64, u64> = BTreeMap::new();
    let mut tail = None;
    for (i, &n) in segments.iter().enumerate() {
        let path = dir.join(segment_name(n));
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let damaged = |offset, reason| StoreError::Damaged { path: path.clone(), offset, reason };
        let decoded = record::decode_file(&bytes).map_err(|d| damaged(d.offset, d.reason))?;
        let last = i + 1 == segments.len();
        if decoded.torn > 0 && !last {
            return Err(damaged(decoded.good, "a frame cut short before the last segment"));
        }
        let mut offset = 0;
        let mut max = 0;
        for batch in &decoded.batches {
            max = max.max(fold(&mut mem, batch.body).map_err(|reason| damaged(offset, reason))?);
            offset += record::BATCH_HEADER_BYTES + batch.body.len();
        }
        written.insert(n, max);
        if decoded.torn > 0 {
            crate::log!(
                Level::Warn,
                "{}: cut off a torn tail of {} bytes at byte {} (a crash while it was written; nothing in it was acknowledged)",
                path.display(),
                decoded.torn,
                decoded.good
            );
            let file = OpenOptions::new().write(true).open(&path).map_err(io_at(&path))?;
            file.set_len(decoded.good as u64).map_err(io_at(&path))?;
            file.sync_all().map_err(io_at(&path))?;
        }
        if last {
            tail = Some((n, decoded.good as u64, decoded.batches.len() as u64));
        }
    }
    check_contiguous(&mem).map_err(|reason| StoreError::Unreadable { path: dir.to_owned(), reason })?;
    let pristine = mem.vote.is_none() && mem.last().is_none();

    // The last segment goes on where its good frames end; with none, segment 1 is begun.
    let mut fs = FsDisk { dir: dir.to_owned(), file: None, at: 0, room: 0 };
    let (segment, bytes, next_frame) = match tail {
        Some((n, len, frames)) => {
            let path = dir.join(segment_name(n));
            let file = OpenOptions::new().write(true).open(&path).map_err(io_at(&path))?;
            // Zeros after the good frames are room the segment already has.
            fs.room = file.metadata().map_err(io_at(&path))?.len();
            (fs.file, fs.at) = (Some(file), len);
            (n, len, frames + 1)
        }
        None => (0, 0, 1),
    };
    let mut writer = Writer {
        disk: disk(fs),
        segment,
        bytes,
        next_frame,
        segment_bytes,
        written,
        vote: mem.vote,
        purged: mem.purged,
        failed: None,
    };
    if segment == 0 {
        writer.rotate().map_err(io_at(dir))?;
    }

    let mem = Arc::new(Mutex::new(mem));
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ringlock-raft-log".into())
        .spawn(move || writer.run(rx))
        .map_err(io_at(dir))?;
    Ok(Opened {
        store: LogStore { mem, tx: Some(tx), writer: Some(thread), _dir: locked },
        incarnation,
        pristine,
    })
}

/// Reads the incarnation, or draws one for a new directory. `has_log`: a directory with a log
/// but no incarnation is not one this version made.
fn read_incarnation(dir: &Path, has_log: bool) -> Result<u64, StoreError> {
    let path = dir.join(INCARNATION);
    match fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map_err(|_| StoreError::Unreadable {
            path: path.clone(),
            reason: format!("{:?} is not an incarnation", text.trim()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !has_log => {
            let incarnation = draw();
            write_durably(&path, format!("{incarnation:016x}\n").as_bytes())?;
            sync_dir(dir)?;
            Ok(incarnation)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Unreadable {
            path,
            reason: "a log without its INCARNATION file; move the directory away to start this member anew"
                .into(),
        }),
        Err(error) => Err(StoreError::Io { path, error }),
    }
}

/// A random, non-zero number (the standard library's randomly keyed hasher, seeded by the OS,
/// over the time and the process).
fn draw() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, &'static str> {
    bincode::deserialize(bytes).map_err(|_| "a log frame that does not decode")
}

/// Folds one frame into the log; returns the highest index it wrote (0: none).
fn fold(mem: &mut Mem, frame: &[u8]) -> Result<u64, &'static str> {
    let (&kind, rest) = frame.split_first().ok_or("an empty log frame")?;
    match kind {
        kind::ENTRIES => {
            let entries: Vec<Entry<TypeConfig>> = body(rest)?;
            let last = entries.last().map_or(0, |e| e.log_id.index);
            mem.append(entries);
            return Ok(last);
        }
        kind::VOTE => mem.vote = Some(body(rest)?),
        kind::TRUNCATE => mem.truncate(body(rest)?),
        kind::PURGE => mem.purge(body(rest)?),
        kind::STATE => {
            let (vote, purged): (Option<Vote<u64>>, Option<Id>) = body(rest)?;
            if vote.is_some() {
                mem.vote = vote;
            }
            if let Some(p) = purged {
                mem.purge(p);
            }
        }
        _ => return Err("an unknown log frame"),
    }
    Ok(0)
}

/// The log must have no hole: from the last purged on, every index.
fn check_contiguous(mem: &Mem) -> Result<(), String> {
    let mut expected = mem.purged.map(|p| p.index + 1);
    for &index in mem.entries.keys() {
        if expected.is_some_and(|e| e != index) {
            return Err(format!(
                "the log has a hole: entry {index} where {} was expected",
                expected.unwrap_or(0)
            ));
        }
        expected = Some(index + 1);
    }
    Ok(())
}

/// The writer thread's state.
struct Writer {
    disk: Box<dyn Disk>,
    /// The segment being written, its bytes and its next frame's number.
    segment: u64,
    bytes: u64,
    next_frame: u64,
    segment_bytes: u64,
    /// The highest index written to each segment.
    written: BTreeMap<u64, u64>,
    /// What the next segment's state frame says.
    vote: Option<Vote<u64>>,
    purged: Option<Id>,
    /// Set by a failed write: nothing is written after it.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let result = self.write(&ops);
            for op in ops {
                if let Some(done) = op.done {
                    done.flushed(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::other(e.clone())),
                    });
                }
            }
        }
    }

    /// Writes `ops` with one write, syncs once if any waits for it (or removes files after
    /// it), then rotates or removes what purges allow.
    fn write(&mut self, ops: &[Op]) -> Result<(), String> {
        if let Some(reason) = &self.failed {
            return Err(format!(
                "the log could not be written earlier ({reason}); nothing is written after that"
            ));
        }
        let mut buf = Vec::new();
        let mut sync = false;
        let mut purged = false;
        for op in ops {
            record::encode_batch(&mut buf, self.next_frame, 0, &op.frame);
            self.next_frame += 1;
            sync |= op.done.is_some();
            match op.effect {
                Effect::Entries { last } => {
                    let max = self.written.entry(self.segment).or_default();
                    *max = (*max).max(last);
                }
                Effect::Vote(v) => self.vote = Some(v),
                Effect::Truncate => {}
                Effect::Purge(id) => {
                    if self.purged.is_none_or(|p| p.index < id.index) {
                        self.purged = Some(id);
                    }
                    purged = true;
                }
            }
        }
        let written =
            self.disk.write(&buf).and_then(|()| if sync || purged { self.disk.sync() } else { Ok(()) });
        if let Err(e) = written {
            let reason = e.to_string();
            crate::log!(Level::Error, "the consensus log could not be written: {reason}; this member stops");
            self.failed = Some(reason.clone());
            return Err(reason);
        }
        self.bytes += buf.len() as u64;
        if self.bytes >= self.segment_bytes {
            self.rotate().map_err(|e| {
                self.failed = Some(e.to_string());
                e.to_string()
            })?;
        }
        if purged {
            self.remove_purged();
        }
        Ok(())
    }

    /// Starts the next segment with a state frame, both durable.
    fn rotate(&mut self) -> io::Result<()> {
        if self.segment > 0 {
            // Frames that waited for no sync (truncations) are durable before the old segment
            // is left behind.
            self.disk.sync()?;
        }
        let next = self.segment + 1;
        self.disk.create(next)?;
        self.segment = next;
        self.written.insert(next, 0);
        let mut buf = Vec::new();
        record::encode_batch(&mut buf, 1, 0, &frame(kind::STATE, &(self.vote, self.purged)));
        self.disk.write(&buf)?;
        self.disk.sync()?;
        self.bytes = buf.len() as u64;
        self.next_frame = 2;
        Ok(())
    }

    /// Removes the oldest segments while every entry in them is purged (the purge is durable:
    /// it was synced with its write). Only a prefix goes, so what is left folds into the same
    /// log.
    fn remove_purged(&mut self) {
        let Some(purged) = self.purged else { return };
        while let Some((&n, &max)) = self.written.first_key_value() {
            if n == self.segment || max > purged.index {
                break;
            }
            if let Err(e) = self.disk.remove(n) {
                crate::log!(Level::Warn, "could not remove the purged log segment {n}: {e}");
                break;
            }
            self.written.remove(&n);
        }
    }
}

fn storage_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError<u64> {
    StorageError::from_io_error(subject, verb, io::Error::other(e.to_string()))
}

// openraft's own error type, which every storage method returns anyway.
#[allow(clippy::result_large_err)]
impl LogStore {
    fn send(&self, op: Op) -> Result<(), StorageError<u64>> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(op).ok())
            .ok_or_else(|| storage_error(ErrorSubject::Logs, ErrorVerb::Write, "the log writer has stopped"))
    }

    /// Appends `entries` and calls `done` once they are durable: [`RaftLogStorage::append`]
    /// with any acknowledgement.
    pub fn append_then(
        &mut self,
        entries: Vec<Entry<TypeConfig>>,
        done: Box<dyn Flushed>,
    ) -> Result<(), StorageError<u64>> {
        let last = entries.last().map_or(0, |e| e.log_id.index);
        let frame = frame(kind::ENTRIES, &entries);
        // Readable at once (openraft's contract), durable when `done` says so.
        self.mem.lock().expect("log lock").append(entries);
        self.send(Op { frame, effect: Effect::Entries { last }, done: Some(done) })
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // The writer finishes what was queued, then ends; the directory's lock goes after it.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn read_range<RB: RangeBounds<u64>>(mem: &Mutex<Mem>, range: RB) -> Vec<Entry<TypeConfig>> {
    mem.lock().expect("log lock").entries.range(range).map(|(_, e)| e.clone()).collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(read_range(&self.mem, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(read_range(&self.mem, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let mem = self.mem.lock().expect("log lock");
        Ok(LogState { last_purged_log_id: mem.purged, last_log_id: mem.last() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { mem: self.mem.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op {
            frame: frame(kind::VOTE, vote),
            effect: Effect::Vote(*vote),
            done: Some(Box::new(tx)),
        })?;
        let written = rx.await.unwrap_or_else(|_| Err(io::Error::other("the log writer has stopped")));
        written.map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.mem.lock().expect("log lock").vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.mem.lock().expect("log lock").vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.append_then(entries.into_iter().collect(), Box::new(callback))
    }

    async fn truncate(&mut self, log_id: Id) -> Result<(), StorageError<u64>> {
        self.mem.lock().expect("log lock").truncate(log_id.index);
        // Needs no sync of its own: an append after it is synced with it, and one lost with it
        // brings back entries that were never committed, which the leader truncates again.
        self.send(Op { frame: frame(kind::TRUNCATE, &log_id.index), effect: Effect::Truncate, done: None })
    }

    async fn purge(&mut self, log_id: Id) -> Result<(), StorageError<u64>> {
        self.mem.lock().expect("log lock").purge(log_id);
        self.send(Op { frame: frame(kind::PURGE, &log_id), effect: Effect::Purge(log_id), done: None })
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Waker};

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::cluster::machine::{self, Machine};
    use crate::cluster::tests::TempDir;

    fn id(term: u64, index: u64) -> Id {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: id(term, index), payload: EntryPayload::Blank }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn poll_once<F: Future + ?Sized>(f: &mut Pin<Box<F>>) -> Poll<F::Output> {
        f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, Machine, TempDir> for Builder {
        async fn build(&self) -> Result<(TempDir, LogStore, Machine), StorageError<u64>> {
            let dir = TempDir::new("suite");
            let raft = dir.0.join("raft");
            let err = |e: StoreError| storage_error(ErrorSubject::Store, ErrorVerb::Read, e);
            let store = open(&raft).map_err(err)?.store;
            let machine = machine::open(&raft).map_err(err)?;
            Ok((dir, store, machine))
        }
    }

    #[test]
    fn openraft_s_storage_suite_passes() {
        Suite::test_all(Builder).unwrap();
    }

    /// A disk that records its operations and, once closed, holds every sync until told to
    /// go on (saying first that one began).
    struct Gate {
        inner: FsDisk,
        events: Arc<Mutex<Vec<&'static str>>>,
        closed: Arc<AtomicBool>,
        syncing: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
    }

    impl Disk for Gate {
        fn create(&mut self, n: u64) -> io::Result<()> {
            self.events.lock().unwrap().push("create");
            self.inner.create(n)
        }

        fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.events.lock().unwrap().push("write");
            self.inner.write(bytes)
        }

        fn sync(&mut self) -> io::Result<()> {
            if self.closed.load(Ordering::SeqCst) {
                self.syncing.send(()).unwrap();
                self.go.recv().unwrap();
            }
            self.events.lock().unwrap().push("sync");
            self.inner.sync()
        }

        fn remove(&mut self, n: u64) -> io::Result<()> {
            self.inner.remove(n)
        }
    }

    #[test]
    fn an_append_and_a_vote_are_acknowledged_only_after_the_sync_that_covers_them() {
        let dir = TempDir::new("durable");
        let events = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (syncing_tx, syncing) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let (e, c) = (events.clone(), closed.clone());
        let gate = move |inner| -> Box<dyn Disk> {
            Box::new(Gate { inner, events: e, closed: c, syncing: syncing_tx, go: go_rx })
        };
        let mut store = open_with(&dir.0, SEGMENT_BYTES, gate).unwrap().store;
        assert_eq!(*events.lock().unwrap(), ["create", "write", "sync"], "a new log's first segment");
        closed.store(true, Ordering::SeqCst);
        runtime().block_on(async {
            // openraft's own append (its LogFlushed callback): held while its sync is.
            let mut append = Box::pin(store.blocking_append([blank(1, 1)]));
            assert!(poll_once(&mut append).is_pending());
            syncing.recv().unwrap();
            assert!(
                poll_once(&mut append).is_pending(),
                "the append was acknowledged before its sync returned"
            );
            go.send(()).unwrap();
            append.await.unwrap();

            // A vote: save_vote returns only after its sync.
            let vote = Vote::new(3, 1);
            let mut saving = Box::pin(store.save_vote(&vote));
            assert!(poll_once(&mut saving).is_pending());
            syncing.recv().unwrap();
            assert!(poll_once(&mut saving).is_pending(), "the vote returned before its sync did");
            go.send(()).unwrap();
            saving.await.unwrap();
            assert_eq!(store.read_vote().await.unwrap(), Some(vote));

            // Two appends, the second written while the first's sync is held: the first sync
            // does not cover the second, which waits for its own.
            let (a, mut first) = tokio::sync::oneshot::channel();
            store.append_then(vec![blank(3, 2)], Box::new(a)).unwrap();
            syncing.recv().unwrap();
            let (b, mut second) = tokio::sync::oneshot::channel();
            store.append_then(vec![blank(3, 3)], Box::new(b)).unwrap();
            assert!(first.try_recv().is_err() && second.try_recv().is_err());
            go.send(()).unwrap();
            syncing.recv().unwrap();
            assert!(first.try_recv().unwrap().is_ok(), "the first is acknowledged after its sync");
            assert!(second.try_recv().is_err(), "the second was acknowledged by a sync before its write");
            go.send(()).unwrap();
            second.await.unwrap().unwrap();
        });
        assert_eq!(
            events.lock().unwrap()[3..],
            ["write", "sync", "write", "sync", "write", "sync", "write", "sync"]
        );
        closed.store(false, Ordering::SeqCst);
    }

    #[test]
    fn the_log_and_the_vote_come_back_after_a_restart() {
        let dir = TempDir::new("reopen");
        let rt = runtime();
        let first = open(&dir.0).unwrap();
        assert!(first.pristine);
        let incarnation = first.incarnation;
        let mut store = first.store;
        rt.block_on(async {
            store.blocking_append((0..=10).map(|i| blank(1, i))).await.unwrap();
            store.save_vote(&Vote::new(2, 3)).await.unwrap();
            store.truncate(id(1, 8)).await.unwrap();
            store.purge(id(1, 3)).await.unwrap();
            store.blocking_append([blank(2, 8)]).await.unwrap();
        });
        drop(store);
        // A second member on the same directory is refused while one runs.
        let again = open(&dir.0).unwrap();
        assert!(matches!(open(&dir.0), Err(StoreError::Locked { .. })));
        assert_eq!((again.incarnation, again.pristine), (incarnation, false));
        let mut store = again.store;
        rt.block_on(async {
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
            let state = store.get_log_state().await.unwrap();
            assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(id(1, 3)), Some(id(2, 8))));
            let ids: Vec<Id> =
                store.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id).collect();
            assert_eq!(ids, [id(1, 4), id(1, 5), id(1, 6), id(1, 7), id(2, 8)]);
        });
    }

    #[test]
    fn purged_segments_are_removed_and_the_rest_folds_into_the_same_log() {
        let dir = TempDir::new("segments");
        let rt = runtime();
        let segments = || {
            fs::read_dir(&dir.0)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
                .count()
        };
        // Tiny segments: one or two frames each.
        let mut store = open_with(&dir.0, 150, |fs| Box::new(fs)).unwrap().store;
        rt.block_on(async {
            for i in 0..30 {
                store.blocking_append([blank(1, i)]).await.unwrap();
            }
            store.save_vote(&Vote::new(1, 1)).await.unwrap();
        });
        let before = segments();
        assert!(before > 5, "{before} segments");
        rt.block_on(async {
            store.purge(id(1, 20)).await.unwrap();
            // Ordered after the purge: once it is durable, so is the purge, and the removal.
            store.blocking_append([blank(1, 30)]).await.unwrap();
        });
        assert!(segments() < before, "purged segments removed");
        drop(store);
        let mut store = open_with(&dir.0, 150, |fs| Box::new(fs)).unwrap().store;
        rt.block_on(async {
            let state = store.get_log_state().await.unwrap();
            assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(id(1, 20)), Some(id(1, 30))));
            assert_eq!(store.try_get_log_entries(0..100).await.unwrap().len(), 10);
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        });
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_before_it_is_named() {
        let dir = TempDir::new("torn");
        let rt = runtime();
        let mut store = open(&dir.0).unwrap().store;
        rt.block_on(async {
            for i in 0..5 {
                store.blocking_append([blank(1, i)]).await.unwrap();
            }
        });
        drop(store);
        let path = dir.0.join(segment_name(1));
        let written = fs::read(&path).unwrap();
        // The segment has room after its frames: zeros, read as the log's end.
        assert_eq!(written.len() as u64, crate::store::wal::ROOM_BYTES);
        let good = written[..record::decode_file(&written).unwrap().good].to_vec();
        assert!(written[good.len()..].iter().all(|&b| b == 0));
        // A crash in the middle of a frame: its length promises more than is there; the room
        // after it stays.
        let mut torn = good.clone();
        torn.extend_from_slice(&[60, 0, 0, 0, 1, 2, 3, 4, 5]);
        torn.resize(written.len(), 0);
        fs::write(&path, &torn).unwrap();
        let mut store = open(&dir.0).unwrap().store;
        assert_eq!(fs::read(&path).unwrap(), good, "the torn tail is cut off");
        rt.block_on(async {
            assert_eq!(store.try_get_log_entries(0..10).await.unwrap().len(), 5);
            // And the log goes on after it.
            store.blocking_append([blank(1, 5)]).await.unwrap();
        });
        drop(store);
        assert_eq!(open(&dir.0).unwrap().store.mem.lock().unwrap().entries.len(), 6);

        // A flipped bit in a frame with good frames after it: damage, named with its offset.
        let bytes = fs::read(&path).unwrap();
        let frames = record::decode_file(&bytes).unwrap().batches;
        let second = record::BATCH_HEADER_BYTES + frames[0].body.len();
        let mut bad = bytes.clone();
        bad[second + record::BATCH_HEADER_BYTES] ^= 1;
        fs::write(&path, &bad).unwrap();
        match open(&dir.0) {
            Err(StoreError::Damaged { path: p, offset, .. }) => {
                assert_eq!((p, offset), (path.clone(), second))
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a damaged log was opened"),
        }
    }
}
