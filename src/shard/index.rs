//! The name index: owns the order of a large shard's held locks by name, so that a list page
//! costs about its own size instead of a scan of the shard (paging through `N` locks would
//! otherwise cost `N` squared). Pure bookkeeping over names and hashes; the lock table finds
//! the locks themselves (through [`Lookup`]).
//!
//! # Shape
//! Sorted bounds cut the names into ranges, **buckets**: bucket `i` holds the locks whose
//! names are at least bound `i - 1` and below bound `i` (bucket 0 has no lower bound, the
//! last no upper one). A bucket keeps only its locks' 64-bit hashes, in a hash table used as
//! a multiset (two names may share a hash), and nothing in it is sorted until a list asks.
//! So a new name costs a binary search of the bounds and one insert, a removal the same and
//! one remove (the search compares 16-byte integers cut from the names after the prefix all
//! bounds share, and a name only where those are equal: a call to `memcmp` at each step cost
//! 300 ns a pair at a million locks), and a held lock 10 to 14 bytes (a hash and a control byte, in a table seven
//! eighths to two thirds full): a `BTreeSet` of names would cost each acquire and release a
//! dozen string comparisons through pointers and a node rebalance (measured at 160 to 420 ns
//! a pair, 3 to 8 times the lock table's own cost), and the name a second time.
//!
//! # Bounds
//! With `target` locks a bucket: a bucket is split at its median name once it holds `2 *
//! target` (into two of `target`), and, while there are two or more, merged into a neighbour
//! once it holds fewer than `target / 4` (rounded up). A page of `limit` locks therefore looks
//! at no more than `2 + 4 * limit / target` buckets (the first and last in part, each rounded
//! up), each of fewer than `2 * target` locks, whatever the number of locks in the shard. (Locks whose lease has
//! ended but that are not yet swept count towards a bucket and are not listed; the timer
//! sweeps them within a tick or two.)

use hashbrown::HashTable;

/// How the index finds locks: the lock table implements it.
pub(super) trait Lookup {
    /// Calls `f` with the name of every lock whose hash may be `hash` (it may also name
    /// others; it never leaves one out).
    fn names_with_hash<'s>(&'s self, hash: u64, f: &mut dyn FnMut(&'s str));
    /// The hash of a lock's name.
    fn hash(&self, name: &str) -> u64;
}

/// See the module documentation.
pub(super) struct NameIndex {
    /// The locks a bucket is sized around.
    target: usize,
    /// Lower bounds of buckets 1 and up, ascending.
    bounds: Bounds,
    /// The hashes of each bucket's locks (`bounds.len() + 1` buckets).
    buckets: Vec<HashTable<u64>>,
    /// A bucket that grew past its most while the lock table was busy (an insert holds it),
    /// to be split at the next [`NameIndex::tidy`].
    oversized: Option<usize>,
}

/// One bucket, as a list walks it.
pub(super) struct Bucket<'a> {
    /// Names in it are at least this...
    pub lower: Option<&'a str>,
    /// ...and below this.
    pub upper: Option<&'a str>,
    /// Its locks' hashes (a hash twice for two locks that share it).
    pub hashes: &'a HashTable<u64>,
}

impl<'a> Bucket<'a> {
    /// Whether `name` falls in this bucket's range.
    pub fn holds(&self, name: &str) -> bool {
        self.lower.is_none_or(|lo| name >= lo) && self.upper.is_none_or(|hi| name < hi)
    }
}

/// The hash table of a bucket hashes by the hash itself (already a seeded hash).
fn same(h: &u64) -> u64 {
    *h
}

impl NameIndex {
    /// An index of these locks (`(name, hash)`, each name once), in buckets of `target` to
    /// `2 * target - 1`: one sort of the names, cut into equal parts. The sort compares the
    /// 16 bytes after the prefix all names share as integers, and names only where those tie
    /// (as a search of the bounds does): comparing names through their pointers cost a large
    /// table's build most of its time.
    pub fn build(target: usize, named: Vec<(&str, u64)>) -> NameIndex {
        let target = target.max(1);
        let common = match (named.iter().map(|n| n.0).min(), named.iter().map(|n| n.0).max()) {
            (Some(least), Some(most)) => shared_prefix(least.as_bytes(), most.as_bytes()),
            _ => 0,
        };
        let mut keyed: Vec<(u128, &str, u64)> =
            named.into_iter().map(|(name, hash)| (key(&name.as_bytes()[common..]), name, hash)).collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let n = keyed.len();
        // `parts` buckets of `n / parts` rounded either way: at least `target`, and (as
        // `n < (parts + 1) * target`) at most `target + (target - 1) / parts` rounded up,
        // below `2 * target`.
        let parts = (n / target).max(1);
        let cut = |i: usize| i * n / parts;
        let buckets = (0..parts)
            .map(|i| {
                let part = &keyed[cut(i)..cut(i + 1)];
                let mut t = HashTable::with_capacity(part.len());
                for &(_, _, hash) in part {
                    t.insert_unique(hash, hash, same);
                }
                t
            })
            .collect();
        let bounds = Bounds::of((1..parts).map(|i| keyed[cut(i)].1));
        NameIndex { target, bounds, buckets, oversized: None }
    }

    /// Locks in a bucket past which it is split (into two of `target`).
    fn most(&self) -> usize {
        2 * self.target - 1
    }

    /// Locks in a bucket below which it is merged into a neighbour.
    fn least(&self) -> usize {
        self.target.div_ceil(4)
    }

    /// The bucket a name belongs in.
    pub fn bucket_of(&self, name: &str) -> usize {
        self.bounds.count_at_or_below(name)
    }

    /// Buckets in the index.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Bucket `i` (below [`NameIndex::buckets`]).
    pub fn bucket(&self, i: usize) -> Bucket<'_> {
        Bucket {
            lower: i.checked_sub(1).map(|b| &*self.bounds.names[b]),
            upper: self.bounds.names.get(i).map(|b| &**b),
            hashes: &self.buckets[i],
        }
    }

    /// Records a new lock. A bucket that grows too large is split at the next
    /// [`NameIndex::tidy`] (the caller's lock table is busy with the insert now).
    pub fn insert(&mut self, name: &str, hash: u64) {
        let b = self.bucket_of(name);
        let bucket = &mut self.buckets[b];
        bucket.insert_unique(hash, hash, same);
        if bucket.len() > self.most() {
            debug_assert!(self.oversized.is_none_or(|o| o == b), "one insert between tidies");
            self.oversized = Some(b);
        }
    }

    /// Whether a bucket waits to be split.
    pub fn untidy(&self) -> bool {
        self.oversized.is_some()
    }

    /// Splits the bucket that grew too large, if one did.
    pub fn tidy(&mut self, lookup: &impl Lookup) {
        if let Some(b) = self.oversized.take() {
            self.split_down(b, lookup);
        }
    }

    /// Forgets a lock that is gone (`lookup` no longer finds it). A bucket left too small is
    /// merged into a neighbour.
    pub fn remove(&mut self, name: &str, hash: u64, lookup: &impl Lookup) {
        self.tidy(lookup);
        let b = self.bucket_of(name);
        match self.buckets[b].find_entry(hash, |&h| h == hash) {
            Ok(found) => {
                found.remove();
            }
            Err(_) => debug_assert!(false, "{name:?} was not indexed"),
        }
        if self.buckets.len() > 1 && self.buckets[b].len() < self.least() {
            self.merge(b, lookup);
        }
    }

    /// Merges bucket `b` into its smaller neighbour, and splits the result if it is too large.
    fn merge(&mut self, b: usize, lookup: &impl Lookup) {
        let n = match (b.checked_sub(1), self.buckets.get(b + 1)) {
            (Some(left), Some(right)) if right.len() < self.buckets[left].len() => b + 1,
            (Some(left), _) => left,
            (None, _) => b + 1,
        };
        let (keep, gone) = (b.min(n), b.max(n));
        let mut moved = self.buckets.remove(gone);
        self.bounds.remove(gone - 1);
        // Move the smaller table into the larger.
        if moved.len() > self.buckets[keep].len() {
            std::mem::swap(&mut moved, &mut self.buckets[keep]);
        }
        for hash in moved {
            self.buckets[keep].insert_unique(hash, hash, same);
        }
        self.split_down(keep, lookup);
    }

    /// Splits bucket `b` at its median name until each part holds at most [`Self::most`].
    fn split_down(&mut self, b: usize, lookup: &impl Lookup) {
        if self.buckets[b].len() <= self.most() {
            return;
        }
        let mut named = self.names(b, lookup);
        named.sort_unstable();
        let mid = named.len() / 2;
        let (left, right) = named.split_at(mid);
        let table = |part: &[(&str, u64)]| {
            let mut t = HashTable::with_capacity(part.len());
            for &(_, hash) in part {
                t.insert_unique(hash, hash, same);
            }
            t
        };
        let (left, right, bound) = (table(left), table(right), Box::<str>::from(right[0].0));
        self.buckets[b] = left;
        self.buckets.insert(b + 1, right);
        self.bounds.insert(b, bound);
        // Each half holds at least `most / 2`, so at most one of them needs more.
        self.split_down(b + 1, lookup);
        self.split_down(b, lookup);
    }

    /// The `(name, hash)` of every lock of bucket `b`, once each.
    fn names<'l>(&self, b: usize, lookup: &'l impl Lookup) -> Vec<(&'l str, u64)> {
        let bucket = self.bucket(b);
        let mut named = Vec::with_capacity(bucket.hashes.len());
        for &hash in bucket.hashes.iter() {
            let start = named.len();
            lookup.names_with_hash(hash, &mut |name| {
                if bucket.holds(name) {
                    named.push((name, hash));
                }
            });
            // A lock of this bucket has this hash, so at least one name came; more than one
            // means a name only looked alike (or two locks share the hash): keep the true ones.
            if named.len() - start > 1 {
                let mut i = start;
                while i < named.len() {
                    if lookup.hash(named[i].0) == hash {
                        i += 1;
                    } else {
                        named.swap_remove(i);
                    }
                }
            }
        }
        // A hash two locks share is in the bucket twice, and found both names each time.
        named.sort_unstable();
        named.dedup();
        debug_assert_eq!(named.len(), bucket.hashes.len(), "every hash of bucket {b} names its lock");
        named
    }

    /// Heap bytes of the bounds and the buckets.
    pub fn heap_bytes(&self) -> usize {
        self.bounds.heap_bytes()
            + self.buckets.capacity() * std::mem::size_of::<HashTable<u64>>()
            + self.buckets.iter().map(HashTable::allocation_size).sum::<usize>()
    }

    /// Checks the index against every lock: each in the bucket its name belongs in, exactly
    /// once, and every bucket within its bounds.
    #[cfg(test)]
    pub fn check<'n>(&self, locks: impl Iterator<Item = (&'n str, u64)>) {
        self.bounds.check();
        assert_eq!(self.buckets.len(), self.bounds.names.len() + 1);
        let mut counts: Vec<std::collections::HashMap<u64, usize>> =
            vec![Default::default(); self.buckets.len()];
        let mut n = 0;
        for (name, hash) in locks {
            *counts[self.bucket_of(name)].entry(hash).or_default() += 1;
            n += 1;
        }
        assert_eq!(self.buckets.iter().map(HashTable::len).sum::<usize>(), n, "every lock once");
        for (i, (bucket, count)) in self.buckets.iter().zip(&counts).enumerate() {
            let mut held: std::collections::HashMap<u64, usize> = Default::default();
            for &h in bucket.iter() {
                *held.entry(h).or_default() += 1;
            }
            assert_eq!(&held, count, "bucket {i} holds its locks");
            // The bucket an insert just grew waits for the next tidy.
            let most = self.most() + usize::from(self.oversized == Some(i));
            assert!(bucket.len() <= most, "bucket {i}: {} locks", bucket.len());
            if self.buckets.len() > 1 {
                assert!(bucket.len() >= self.least(), "bucket {i}: {} locks", bucket.len());
            }
        }
    }
}

/// The sorted bounds of the buckets, and what makes searching them cheap: the prefix they all
/// share, and for each the 16 bytes after it as a big-endian integer (zero-padded), so that a
/// search compares integers and looks at a name only where two integers are equal.
#[derive(Default)]
struct Bounds {
    names: Vec<Box<str>>,
    /// Bytes at the start of every bound that are the same in all of them (a prefix of each;
    /// it only shrinks, but for a new first bound).
    common: usize,
    /// `key(bound[common..])` of each bound.
    keys: Vec<u128>,
}

/// The first 16 bytes of `s`, zero-padded, as a big-endian integer: for two strings with
/// different keys, the keys sort as the strings do.
fn key(s: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = s.len().min(16);
    bytes[..n].copy_from_slice(&s[..n]);
    u128::from_be_bytes(bytes)
}

/// Bytes at the start of `a` and `b` that are the same.
fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Bounds {
    /// Bounds of these names, ascending.
    fn of<'n>(names: impl Iterator<Item = &'n str>) -> Bounds {
        let names: Vec<Box<str>> = names.map(Box::from).collect();
        let common = match (names.first(), names.last()) {
            // The first and the last share what all of them share, as they are sorted.
            (Some(first), Some(last)) => shared_prefix(first.as_bytes(), last.as_bytes()),
            _ => 0,
        };
        let keys = names.iter().map(|n| key(&n.as_bytes()[common..])).collect();
        Bounds { names, common, keys }
    }

    /// How many bounds are at or below `name` (the bucket it belongs in).
    fn count_at_or_below(&self, name: &str) -> usize {
        let Some(first) = self.names.first() else { return 0 };
        let (name_bytes, prefix) = (name.as_bytes(), &first.as_bytes()[..self.common]);
        if !name_bytes.starts_with(prefix) {
            // Below every bound or above them all, as it compares with the prefix they share.
            return if name_bytes < prefix { 0 } else { self.names.len() };
        }
        let k = key(&name_bytes[self.common..]);
        let below = self.keys.partition_point(|&b| b < k);
        let tied = self.keys[below..].iter().take_while(|&&b| b == k).count();
        below + self.names[below..below + tied].partition_point(|b| **b <= *name)
    }

    /// Puts `bound` at `at` (where it sorts).
    fn insert(&mut self, at: usize, bound: Box<str>) {
        let shared = match self.names.first() {
            None => bound.len(),
            Some(first) => shared_prefix(&first.as_bytes()[..self.common], bound.as_bytes()),
        };
        self.names.insert(at, bound);
        if shared < self.common || self.names.len() == 1 {
            self.common = shared;
            self.keys = self.names.iter().map(|n| key(&n.as_bytes()[shared..])).collect();
        } else {
            self.keys.insert(at, key(&self.names[at].as_bytes()[self.common..]));
        }
    }

    /// Takes out the bound at `at`.
    fn remove(&mut self, at: usize) {
        self.names.remove(at);
        self.keys.remove(at);
    }

    fn heap_bytes(&self) -> usize {
        self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.names.iter().map(|b| b.len()).sum::<usize>()
            + self.keys.capacity() * std::mem::size_of::<u128>()
    }

    #[cfg(test)]
    fn check(&self) {
        assert!(self.names.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        assert_eq!(self.keys.len(), self.names.len());
        for (name, &k) in self.names.iter().zip(&self.keys) {
            assert_eq!(k, key(&name.as_bytes()[self.common..]), "key of {name:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_sorts_names_that_tie_on_their_first_16_bytes_after_the_prefix() {
        // Every name shares "s3://b/k/", and many the 16 bytes after it too.
        let mut names: Vec<String> =
            (0..60).map(|i| format!("s3://b/k/{}{:03}", "x".repeat(16), (i * 37) % 60)).collect();
        names.extend((0..20).map(|i| format!("s3://b/k/{i:02}")));
        names.push("s3://b/k/".into());
        let named: Vec<(&str, u64)> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u64)).collect();
        let index = NameIndex::build(4, named.clone());
        index.check(named.iter().copied());
        let mut sorted = names.clone();
        sorted.sort();
        let bounds: Vec<&str> = index.bounds.names.iter().map(|b| &**b).collect();
        // 81 names in 20 buckets: the bounds are the first name of each bucket but the first.
        assert_eq!(bounds, (1..20).map(|i| sorted[i * 81 / 20].as_str()).collect::<Vec<_>>());
    }

    #[test]
    fn bounds_find_a_names_bucket_by_integers_and_ties_by_name() {
        let mut b = Bounds::default();
        let names = [
            "s3://b/k/0500",
            "s3://b/k/0100",
            "s3://b/k/09",
            "s3://b/k/0100000000000000000002",
            "s3://b/k/0100000000000000000001",
        ];
        let mut sorted: Vec<&str> = Vec::new();
        for n in names {
            let at = sorted.partition_point(|s| *s < n);
            sorted.insert(at, n);
            b.insert(at, n.into());
            b.check();
        }
        assert_eq!(b.common, "s3://b/k/0".len());
        for probe in [
            "",
            "a",
            "s3://b/k/",
            "s3://b/k/0",
            "s3://b/k/0100",
            "s3://b/k/01000000000000000000015",
            "s3://b/k/0100000000000000000002",
            "s3://b/k/05",
            "s3://b/k/0500",
            "s3://b/k/1",
            "t",
            "s3://b/k/0100000000000000000001",
        ] {
            let expected = sorted.iter().filter(|s| **s <= probe).count();
            assert_eq!(b.count_at_or_below(probe), expected, "{probe:?}");
        }
        b.remove(0);
        b.check();
        assert_eq!(b.count_at_or_below("s3://b/k/0100"), 0);
    }
}
