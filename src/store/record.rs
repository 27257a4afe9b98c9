//! The log's record format: pure, no I/O, no clock. A log segment and a snapshot are both a
//! sequence of **batches**; a batch is what one group commit writes (one write, one sync):
//!
//! ```text
//! u32 len      bytes after the crc field
//! u32 crc      CRC-32 (IEEE) of those bytes
//! u64 seq      the batch's number, rising by one within a file
//! u64 at       the writing core's clock (ms) when the batch was cut
//! records...
//! ```
//!
//! and a record is a kind byte and fixed little-endian fields (names as `u16` length + UTF-8):
//!
//! | kind | record | fields |
//! |---|---|---|
//! | 1 | `Grant` | token u64, deadline u64 (`u64::MAX`: none), session u64 (0: none), resource, owner |
//! | 2 | `Release` | token u64 |
//! | 3 | `Extend` | token u64, deadline u64 |
//! | 4 | `Expire` | token u64 |
//! | 5 | `Run` | at u64: a new run of the server begins; its clock starts here |
//! | 6 | `Tokens` | next u64: no token below this may be handed out again |
//! | 7 | `SnapshotEnd` | locks u64: the snapshot is whole, and held this many locks |
//! | 8 | `SessionOpen` | id u64, timeout ms u64: a resumable session began |
//! | 9 | `SessionEnd` | id u64: it ended (its timeout ran out with no connection) |
//! | 10 | `Lead` | at u64, grace ms u64: a new cluster leader's clock starts here, and every running lease gets the grace on top of what was left |
//!
//! Deadlines are ticks of the run's clock (ms since that run's server started): a lease held
//! through tick `deadline - 1` and over at `deadline`, exactly as the shard keeps it.
//!
//! [`decode_batch`] reads one batch: `Ok(None)` for a torn tail (the bytes run out, or stop
//! being a batch, at the end of the file: a crash mid-write), an error with the offset for
//! damage (a bad batch with more after it).

/// Bytes of a batch's header: length, crc, seq, at.
pub const BATCH_HEADER_BYTES: usize = 4 + 4 + 8 + 8;
/// Largest batch accepted when reading, in bytes: a snapshot writes batches of at most
/// [`SNAPSHOT_BATCH_BYTES`], and one turn's records stay far below this; a length field above
/// it is damage, not a batch.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// A snapshot's records are cut into batches of about this many bytes, so that reading one
/// never needs a large buffer and a torn snapshot is found early.
pub const SNAPSHOT_BATCH_BYTES: usize = 64 * 1024;
/// Deadline value for "no expiry".
const NO_DEADLINE: u64 = u64::MAX;
/// The session of a lock bound to one connection (a version 1 wire session): the connection
/// cannot outlive the process, so recovery releases such a lock, as its connection closing
/// would have.
pub const CONNECTION_SESSION: u64 = u64::MAX;

mod kind {
    pub const GRANT: u8 = 1;
    pub const RELEASE: u8 = 2;
    pub const EXTEND: u8 = 3;
    pub const EXPIRE: u8 = 4;
    pub const RUN: u8 = 5;
    pub const TOKENS: u8 = 6;
    pub const SNAPSHOT_END: u8 = 7;
    pub const SESSION_OPEN: u8 = 8;
    pub const SESSION_END: u8 = 9;
    pub const LEAD: u8 = 10;
}

/// One state change (or marker) in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// `resource` is `owner`'s under `token`, until `deadline` (a tick) or until released.
    /// `session`: the session that holds it (0 for none).
    Grant { token: u64, deadline: Option<u64>, session: u64, resource: &'a str, owner: &'a str },
    /// The lock granted under `token` was released by its holder.
    Release { token: u64 },
    /// The lease granted under `token` now ends at `deadline`.
    Extend { token: u64, deadline: Option<u64> },
    /// The lease granted under `token` ran out.
    Expire { token: u64 },
    /// The server started anew: its clock read `at` when it recovered what came before.
    Run { at: u64 },
    /// No token below `next` may be handed out again.
    Tokens { next: u64 },
    /// The snapshot that ends here is whole; it held `locks` locks.
    SnapshotEnd { locks: u64 },
    /// The resumable session `id` began; it outlives a connection for `timeout_ms`.
    SessionOpen { id: u64, timeout_ms: u64 },
    /// The session `id` ended: its locks go (each core logs its own releases).
    SessionEnd { id: u64 },
    /// A new leader of a cluster took over: like [`Record::Run`] (its clock read `at`), and
    /// what was left of each lease also gets `grace_ms` more, so that no lease ends early
    /// across a failover (the grace covers the election that the old leader's clients could
    /// not renew through).
    Lead { at: u64, grace_ms: u64 },
}

/// A batch as read: its number, its time and its records' bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    pub seq: u64,
    pub at: u64,
    /// The records, to be read with [`Records`].
    pub body: &'a [u8],
}

/// Why bytes could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Bytes from the start of what was given to the first bad byte's batch.
    pub offset: usize,
    pub reason: &'static str,
}

/// Appends the record to `out` (a batch body under construction).
pub fn encode(out: &mut Vec<u8>, record: &Record<'_>) {
    let deadline = |d: Option<u64>| d.unwrap_or(NO_DEADLINE).to_le_bytes();
    match record {
        Record::Grant { token, deadline: d, session, resource, owner } => {
            out.push(kind::GRANT);
            out.extend_from_slice(&token.to_le_bytes());
            out.extend_from_slice(&deadline(*d));
            out.extend_from_slice(&session.to_le_bytes());
            put_str(out, resource);
            put_str(out, owner);
        }
        Record::Release { token } => tagged(out, kind::RELEASE, *token),
        Record::Extend { token, deadline: d } => {
            tagged(out, kind::EXTEND, *token);
            out.extend_from_slice(&deadline(*d));
        }
        Record::Expire { token } => tagged(out, kind::EXPIRE, *token),
        Record::Run { at } => tagged(out, kind::RUN, *at),
        Record::Tokens { next } => tagged(out, kind::TOKENS, *next),
        Record::SnapshotEnd { locks } => tagged(out, kind::SNAPSHOT_END, *locks),
        Record::SessionOpen { id, timeout_ms } => {
            tagged(out, kind::SESSION_OPEN, *id);
            out.extend_from_slice(&timeout_ms.to_le_bytes());
        }
        Record::SessionEnd { id } => tagged(out, kind::SESSION_END, *id),
        Record::Lead { at, grace_ms } => {
            tagged(out, kind::LEAD, *at);
            out.extend_from_slice(&grace_ms.to_le_bytes());
        }
    }
}

fn tagged(out: &mut Vec<u8>, kind: u8, value: u64) {
    out.push(kind);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names are bounded by the configured limits (at most 4000 bytes), far below u16::MAX.
    debug_assert!(s.len() <= usize::from(u16::MAX));
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a whole batch to `out`: header, then `body` (records made by [`encode`]).
pub fn encode_batch(out: &mut Vec<u8>, seq: u64, at: u64, body: &[u8]) {
    let len = (8 + 8 + body.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the batch at the start of `buf`: `Ok(Some((batch, len)))`, a good batch of `len`
/// bytes; `Ok(None)`, no whole batch there (nothing, a batch cut short, or a length no batch
/// has, such as zeros); `Err`, a whole batch whose checksum fails. Whether a bad batch is a
/// torn tail or damage depends on what follows it: see [`decode_file`].
pub fn decode_batch(buf: &[u8]) -> Result<Option<(Batch<'_>, usize)>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some(head) = buf.first_chunk::<BATCH_HEADER_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if !(16..=MAX_BATCH_BYTES).contains(&len) {
        // A length no batch has: zeros left by a crash before the data reached the disk, or
        // garbage. Either way a torn tail if nothing good follows, which the caller checks.
        return Ok(None);
    }
    let Some(rest) = buf.get(8..8 + len) else {
        return Ok(None);
    };
    if crc32fast::hash(rest) != crc {
        return Err("batch checksum mismatch");
    }
    let seq = u64::from_le_bytes(rest[0..8].try_into().expect("8 bytes"));
    let at = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
    Ok(Some((Batch { seq, at, body: &rest[16..] }, 8 + len)))
}

/// Reads every batch of a whole file's bytes. A bad batch is a torn tail if it is the last
/// thing in the file (nothing after it decodes as a batch), else damage. Zeros to the end are
/// room the file was given ahead of its writes (`store::wal`), not a tail: nothing was written
/// there.
pub fn decode_file(buf: &[u8]) -> Result<Decoded<'_>, Damage> {
    let mut batches = Vec::new();
    let mut at = 0;
    loop {
        match decode_batch(&buf[at..]) {
            Ok(Some((batch, len))) => {
                batches.push(batch);
                at += len;
            }
            Ok(None) | Err(_) => {
                // What was written after the good batches: up to the zeros that end the file.
                let written = buf[at..].iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                if later_batch(&buf[at..], written) {
                    let reason = decode_batch(&buf[at..]).err().unwrap_or("unreadable batch");
                    return Err(Damage { offset: at, reason });
                }
                return Ok(Decoded { batches, good: at, torn: written });
            }
        }
    }
}

/// Whether a good batch starts anywhere after the first byte of `rest` (then the bad bytes
/// before it are damage, not a torn tail). Only the first `written` bytes can hold its start:
/// a batch's length is not zero, so a batch starting in the zeros after them would hold a byte
/// that is not zero past the last one there is; the room after a torn tail is not searched.
fn later_batch(rest: &[u8], written: usize) -> bool {
    (1..written).any(|i| matches!(decode_batch(&rest[i..]), Ok(Some(_))))
}

/// What [`decode_file`] read.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub batches: Vec<Batch<'a>>,
    /// Bytes of good batches: where the file is cut if its tail was torn. Zeros may follow
    /// (room for writes that never came).
    pub good: usize,
    /// Bytes of a torn tail after `good`, not counting the zeros that end the file (0: none,
    /// the log ends at `good`).
    pub torn: usize,
}

/// The records of a batch body, in order.
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    pub fn new(body: &'a [u8]) -> Records<'a> {
        Records { rest: body }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.rest.len() < n {
            return Err("record cut short");
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn deadline(&mut self) -> Result<Option<u64>, &'static str> {
        Ok(Some(self.u64()?).filter(|&d| d != NO_DEADLINE))
    }

    fn text(&mut self) -> Result<&'a str, &'static str> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        std::str::from_utf8(self.take(usize::from(n))?).map_err(|_| "name is not UTF-8")
    }

    fn record(&mut self) -> Result<Record<'a>, &'static str> {
        Ok(match self.take(1)?[0] {
            kind::GRANT => Record::Grant {
                token: self.u64()?,
                deadline: self.deadline()?,
                session: self.u64()?,
                resource: self.text()?,
                owner: self.text()?,
            },
            kind::RELEASE => Record::Release { token: self.u64()? },
            kind::EXTEND => Record::Extend { token: self.u64()?, deadline: self.deadline()? },
            kind::EXPIRE => Record::Expire { token: self.u64()? },
            kind::RUN => Record::Run { at: self.u64()? },
            kind::TOKENS => Record::Tokens { next: self.u64()? },
            kind::SNAPSHOT_END => Record::SnapshotEnd { locks: self.u64()? },
            kind::SESSION_OPEN => Record::SessionOpen { id: self.u64()?, timeout_ms: self.u64()? },
            kind::SESSION_END => Record::SessionEnd { id: self.u64()? },
            kind::LEAD => Record::Lead { at: self.u64()?, grace_ms: self.u64()? },
            _ => return Err("unknown record kind"),
        })
    }
}

impl<'a> Iterator for Records<'a> {
    /// A record, or why the body cannot be read (a batch that passed its checksum but does
    /// not parse was written by another version, or is a bug: damage either way).
    type Item = Result<Record<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.record();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        records.iter().for_each(|r| encode(&mut out, r));
        out
    }

    fn batch(seq: u64, at: u64, records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_batch(&mut out, seq, at, &body(records));
        out
    }

    #[test]
    fn a_grant_and_its_release_byte_for_byte() {
        let grant =
            Record::Grant { token: 7, deadline: Some(30_001), session: 0, resource: "r1", owner: "w" };
        let bytes = batch(3, 12, &[grant.clone(), Record::Release { token: 7 }]);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            57, 0, 0, 0,                              // length after the crc
            0, 0, 0, 0,                               // crc (checked below)
            3, 0, 0, 0, 0, 0, 0, 0,                   // seq 3
            12, 0, 0, 0, 0, 0, 0, 0,                  // at tick 12
            1,                                        // GRANT
            7, 0, 0, 0, 0, 0, 0, 0,                   // token 7
            0x31, 0x75, 0, 0, 0, 0, 0, 0,             // deadline 30001
            0, 0, 0, 0, 0, 0, 0, 0,                   // no session
            2, 0, b'r', b'1',                         // resource
            1, 0, b'w',                               // owner
            2,                                        // RELEASE
            7, 0, 0, 0, 0, 0, 0, 0,                   // token 7
        ];
        assert_eq!(bytes[..4], expected[..4]);
        assert_eq!(bytes[8..], expected[8..]);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), crc32fast::hash(&bytes[8..]));
        let (b, len) = decode_batch(&bytes).unwrap().unwrap();
        assert_eq!((b.seq, b.at, len), (3, 12, bytes.len()));
        let records: Vec<_> = Records::new(b.body).collect::<Result<_, _>>().unwrap();
        assert_eq!(records, vec![grant, Record::Release { token: 7 }]);
        // A grant and its release cost 41 bytes of records (names of 2 and 1 bytes).
        assert_eq!(b.body.len(), 41);
    }

    #[test]
    fn every_record_round_trips() {
        let records = [
            Record::Grant { token: 1, deadline: None, session: 9, resource: "ä/b", owner: "" },
            Record::Release { token: u64::MAX - 1 },
            Record::Extend { token: 2, deadline: Some(0) },
            Record::Extend { token: 2, deadline: None },
            Record::Expire { token: 3 },
            Record::Run { at: 99 },
            Record::Tokens { next: 1 << 40 },
            Record::SnapshotEnd { locks: 5 },
            Record::SessionOpen { id: 3, timeout_ms: 10_000 },
            Record::SessionEnd { id: 3 },
            Record::Lead { at: 12, grace_ms: 600 },
        ];
        let b = body(&records);
        assert_eq!(Records::new(&b).collect::<Result<Vec<_>, _>>().unwrap(), records);
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_damaged_middle_is_named() {
        let mut file = batch(1, 0, &[Record::Run { at: 0 }]);
        let first = file.len();
        file.extend(batch(2, 5, &[Record::Release { token: 4 }]));
        let whole = file.len();
        let good = decode_file(&file).unwrap();
        assert_eq!((good.batches.len(), good.good, good.torn), (2, whole, 0));
        // Cut anywhere inside the second batch: the first survives, the rest is a torn tail.
        for cut in first + 1..whole {
            let d = decode_file(&file[..cut]).unwrap();
            // The tail is counted up to its last byte that is not zero.
            let written = file[first..cut].iter().rposition(|&b| b != 0).unwrap() + 1;
            assert_eq!((d.batches.len(), d.good, d.torn), (1, first, written), "cut at {cut}");
        }
        // Zeros after the last batch (room the file was given ahead of its writes): the end of
        // the log, not a torn tail.
        let mut zeros = file.clone();
        zeros.extend([0; 100]);
        let d = decode_file(&zeros).unwrap();
        assert_eq!((d.batches.len(), d.good, d.torn), (2, whole, 0));
        // A batch cut short with zeros after it (its first bytes reached the disk, the rest
        // not): a torn tail.
        let mut cut = file[..first + 6].to_vec();
        cut.extend([0; 100]);
        let d = decode_file(&cut).unwrap();
        assert_eq!((d.batches.len(), d.good), (1, first));
        assert!((1..=whole - 3 - first).contains(&d.torn), "{} bytes torn", d.torn);
        // Zeros where a batch should be, with a good batch after them: damage.
        let mut gap = file[..first].to_vec();
        gap.extend([0; 40]);
        gap.extend(batch(3, 5, &[Record::Release { token: 4 }]));
        assert_eq!(decode_file(&gap), Err(Damage { offset: first, reason: "unreadable batch" }));
        // A flipped bit in the first batch, with a good batch after it: damage, at offset 0.
        let mut bad = file.clone();
        bad[BATCH_HEADER_BYTES] ^= 1;
        assert_eq!(decode_file(&bad), Err(Damage { offset: 0, reason: "batch checksum mismatch" }));
        // The same bit flipped in the last batch: a torn tail (it was being written).
        let mut last = file.clone();
        last[first + BATCH_HEADER_BYTES] ^= 1;
        assert_eq!(decode_file(&last).unwrap().good, first);
    }

    #[test]
    fn partial_headers_are_incomplete_not_errors() {
        let b = batch(1, 0, &[Record::Expire { token: 1 }]);
        for end in 0..b.len() {
            assert_eq!(decode_batch(&b[..end]), Ok(None), "prefix of {end}");
        }
    }

    #[test]
    fn bodies_that_do_not_parse_are_errors() {
        assert_eq!(Records::new(&[99]).next(), Some(Err("unknown record kind")));
        assert_eq!(Records::new(&[2, 1, 2]).next(), Some(Err("record cut short")));
        assert_eq!(Records::new(&[1]).count(), 1);
    }
}
