//! The data directory on disk, read at start-up (plain blocking file I/O, before any core
//! runs). Owns the layout, the lock that keeps a second server out, and reading each core's
//! snapshot and log back into a [`Recovered`] state (the fold itself is [`super::recovery`]).
//!
//! ```text
//! DIR/LOCK                       flock(2)ed by the running server; holds its pid
//! DIR/CURRENT                    the name of the current generation, e.g. "gen-1"
//! DIR/gen-1/META                 the generation's shape: cores and the routing hash's seed
//! DIR/gen-1/core-0/<seq>.snap    a snapshot: the core's locks when segment <seq> began
//! DIR/gen-1/core-0/<seq>.wal     a log segment: batches written after snapshot <seq>
//! ```
//!
//! A core's state is its newest whole snapshot followed by every segment from the same number
//! on. A generation's routing is fixed (its core count and hash seed), so each core reads only
//! its own directory. A server started with another core count folds every core's state
//! together, writes the result as the snapshots of a new generation, and switches `CURRENT`
//! to it (a rename: atomic), so a crash at any point leaves one whole generation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::log::Level;
use crate::route::ResourceHasher;

use super::record::{self, Record, Records, SNAPSHOT_BATCH_BYTES};
use super::recovery::{Recovered, RecoveredLock, Replay, open_sessions_only};

/// What can stop a start.
#[derive(Debug)]
pub enum StoreError {
    /// A file could not be read or written.
    Io { path: PathBuf, error: io::Error },
    /// Another server holds the directory.
    Locked { path: PathBuf, holder: String },
    /// A record before the end of the log is damaged: history would be lost if the start
    /// went on, so it does not.
    Damaged { path: PathBuf, offset: usize, reason: &'static str },
    /// The directory holds something this version cannot read.
    Unreadable { path: PathBuf, reason: String },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            StoreError::Locked { path, holder } => write!(
                f,
                "the data directory {} is in use by another ringlock ({holder}); stop it, or give this \
                 one another --data-dir",
                path.display()
            ),
            StoreError::Damaged { path, offset, reason } => write!(
                f,
                "{} is damaged at byte {offset} ({reason}); refusing to start rather than lose the \
                 history after it (restore the directory from a backup, or move the file away to \
                 start without it)",
                path.display()
            ),
            StoreError::Unreadable { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for StoreError {}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io { path: path.to_owned(), error }
}

/// An open, locked data directory.
pub struct DataDir {
    path: PathBuf,
    /// Held for the life of the server: the kernel lets go of the flock when it exits.
    _lock: File,
}

/// What one core starts with.
#[derive(Debug)]
pub struct CoreStore {
    /// The core's directory.
    pub dir: PathBuf,
    /// The number its new log segment takes.
    pub next_seq: u64,
    /// Its locks.
    pub recovered: Recovered,
    /// Bytes of its newest snapshot (0: none), to decide when to write the next.
    pub snapshot_bytes: u64,
}

/// What the whole server starts with.
#[derive(Debug)]
pub struct Recovery {
    /// One per core, in core order.
    pub cores: Vec<CoreStore>,
    /// The routing hash of the generation.
    pub hasher: ResourceHasher,
    /// Above every token any core handed out.
    pub next_token: u64,
}

impl DataDir {
    /// Opens (creating it if need be) and locks the directory at `path`.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        fs::create_dir_all(path).map_err(io_at(path))?;
        let lock_path = path.join("LOCK");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        // SAFETY: flock on a descriptor we own; LOCK_NB makes it fail rather than wait.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(StoreError::Io { path: lock_path, error });
            }
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(StoreError::Locked { path: path.to_owned(), holder });
        }
        lock.set_len(0).map_err(io_at(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io_at(&lock_path))?;
        Ok(DataDir { path: path.to_owned(), _lock: lock })
    }

    /// Reads what the directory holds, for a server of `cores` cores; a new directory starts
    /// with tokens above `first_token_after`.
    pub fn recover(&self, cores: usize, first_token_after: u64) -> Result<Recovery, StoreError> {
        let current = self.path.join("CURRENT");
        let generation = match fs::read_to_string(&current) {
            Ok(name) => name.trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let seed = Seed::random();
                let empty = Everything { next_token: first_token_after + 1, ..Everything::default() };
                self.create_generation(1, cores, seed, empty)?;
                return self.recover(cores, first_token_after);
            }
            Err(error) => return Err(StoreError::Io { path: current, error }),
        };
        let gen_dir = self.path.join(&generation);
        let meta = Meta::read(&gen_dir.join("META"))?;
        let number: u64 = generation.strip_prefix("gen-").and_then(|n| n.parse().ok()).ok_or_else(|| {
            StoreError::Unreadable {
                path: current.clone(),
                reason: format!("{generation:?} is not a generation"),
            }
        })?;
        let core_dirs: Vec<PathBuf> = (0..meta.cores).map(|i| gen_dir.join(format!("core-{i}"))).collect();
        // Each core's directory is read on a thread of its own: recovery of a large state is
        // bound by decoding, which the cores share out.
        let read: Vec<Result<CoreStore, StoreError>> = std::thread::scope(|s| {
            let readers: Vec<_> = core_dirs.iter().map(|d| s.spawn(move || read_core(d))).collect();
            readers.into_iter().map(|r| r.join().expect("a recovery thread panicked")).collect()
        });
        let mut read = read.into_iter().collect::<Result<Vec<_>, _>>()?;
        let mut states: Vec<Recovered> = read.iter_mut().map(|c| std::mem::take(&mut c.recovered)).collect();
        open_sessions_only(&mut states);
        for (core, state) in read.iter_mut().zip(states) {
            core.recovered = state;
        }
        let next_token = read.iter().map(|c| c.recovered.next_token).max().unwrap_or(1);
        if meta.cores == cores {
            return Ok(Recovery { cores: read, hasher: meta.seed.hasher(), next_token });
        }
        crate::log!(
            Level::Info,
            "the data directory was written by {} cores, this server runs {cores}: sharing its locks out anew",
            meta.cores
        );
        let max_session = read.iter().map(|c| c.recovered.max_session).max().unwrap_or(0);
        let sessions = read.iter().flat_map(|c| c.recovered.sessions.clone()).collect();
        let locks = read.into_iter().flat_map(|c| c.recovered.locks).collect();
        let all = Everything { locks, sessions, next_token, max_session };
        self.create_generation(number + 1, cores, meta.seed, all)?;
        let _ = fs::remove_dir_all(&gen_dir);
        self.recover(cores, first_token_after)
    }

    /// Writes generation `number`: its META, and per core a snapshot of its share of `all`
    /// (locks routed with `seed`, sessions to their home), then makes it current.
    fn create_generation(
        &self,
        number: u64,
        cores: usize,
        seed: Seed,
        all: Everything,
    ) -> Result<(), StoreError> {
        let Everything { locks, sessions, next_token, max_session } = all;
        let gen_dir = self.path.join(format!("gen-{number}"));
        let _ = fs::remove_dir_all(&gen_dir);
        fs::create_dir_all(&gen_dir).map_err(io_at(&gen_dir))?;
        let router = crate::route::Router::new(seed.hasher(), cores);
        let mut shares: Vec<Vec<RecoveredLock>> = (0..cores).map(|_| Vec::new()).collect();
        for lock in locks {
            shares[router.owner(&lock.resource)].push(lock);
        }
        for (i, share) in shares.iter().enumerate() {
            let dir = gen_dir.join(format!("core-{i}"));
            fs::create_dir_all(&dir).map_err(io_at(&dir))?;
            // The snapshot is written in a clock that starts at 0: each lease's deadline is
            // what was left of it.
            let grants = share.iter().map(|l| Record::Grant {
                token: l.token,
                deadline: l.remaining,
                session: l.session,
                resource: &l.resource,
                owner: &l.owner,
            });
            let homed = sessions.iter().filter(|&&(id, _)| (id % cores as u64) as usize == i).copied();
            // The first core's snapshot keeps the highest session id seen, so that none is
            // handed out twice: a session record stands in for it (it ends at once).
            let marker = (i == 0 && max_session > 0 && !sessions.iter().any(|&(id, _)| id == max_session))
                .then_some(max_session);
            let bytes = encode_snapshot(grants, homed, marker, next_token, 0);
            write_durably(&dir.join(file_name(1, SNAPSHOT)), &bytes)?;
            sync_dir(&dir)?;
        }
        Meta { cores, seed }.write(&gen_dir.join("META"))?;
        sync_dir(&gen_dir)?;
        let tmp = self.path.join("CURRENT.tmp");
        write_durably(&tmp, format!("gen-{number}\n").as_bytes())?;
        let current = self.path.join("CURRENT");
        fs::rename(&tmp, &current).map_err(io_at(&current))?;
        sync_dir(&self.path)
    }
}

/// File name suffixes.
pub const SNAPSHOT: &str = "snap";
pub const SEGMENT: &str = "wal";

/// `<seq>.<kind>`, zero-padded so that names sort in order.
pub fn file_name(seq: u64, kind: &str) -> String {
    format!("{seq:020}.{kind}")
}

fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (seq, kind) = name.split_once('.')?;
    Some((seq.parse().ok()?, kind))
}

/// What a snapshot holds, as the recovery of a whole directory found it.
#[derive(Default)]
struct Everything {
    locks: Vec<RecoveredLock>,
    sessions: Vec<(u64, u64)>,
    next_token: u64,
    max_session: u64,
}

/// A snapshot's bytes: a `Tokens` record, every open session's `SessionOpen`, every lock's
/// `Grant`, and `SnapshotEnd`, in batches of about [`SNAPSHOT_BATCH_BYTES`] stamped `at`.
/// `ended_session`: an id above the open ones that must not be handed out again, kept as a
/// session that opens and ends.
pub fn encode_snapshot<'a>(
    grants: impl Iterator<Item = Record<'a>>,
    sessions: impl Iterator<Item = (u64, u64)>,
    ended_session: Option<u64>,
    next_token: u64,
    at: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = Vec::with_capacity(SNAPSHOT_BATCH_BYTES + 4096);
    let mut seq = 0;
    let mut cut = |out: &mut Vec<u8>, body: &mut Vec<u8>| {
        seq += 1;
        record::encode_batch(out, seq, at, body);
        body.clear();
    };
    record::encode(&mut body, &Record::Tokens { next: next_token });
    for (id, timeout_ms) in sessions {
        record::encode(&mut body, &Record::SessionOpen { id, timeout_ms });
    }
    if let Some(id) = ended_session {
        record::encode(&mut body, &Record::SessionOpen { id, timeout_ms: 0 });
        record::encode(&mut body, &Record::SessionEnd { id });
    }
    let mut locks = 0;
    for grant in grants {
        record::encode(&mut body, &grant);
        locks += 1;
        if body.len() >= SNAPSHOT_BATCH_BYTES {
            cut(&mut out, &mut body);
        }
    }
    record::encode(&mut body, &Record::SnapshotEnd { locks });
    cut(&mut out, &mut body);
    out
}

/// Reads one core's directory: its newest whole snapshot and the segments from it on.
/// Cuts a torn tail off the last segment, and removes files that a newer snapshot covers.
fn read_core(dir: &Path) -> Result<CoreStore, StoreError> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_name) {
            Some((seq, SNAPSHOT)) => snapshots.push(seq),
            Some((seq, SEGMENT)) => segments.push(seq),
            _ => {}
        }
    }
    snapshots.sort_unstable();
    segments.sort_unstable();
    let last_seq = snapshots.iter().chain(&segments).max().copied().unwrap_or(0);
    let mut replay = Replay::new();
    let mut base = 0;
    let mut snapshot_bytes = 0;
    while let Some(seq) = snapshots.pop() {
        let path = dir.join(file_name(seq, SNAPSHOT));
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let decoded = record::decode_file(&bytes).map_err(|d| StoreError::Damaged {
            path: path.clone(),
            offset: d.offset,
            reason: d.reason,
        })?;
        let whole =
            decoded.good == bytes.len() && decoded.batches.last().is_some_and(|b| ends_snapshot(b.body));
        if !whole {
            // A crash while it was being written: the snapshot before it, and the segments
            // since, still hold everything.
            crate::log!(Level::Warn, "{}: an unfinished snapshot; removed", path.display());
            fs::remove_file(&path).map_err(io_at(&path))?;
            continue;
        }
        for batch in &decoded.batches {
            replay.batch(batch).map_err(|reason| StoreError::Damaged {
                path: path.clone(),
                offset: 0,
                reason,
            })?;
        }
        base = seq;
        snapshot_bytes = bytes.len() as u64;
        break;
    }
    let live: Vec<u64> = segments.iter().copied().filter(|&s| s >= base).collect();
    for (i, &seq) in live.iter().enumerate() {
        let path = dir.join(file_name(seq, SEGMENT));
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let decoded = record::decode_file(&bytes).map_err(|d| StoreError::Damaged {
            path: path.clone(),
            offset: d.offset,
            reason: d.reason,
        })?;
        if decoded.torn > 0 {
            if i + 1 < live.len() {
                return Err(StoreError::Damaged {
                    path,
                    offset: decoded.good,
                    reason: "a batch cut short before the last segment",
                });
            }
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
        } else if decoded.good < bytes.len() {
            // Room the segment had for writes that never came: given back. Not synced: should
            // a crash undo the cut, the zeros are read as room again.
            let file = OpenOptions::new().write(true).open(&path).map_err(io_at(&path))?;
            file.set_len(decoded.good as u64).map_err(io_at(&path))?;
        }
        let mut offset = 0;
        for batch in &decoded.batches {
            replay.batch(batch).map_err(|reason| StoreError::Damaged {
                path: path.clone(),
                offset,
                reason,
            })?;
            offset += record::BATCH_HEADER_BYTES + batch.body.len();
        }
    }
    remove_covered(dir, base)?;
    Ok(CoreStore { dir: dir.to_owned(), next_seq: last_seq + 1, recovered: replay.finish(), snapshot_bytes })
}

/// Removes the files a whole snapshot `base` covers: every snapshot and segment numbered
/// below it.
pub fn remove_covered(dir: &Path, base: u64) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        if let Some((seq, SNAPSHOT | SEGMENT)) = entry.file_name().to_str().and_then(parse_name)
            && seq < base
        {
            fs::remove_file(entry.path()).map_err(io_at(&entry.path()))?;
        }
    }
    Ok(())
}

fn ends_snapshot(body: &[u8]) -> bool {
    Records::new(body).last().is_some_and(|r| matches!(r, Ok(Record::SnapshotEnd { .. })))
}

/// Writes `bytes` as a new file at `path` and makes it durable.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = File::create(path).map_err(io_at(path))?;
    file.write_all(bytes).map_err(io_at(path))?;
    file.sync_all().map_err(io_at(path))
}

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

/// The routing hash's seed, kept so that a name belongs to the same core across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seed(u64, u64);

impl Seed {
    fn random() -> Seed {
        use std::hash::{BuildHasher, Hasher};
        // Two draws from the standard library's randomly keyed hasher (seeded by the OS).
        let draw = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.finish()
        };
        Seed(draw(1), draw(2))
    }

    fn hasher(self) -> ResourceHasher {
        ResourceHasher::with_seed(self.0, self.1)
    }
}

/// A generation's shape.
struct Meta {
    cores: usize,
    seed: Seed,
}

impl Meta {
    const HEADER: &str = "ringlock data 1";

    fn write(&self, path: &Path) -> Result<(), StoreError> {
        let text = format!("{}\ncores {}\nseed {} {}\n", Meta::HEADER, self.cores, self.seed.0, self.seed.1);
        write_durably(path, text.as_bytes())
    }

    fn read(path: &Path) -> Result<Meta, StoreError> {
        let text = fs::read_to_string(path).map_err(io_at(path))?;
        let unreadable = || StoreError::Unreadable {
            path: path.to_owned(),
            reason: format!(
                "not a ringlock data directory of a version this server reads (expected {:?})",
                Meta::HEADER
            ),
        };
        let mut lines = text.lines();
        if lines.next() != Some(Meta::HEADER) {
            return Err(unreadable());
        }
        let cores = lines
            .next()
            .and_then(|l| l.strip_prefix("cores "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(unreadable)?;
        let seed = lines
            .next()
            .and_then(|l| l.strip_prefix("seed "))
            .and_then(|s| s.split_once(' '))
            .and_then(|(a, b)| Some(Seed(a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(unreadable)?;
        Ok(Meta { cores, seed })
    }
}
