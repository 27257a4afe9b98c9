//! A core's log writer: the one place where the log is written and synced, on the core's own
//! io_uring. A batch is one write and one `fdatasync` ([`Fsync::Always`]); `tokio-uring` has
//! no linked operations, so the write is awaited before its sync is submitted.
//!
//! Files are created, and directories synced, with plain blocking calls: that happens once at
//! start-up and once per snapshot, never per batch.
//!
//! A segment is given room ahead of its writes ([`ROOM_BYTES`] at a time, `fallocate`): a batch
//! then lands inside the file's length, in blocks it already has, so its `fdatasync` has no
//! change of size or allocation to commit with it, and takes about a third less here (p50
//! 130 against 195 µs for an 80-byte write, docs/DURABILITY.md). The room reads as zeros, which
//! recovery takes for the end of the log ([`super::record::decode_file`]). Room is best effort:
//! where `fallocate` fails (a file system without it, a disk without that much left) batches are
//! plain appends.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use super::dir::{SEGMENT, SNAPSHOT, file_name, sync_dir};
use super::record;

/// Bytes of room a segment is given at a time, ahead of its writes.
pub const ROOM_BYTES: u64 = 4 * 1024 * 1024;

/// When the log reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// Every batch is synced before its answers go out: an acknowledged change survives a
    /// power loss.
    Always,
    /// Batches are written, and the kernel writes them back when it likes: an acknowledged
    /// change survives the process being killed, not a power loss (Redis's `appendfsync no`).
    Never,
}

/// A log segment being written.
pub struct Wal {
    dir: PathBuf,
    file: tokio_uring::fs::File,
    /// The segment's number.
    segment: u64,
    /// Where the next batch goes.
    offset: u64,
    /// A batch that would end past this asks for more room first.
    room: u64,
    /// The next batch's number within the segment.
    batch: u64,
    fsync: Fsync,
    /// The batch being written, kept so that a failed write can be made again.
    buf: Vec<u8>,
    /// Bytes written since the last snapshot.
    since_snapshot: u64,
}

impl Wal {
    /// Creates segment `seq` in `dir`, and makes its name durable.
    pub fn create(dir: &Path, seq: u64, fsync: Fsync) -> io::Result<Wal> {
        let file = create_file(dir, &file_name(seq, SEGMENT))?;
        Ok(Wal {
            dir: dir.to_owned(),
            file: tokio_uring::fs::File::from_std(file),
            segment: seq,
            offset: 0,
            room: 0,
            batch: 1,
            fsync,
            buf: Vec::new(),
            since_snapshot: 0,
        })
    }

    /// Writes the records `body` as one batch stamped `at`, and syncs it. On an error nothing
    /// is known to be on disk: call again with the same records, and the batch is written
    /// again over whatever part of it reached the file.
    pub async fn append(&mut self, at: u64, body: &[u8]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        record::encode_batch(&mut buf, self.batch, at, body);
        let len = buf.len() as u64;
        if self.offset + len > self.room {
            self.make_room(self.offset + len).await;
        }
        let (written, buf) = self.file.write_all_at(buf, self.offset).await;
        self.buf = buf;
        written?;
        if self.fsync == Fsync::Always {
            self.file.sync_data().await?;
        }
        self.offset += len;
        self.batch += 1;
        self.since_snapshot += len;
        Ok(())
    }

    /// Gives the segment room up to the next multiple of [`ROOM_BYTES`] past `end`. Whether
    /// or not `fallocate` succeeds, the next try is only past that: a failure leaves plain
    /// appends, which report a full disk themselves.
    async fn make_room(&mut self, end: u64) {
        let target = room_for(end);
        // Mode 0: allocate and extend the file's length; the new bytes read as zeros.
        let _ = self.file.fallocate(self.room, target - self.room, 0).await;
        self.room = target;
    }

    /// Bytes written since the last snapshot.
    pub fn since_snapshot(&self) -> u64 {
        self.since_snapshot
    }

    /// Starts the next segment; returns its number, which the snapshot of the state at this
    /// point takes too ([`write_snapshot`]).
    pub fn rotate(&mut self) -> io::Result<u64> {
        let next = Wal::create(&self.dir, self.segment + 1, self.fsync)?;
        let old = std::mem::replace(self, next);
        drop(old);
        Ok(self.segment)
    }

    /// The core's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The length a file is given room up to when a write would end at `end`: the next multiple
/// of [`ROOM_BYTES`] past it.
pub fn room_for(end: u64) -> u64 {
    (end / ROOM_BYTES + 1) * ROOM_BYTES
}

/// Writes snapshot `seq` (the whole state as [`super::dir::encode_snapshot`] made it), makes
/// it durable, then removes every file it covers.
pub async fn write_snapshot(dir: &Path, seq: u64, bytes: Vec<u8>) -> io::Result<()> {
    let name = file_name(seq, SNAPSHOT);
    let file = tokio_uring::fs::File::from_std(create_file(dir, &name)?);
    let (written, _) = file.write_all_at(bytes, 0).await;
    written?;
    file.sync_all().await?;
    file.close().await?;
    sync_dir(dir).map_err(io::Error::other)?;
    super::dir::remove_covered(dir, seq).map_err(io::Error::other)
}

/// Creates a new file `name` in `dir` (it must not exist) and syncs the directory.
fn create_file(dir: &Path, name: &str) -> io::Result<std::fs::File> {
    let path = dir.join(name);
    let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
    sync_dir(dir).map_err(io::Error::other)?;
    Ok(file)
}
