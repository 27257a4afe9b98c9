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

use std::collections::VecDeque;

/// Bytes of names kept before the names of delivered grants are dropped from the front, when
/// some grant is always unsent (a connection pipelining without pause).
const NAMES_KEPT_BYTES: usize = 64 * 1024;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct UnsentGrants {
    /// Bytes that have left the connection's answer buffer for its writer.
    taken: u64,
    /// Bytes the kernel has taken.
    sent: u64,
    /// The position just after each grant's answer, oldest first: apart from the rest of what
    /// is kept of it (`grants`, in the same order), so that what the kernel took is told by
    /// reading these alone (a connection's grants are cold by the time its answers went out,
    /// and each line read costs; BENCHMARKS.md, "In memory, before and after").
    ends: VecDeque<u64>,
    grants: VecDeque<Grant>,
    /// The names of the grants, one after another (resource, then owner), from the oldest's:
    /// one buffer for all of them, emptied whenever every grant is delivered, so a grant costs
    /// no allocation of its own.
    names: String,
    /// Bytes at the front of `names` that belong to delivered grants.
    dropped: usize,
}

#[derive(Debug)]
struct Grant {
    token: u64,
    /// Where its names start in `names` (counting the dropped bytes), and their lengths.
    at: usize,
    resource_len: usize,
    owner_len: usize,
}

impl UnsentGrants {
    /// A grant of `resource` to `owner` under `token`, whose answer ends `end` bytes into the
    /// answer buffer as it is now.
    pub fn record(&mut self, end: usize, resource: &str, owner: &str, token: u64) {
        let grant = Grant {
            token,
            at: self.dropped + self.names.len(),
            resource_len: resource.len(),
            owner_len: owner.len(),
        };
        self.names.push_str(resource);
        self.names.push_str(owner);
        self.ends.push_back(self.taken + end as u64);
        self.grants.push_back(grant);
    }

    /// The writer took the first `n` bytes of the answer buffer.
    pub fn taken(&mut self, n: usize) {
        self.taken += n as u64;
    }

    /// The kernel took `n` more bytes.
    pub fn sent(&mut self, n: usize) {
        self.sent += n as u64;
        let delivered = self.ends.partition_point(|&end| end <= self.sent);
        self.ends.drain(..delivered);
        self.grants.drain(..delivered);
        if self.grants.is_empty() {
            self.names.clear();
            self.dropped = 0;
        } else if self.names.len() > NAMES_KEPT_BYTES {
            let oldest = self.grants[0].at;
            if oldest - self.dropped > NAMES_KEPT_BYTES {
                self.names.drain(..oldest - self.dropped);
                self.dropped = oldest;
            }
        }
    }

    /// The grants whose answers never reached the kernel, as `(resource, owner, token)`.
    pub fn drain(&mut self) -> impl Iterator<Item = (String, String, u64)> + '_ {
        let (names, dropped) = (&self.names, self.dropped);
        self.ends.clear();
        self.grants.drain(..).map(move |g| {
            let resource = &names[g.at - dropped..][..g.resource_len];
            let owner = &names[g.at - dropped + g.resource_len..][..g.owner_len];
            (resource.to_owned(), owner.to_owned(), g.token)
        })
    }
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
    fn names_of_delivered_grants_are_dropped_while_others_wait() {
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
            assert!(u.names.len() <= NAMES_KEPT_BYTES + 2 * 1008, "{} bytes kept", u.names.len());
        }
        let left: Vec<_> = u.drain().collect();
        assert_eq!(left, [(name(999), "o".into(), 999)]);
    }
}
