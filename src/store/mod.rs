//! Durable state: what makes locks survive a crash. Pure parts first: [`record`] (the log's
//! bytes) and [`recovery`] (folding a log back into locks). Then the only code that touches the
//! data directory's files: `dir` (the directory, its lock, reading what is there at start) and
//! `wal` (a core's log writer: one write and one sync per batch).

pub mod dir;
pub mod record;
pub mod recovery;
pub mod wal;
