//! The storage's floor: how long one small append and its `fdatasync` take on the file system
//! a server's data directory is on, measured as a durable server does its group commit (one
//! write of a batch at the end of a file, then one sync). A durable lock server cannot answer
//! a change faster than this; `compare.sh` prints it beside the servers' latencies. With room
//! (`--room`) the file is first given space for every append, as ringlock's log is: then a
//! sync has no change of the file's size to commit, and costs less.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What [`probe`] measured, in microseconds.
#[derive(Debug, Serialize)]
pub struct Floor {
    /// Appends measured.
    pub count: usize,
    /// Bytes each append wrote.
    pub bytes: usize,
    /// Whether the file was given room first.
    pub room: bool,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Appends `bytes` bytes `count` times to a new file in `dir`, each followed by `fdatasync`,
/// and times each pair; the file is removed after. With `room`, the file is first given space
/// for all of them (and synced).
pub fn probe(dir: &Path, count: usize, bytes: usize, room: bool) -> io::Result<Floor> {
    let path = dir.join(format!("loadtest-fsync-{}", std::process::id()));
    let file = OpenOptions::new().create_new(true).write(true).open(&path)?;
    let block = vec![0x5A; bytes];
    let mut times = Histogram::<u64>::new(3).expect("a histogram");
    let mut at = 0;
    let measured = (|| {
        if room {
            let len = (count * bytes) as libc::off_t;
            // SAFETY: fallocate on a file we own, with no pointers.
            if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } != 0 {
                return Err(io::Error::last_os_error());
            }
            file.sync_all()?;
        }
        for _ in 0..count {
            let started = Instant::now();
            file.write_all_at(&block, at)?;
            file.sync_data()?;
            times.saturating_record(started.elapsed().as_micros() as u64);
            at += bytes as u64;
        }
        io::Result::Ok(())
    })();
    drop(file);
    std::fs::remove_file(&path)?;
    measured?;
    let _ = io::stdout().flush();
    Ok(Floor {
        count,
        bytes,
        room,
        p50_us: times.value_at_quantile(0.5),
        p99_us: times.value_at_quantile(0.99),
        max_us: times.max(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_times_every_append_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("loadtest-fsync-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for room in [false, true] {
            let floor = probe(&dir, 20, 64, room).unwrap();
            assert_eq!((floor.count, floor.bytes, floor.room), (20, 64, room));
            assert!(floor.p50_us <= floor.p99_us && floor.p99_us <= floor.max_us);
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the probe file is gone");
        }
        std::fs::remove_dir(&dir).unwrap();
    }
}
