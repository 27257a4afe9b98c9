//! Grants a connection has written into its answers but not yet handed to its socket. If the
//! connection ends first (the client went away, a write failed, the server ended it while an
//! answer waited for the log), the client never learns it holds the lock, and nobody would
//! release it: so what is still unsent when the connection goes is released on its behalf.
//! An answer the kernel took counts as delivered (whether the client read it, the server
//! cannot know; releasing a grant the client may have seen would give the lock to two).
//!
//! Positions count the connection's answer bytes from its first: a grant's answer ends at
//! some position, and is delivered once the kernel has taken that many bytes. Session locks
//! are not recorded here: the session releases all of them when the connection ends.
//!
//! Every grant is one record in one buffer, so that noting a grant writes a few adjacent
//! bytes, and a write that takes every answer (nearly every write) reads none of them back:
//! a pipelining connection's grants are cold by the time its answers go out, and each cache
//! line a connection touches a turn counts when many pipeline at once (BENCHMARKS.md, "In
//! memory, before and after").

/// Bytes of delivered records kept at the front of the buffer before they are dropped, when
/// some grant is always unsent (a connection pipelining without pause).
const DELIVERED_KEPT_BYTES: usize = 64 * 1024;

/// A record's fixed part: where its answer ends (`u64`), its token (`u64`), and the lengths
/// of its resource and owner (`u16` each: the limits keep names to 4,000 bytes), all
/// little-endian; the two names follow.
const HEADER_BYTES: usize = 20;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct UnsentGrants {
    /// Bytes that have left the connection's answer buffer for its writer.
    taken: u64,
    /// Bytes the kernel has taken.
    sent: u64,
    /// Where the newest grant's answer ends: once the kernel has taken that much, every
    /// grant is delivered, which is told without reading a record.
    newest_end: u64,
    /// The grants, oldest first (see [`HEADER_BYTES`]).
    records: Vec<u8>,
    /// Bytes at the front of `records` that belong to delivered grants.
    delivered: usize,
}

/// One record, read.
struct Grant<'a> {
    end: u64,
    token: u64,
    resource: &'a [u8],
    owner: &'a [u8],
    /// The record's length in bytes.
    len: usize,
}

impl UnsentGrants {
    /// A grant of `resource` to `owner` under `token`, whose answer ends `end` bytes into the
    /// answer buffer as it is now. A name longer than a record can say is not recorded (none
    /// is: the limits refuse it first); were one, its lease would still end.
    pub fn record(&mut self, end: usize, resource: &str, owner: &str, token: u64) {
        let (Ok(resource_len), Ok(owner_len)) = (u16::try_from(resource.len()), u16::try_from(owner.len()))
        else {
            return;
        };
        let end = self.taken + end as u64;
        self.newest_end = end;
        let r = &mut self.records;
        r.reserve(HEADER_BYTES + resource.len() + owner.len());
        r.extend_from_slice(&end.to_le_bytes());
        r.extend_from_slice(&token.to_le_bytes());
        r.extend_from_slice(&resource_len.to_le_bytes());
        r.extend_from_slice(&owner_len.to_le_bytes());
        r.extend_from_slice(resource.as_bytes());
        r.extend_from_slice(owner.as_bytes());
    }

    /// The writer took the first `n` bytes of the answer buffer.
    pub fn taken(&mut self, n: usize) {
        self.taken += n as u64;
    }

    /// The kernel took `n` more bytes.
    pub fn sent(&mut self, n: usize) {
        self.sent += n as u64;
        if self.sent >= self.newest_end {
            self.records.clear();
            self.delivered = 0;
            return;
        }
        while let Some(g) = read(&self.records[self.delivered..]) {
            if g.end > self.sent {
                break;
            }
            self.delivered += g.len;
        }
        if self.delivered > DELIVERED_KEPT_BYTES {
            self.records.drain(..self.delivered);
            self.delivered = 0;
        }
    }

    /// The grants whose answers never reached the kernel, as `(resource, owner, token)`.
    pub fn drain(&mut self) -> impl Iterator<Item = (String, String, u64)> + use<> {
        let records = std::mem::take(&mut self.records);
        let mut at = std::mem::take(&mut self.delivered);
        std::iter::from_fn(move || {
            let g = read(&records[at..])?;
            at += g.len;
            // The bytes were a `str`'s: nothing is replaced.
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            Some((text(g.resource), text(g.owner), g.token))
        })
    }
}

/// The record at the front of `b`, if there is one.
fn read(b: &[u8]) -> Option<Grant<'_>> {
    let header = b.get(..HEADER_BYTES)?;
    let u64_at = |i: usize| Some(u64::from_le_bytes(header[i..i + 8].try_into().ok()?));
    let u16_at = |i: usize| Some(usize::from(u16::from_le_bytes(header[i..i + 2].try_into().ok()?)));
    let (resource_len, owner_len) = (u16_at(16)?, u16_at(18)?);
    let len = HEADER_BYTES + resource_len + owner_len;
    let names = b.get(HEADER_BYTES..len)?;
    let (resource, owner) = names.split_at(resource_len);
    Some(Grant { end: u64_at(0)?, token: u64_at(8)?, resource, owner, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_delivered_once_the_kernel_took_its_last_byte() {
        let mut u = UnsentGrants::default();
        u.record(10, "a", "o", 1);
        u.record(25, "b", "p", 2);
        u.taken(25);
        u.record(5, "c", "q", 3);
        u.sent(9);
        u.sent(1);
        let left: Vec<_> = u.drain().collect();
        assert_eq!(left, [("b".into(), "p".into(), 2), ("c".into(), "q".into(), 3)]);
        u.record(4, "d", "", 4);
        u.sent(19);
        assert_eq!(u.drain().count(), 0, "30 bytes taken, 30 sent: delivered");
    }

    #[test]
    fn delivered_records_are_dropped_while_others_wait() {
        let mut u = UnsentGrants::default();
        let name = |n: u64| format!("r{n:05}-{}", "x".repeat(1000));
        // A connection that always has a grant unsent: one answer of 10 bytes recorded, taken,
        // and sent only after the next is recorded.
        for n in 0..1_000u64 {
            u.record(10, &name(n), "o", n);
            u.taken(10);
            if n > 0 {
                u.sent(10);
            }
            assert!(u.records.len() <= DELIVERED_KEPT_BYTES + 2 * 1029, "{} bytes kept", u.records.len());
        }
        let left: Vec<_> = u.drain().collect();
        assert_eq!(left, [(name(999), "o".into(), 999)]);
    }

    #[test]
    fn a_record_keeps_names_of_any_length_a_request_may_have() {
        let mut u = UnsentGrants::default();
        let (long, owner) = ("r".repeat(4_000), "\u{e9}".repeat(128));
        u.record(8, &long, &owner, 5);
        u.record(16, "", "o", 6);
        u.taken(16);
        u.sent(8);
        assert_eq!(u.drain().collect::<Vec<_>>(), [(String::new(), "o".into(), 6)]);
        u.record(4, &long, &owner, 7);
        assert_eq!(u.drain().collect::<Vec<_>>(), [(long, owner, 7)]);
    }
}
