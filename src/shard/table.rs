//! The lock table: owns the state of every held lock of one shard, in a `hashbrown`
//! [`HashTable`] keyed by resource name, and their order by name for lists. Storage only;
//! what a lock may do is `shard`'s business.
//!
//! The order is a [`NameIndex`], built by the first list of a table that holds
//! [`INDEX_BUCKET_LOCKS`] twice over (one sort of its names) and kept up by every insert and
//! removal from then on, until [`INDEX_CHANGES_PER_LOCK`] changes a lock have passed without
//! a list, or the table has shrunk under half a bucket: a server that never lists pays
//! nothing for the order on its hot path, and one that lists seldom pays for following
//! changes no more than a few builds would cost. A smaller table is scanned.
//!
//! A held lock costs one 40-byte table entry (see the size test below) plus one allocation with
//! the resource and owner names, led by the resource name's length (one byte for names under 64
//! bytes, two under 4096: see [`put_len`]), which keeps the entry's room for the tick of the
//! grant; and in a large table about 14 bytes of the index. Waiters and session watchers, which
//! most locks never have, live behind an `Option<Box<_>>` so they cost a held lock 8 bytes when
//! absent.

use std::collections::VecDeque;

use hashbrown::HashTable;
use hashbrown::hash_table::{Entry, OccupiedEntry, VacantEntry};

use crate::route::ResourceHasher;
use crate::timer::TimerId;

use super::Ticket;
use super::index::{Lookup, NameIndex};

/// Below this many entries of capacity the table never shrinks (re-growing costs more than the
/// few kilobytes it would give back).
const MIN_SHRINK_CAPACITY: usize = 1024;

/// Locks a bucket of the name index is sized around (see `index`): hashbrown fills a table of
/// 1024 slots to seven eighths, 896 hashes, and a bucket is split in two such full tables once
/// it holds twice that, so the index costs a held lock about 10 bytes (measured with
/// `cargo bench --bench memory`). A table of fewer than twice this many (1792 locks: tens of
/// microseconds) is scanned instead, so the small tables most servers have never keep one; a
/// list page of a larger one looks at no more than
/// `(2 + 4 * limit / 896) * 1792` locks, some 12,500 for a page of 1,000.
pub const INDEX_BUCKET_LOCKS: usize = 896;
/// Changes a lock that the name index follows without a list before it is given up (the
/// next list builds it again). Building it costs a lock about as much as following 6 to 20
/// changes (a hash, its share of one sort of the names, an insert: 110 to 165 ns a lock
/// against 8 ns a change at 100,000 locks, 240 ns against 40 ns at a million, measured here),
/// so following changes until a list comes costs no more than a few builds would have.
pub(super) const INDEX_CHANGES_PER_LOCK: usize = 16;
/// [`Lock::granted`] of a lock whose grant this run did not see (one restored from the log).
pub(super) const GRANTED_UNKNOWN: u32 = u32::MAX;

/// One held lock.
pub(super) struct Lock {
    /// Fencing token of the current grant; unique within the shard.
    pub token: u64,
    /// The resource name's length (see [`put_len`]), the resource name, then the holder's
    /// name, in one allocation.
    names: Box<str>,
    /// Timer of the lease's end, or [`TimerId::NONE`] for a lease without expiry.
    pub timer: TimerId,
    /// The tick of the current grant, its low 32 bits ([`grant_tick`]); [`GRANTED_UNKNOWN`]
    /// until the shard grants it. Holds are timed with it, modulo 2^32 ms (49.7 days).
    pub granted: u32,
    /// Waiters and watcher, if any.
    pub extra: Option<Box<Extra>>,
}

/// `now` as a lock keeps its grant tick: the low 32 bits, never [`GRANTED_UNKNOWN`] (a tick
/// that would read as it is kept 1 ms early, once every 49.7 days).
#[inline]
pub(super) fn grant_tick(now: u64) -> u32 {
    (now as u32).min(GRANTED_UNKNOWN - 1)
}

/// Ms from grant tick `granted` to tick `now`, modulo 2^32 (see [`Lock::granted`]); `None` if
/// the grant is unknown.
#[inline]
pub(super) fn held_for(granted: u32, now: u64) -> Option<u64> {
    (granted != GRANTED_UNKNOWN).then(|| u64::from((now as u32).wrapping_sub(granted)))
}

/// The rarely present parts of a lock.
#[derive(Default)]
pub(super) struct Extra {
    /// Acquires queued for this lock, first come first served.
    pub waiters: VecDeque<Waiter>,
    /// Who is told when the current lease runs out (a session connection).
    pub watcher: Option<Ticket>,
    /// The session that holds the current lease (0: none).
    pub session: u64,
}

/// An acquire waiting for its turn.
pub(super) struct Waiter {
    /// Unique within the shard; the payload of the waiter's timer.
    pub id: u64,
    pub ticket: Ticket,
    pub owner: Box<str>,
    /// Lease to grant, in ms; `None` for no expiry.
    pub ttl: Option<u64>,
    /// Tick at which the waiter gives up.
    pub deadline: u64,
    pub timer: TimerId,
    /// Who is told if the lease it is granted runs out (see [`Extra::watcher`]).
    pub watch: Option<Ticket>,
    /// The session that will hold the lock (see [`Extra::session`]).
    pub session: u64,
    /// The tick it queued at (for the time it waited).
    pub queued: u64,
}

impl Lock {
    pub fn new(resource: &str, owner: &str, token: u64) -> Lock {
        Lock {
            token,
            names: concat(resource, owner),
            timer: TimerId::NONE,
            granted: GRANTED_UNKNOWN,
            extra: None,
        }
    }

    /// Where the resource name starts and ends in `names`.
    #[inline]
    fn name_at(&self) -> (usize, usize) {
        let (len, start) = get_len(self.names.as_bytes());
        (start, start + len)
    }

    #[inline]
    pub fn name(&self) -> &str {
        let (start, end) = self.name_at();
        &self.names[start..end]
    }

    #[inline]
    pub fn owner(&self) -> &str {
        &self.names[self.name_at().1..]
    }

    /// The resource name and the holder's, read at once.
    #[inline]
    pub fn names(&self) -> (&str, &str) {
        let (start, end) = self.name_at();
        (&self.names[start..end], &self.names[end..])
    }

    /// Whether this is the lock named `resource`: every lookup asks, so it compares bytes (a
    /// `str` slice would check both ends for character boundaries first), and for a name under
    /// 64 bytes compares the one-byte length it expects rather than decode the stored one, so
    /// that the comparison of the names need not wait for it.
    #[inline]
    pub fn is(&self, resource: &str) -> bool {
        let (bytes, n) = (self.names.as_bytes(), resource.len());
        if n < 1 << LEN_DIGIT_BITS {
            return bytes.len() > n && bytes[0] == n as u8 && &bytes[1..=n] == resource.as_bytes();
        }
        let (start, end) = self.name_at();
        end - start == n && &bytes[start..end] == resource.as_bytes()
    }

    /// Whether `owner` holds it, comparing bytes (see [`Lock::is`]).
    #[inline]
    pub fn held_by(&self, owner: &str) -> bool {
        &self.names.as_bytes()[self.name_at().1..] == owner.as_bytes()
    }

    /// Hands the lock to a new holder (a waiter's turn has come).
    pub fn set_owner(&mut self, owner: &str) {
        self.names = concat(self.name(), owner);
    }

    pub fn waiter_count(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| e.waiters.len())
    }

    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Frees the extra part once it holds nothing.
    pub fn trim_extra(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.waiters.is_empty() && e.watcher.is_none() && e.session == 0)
        {
            self.extra = None;
        }
    }

    /// Heap bytes owned by this lock beyond its table entry (names, waiters).
    pub fn heap_bytes(&self) -> usize {
        let extra = self.extra.as_ref().map_or(0, |e| {
            std::mem::size_of::<Extra>()
                + e.waiters.capacity() * std::mem::size_of::<Waiter>()
                + e.waiters.iter().map(|w| w.owner.len()).sum::<usize>()
        });
        self.names.len() + extra
    }
}

/// A lock found in the table.
pub(super) struct Found<'a> {
    entry: OccupiedEntry<'a, Lock>,
    hasher: &'a ResourceHasher,
    order: &'a mut Order,
    /// The hash of its name.
    hash: u64,
}

/// Where a name that is not held would go.
pub(super) struct Vacant<'a> {
    entry: VacantEntry<'a, Lock>,
    order: &'a mut Order,
    hash: u64,
}

/// What [`LockTable::entry`] finds.
pub(super) enum Slot<'a> {
    Held(Found<'a>),
    Free(Vacant<'a>),
}

impl<'a> Vacant<'a> {
    /// Puts the lock in (its name must be the one looked for).
    pub fn insert(self, lock: Lock) -> &'a mut Lock {
        self.order.inserted(&lock, self.hash);
        self.entry.insert(lock).into_mut()
    }
}

impl<'a> Found<'a> {
    pub fn get_mut(&mut self) -> &mut Lock {
        self.entry.get_mut()
    }

    pub fn into_mut(self) -> &'a mut Lock {
        self.entry.into_mut()
    }

    /// Removes the lock (nobody holds it any more), and gives memory back after a burst:
    /// shrinks the table to twice its live count once it is under a quarter full, so churn
    /// of unique names cannot keep a peak-sized table alive and a steady state never shrinks
    /// and regrows back and forth.
    pub fn remove(self) {
        let (lock, absent) = self.entry.remove();
        let map = absent.into_table();
        self.order.removed(&lock, self.hash, map, self.hasher);
        if map.capacity() > MIN_SHRINK_CAPACITY && map.len() * 4 < map.capacity() {
            map.shrink_to(map.len() * 2, |l| self.hasher.hash(l.name()));
        }
    }
}

/// The order of a table's names (see the module documentation).
struct Order {
    /// Locks per bucket of the index.
    target: usize,
    index: Option<NameIndex>,
    /// Inserts and removals the index may still follow before it is given up, unless a list
    /// comes first (see [`INDEX_CHANGES_PER_LOCK`]).
    budget: usize,
}

/// The index's view of the table.
struct Locks<'a> {
    map: &'a HashTable<Lock>,
    hasher: &'a ResourceHasher,
}

impl Lookup for Locks<'_> {
    fn names_with_hash<'s>(&'s self, hash: u64, f: &mut dyn FnMut(&'s str)) {
        for lock in self.map.iter_hash(hash) {
            f(lock.name());
        }
    }

    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash(name)
    }
}

impl Order {
    /// Whether a bucket of the index is to be split.
    fn untidy(&self) -> bool {
        self.index.as_ref().is_some_and(NameIndex::untidy)
    }

    fn tidy(&mut self, map: &HashTable<Lock>, hasher: &ResourceHasher) {
        if let Some(index) = &mut self.index {
            index.tidy(&Locks { map, hasher });
        }
    }

    /// A list wants the order of `map`'s names: builds the index if the table is large
    /// enough to keep one and has none, and lets it follow changes for another
    /// [`INDEX_CHANGES_PER_LOCK`] per lock. Returns the locks looked at to build it.
    fn listing(&mut self, map: &HashTable<Lock>, hasher: &ResourceHasher) -> usize {
        let least = 2 * self.target;
        self.budget = INDEX_CHANGES_PER_LOCK * map.len().max(least);
        if self.index.is_some() || map.len() < least {
            return 0;
        }
        let named = map
            .iter()
            .map(|l| {
                let name = l.name();
                (name, hasher.hash(name))
            })
            .collect();
        self.index = Some(NameIndex::build(self.target, named));
        map.len()
    }

    /// The index followed one more change; past its budget it is given up.
    fn followed(&mut self) {
        self.budget = self.budget.saturating_sub(1);
        if self.budget == 0 {
            self.index = None;
        }
    }

    /// `lock` is going into the table. (Its name is read only if there is an index.)
    fn inserted(&mut self, lock: &Lock, hash: u64) {
        if let Some(index) = &mut self.index {
            index.insert(lock.name(), hash);
            self.followed();
        }
    }

    /// `lock` has left `map`.
    fn removed(&mut self, lock: &Lock, hash: u64, map: &HashTable<Lock>, hasher: &ResourceHasher) {
        let Some(index) = &mut self.index else { return };
        if map.len() < self.target / 2 {
            // Small enough to scan again; an index comes back only past twice the target, so
            // a table hovering around one size never builds it back and forth.
            self.index = None;
        } else {
            index.remove(lock.name(), hash, &Locks { map, hasher });
            self.followed();
        }
    }
}

/// `resource`'s length ([`put_len`]), `resource`, then `owner`.
fn concat(resource: &str, owner: &str) -> Box<str> {
    // Exactly the bytes needed: a spare byte would cost a reallocation in `into_boxed_str`.
    let mut s = String::with_capacity(len_bytes(resource.len()) + resource.len() + owner.len());
    put_len(&mut s, resource.len());
    s.push_str(resource);
    s.push_str(owner);
    s.into_boxed_str()
}

/// Bits of a length each byte of [`put_len`] carries.
const LEN_DIGIT_BITS: u32 = 6;
/// Set in every byte of [`put_len`] but the last.
const LEN_MORE: u8 = 0x40;

/// Bytes [`put_len`] writes for `len`.
fn len_bytes(mut len: usize) -> usize {
    let mut bytes = 1;
    while len >> LEN_DIGIT_BITS != 0 {
        len >>= LEN_DIGIT_BITS;
        bytes += 1;
    }
    bytes
}

/// Appends `len` in 6-bit digits, low digit first, each an ASCII byte (so that the names stay
/// one `str`, with no `unsafe`) with [`LEN_MORE`] set on all but the last: one byte under 64,
/// two under 4096.
fn put_len(out: &mut String, mut len: usize) {
    loop {
        let digit = (len & ((1 << LEN_DIGIT_BITS) - 1)) as u8;
        len >>= LEN_DIGIT_BITS;
        if len == 0 {
            out.push(char::from(digit));
            return;
        }
        out.push(char::from(digit | LEN_MORE));
    }
}

/// Reads what [`put_len`] wrote at the start of `bytes`: the length, and the bytes it took.
#[inline]
fn get_len(bytes: &[u8]) -> (usize, usize) {
    let first = bytes[0];
    if first & LEN_MORE == 0 {
        // Names under 64 bytes, nearly every name: one byte, one branch.
        return (usize::from(first), 1);
    }
    let mut len = usize::from(first & !LEN_MORE);
    let mut at = 1;
    loop {
        let byte = bytes[at];
        len |= usize::from(byte & !LEN_MORE) << (LEN_DIGIT_BITS * at as u32);
        at += 1;
        if byte & LEN_MORE == 0 {
            return (len, at);
        }
    }
}

/// Held locks by resource name.
pub(super) struct LockTable {
    map: HashTable<Lock>,
    hasher: ResourceHasher,
    order: Order,
}

impl LockTable {
    pub fn new(hasher: ResourceHasher) -> Self {
        LockTable {
            map: HashTable::new(),
            hasher,
            order: Order { target: INDEX_BUCKET_LOCKS, index: None, budget: 0 },
        }
    }

    /// Index buckets of about `target` locks (tests use small ones); only while empty.
    #[cfg(test)]
    pub fn set_bucket_target(&mut self, target: usize) {
        assert!(self.map.is_empty());
        self.order.target = target.max(1);
    }

    /// Splits a bucket of the index, if an insert left that to do.
    #[inline]
    fn tidy(&mut self) {
        if self.order.untidy() {
            self.order.tidy(&self.map, &self.hasher);
        }
    }

    pub fn hash(&self, resource: &str) -> u64 {
        self.hasher.hash(resource)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The lock named `resource`, as an entry that can also remove it.
    pub fn find(&mut self, hash: u64, resource: &str) -> Option<Found<'_>> {
        self.tidy();
        let (hasher, order) = (&self.hasher, &mut self.order);
        let entry = self.map.find_entry(hash, |l| l.is(resource)).ok()?;
        Some(Found { entry, hasher, order, hash })
    }

    /// The lock a timer is for: `hash` is its name's hash, `id` the lease's token or a
    /// waiter's id (`waiter`), both unique within the shard, so the lock is found exactly
    /// even if another name has the same hash.
    pub fn find_by_timer(&mut self, hash: u64, id: u64, waiter: bool) -> Option<Found<'_>> {
        self.tidy();
        let (hasher, order) = (&self.hasher, &mut self.order);
        let is_it = |l: &Lock| {
            if waiter {
                l.extra.as_ref().is_some_and(|e| e.waiters.iter().any(|w| w.id == id))
            } else {
                l.token == id
            }
        };
        let entry = self.map.find_entry(hash, is_it).ok()?;
        Some(Found { entry, hasher, order, hash })
    }

    /// The lock named `resource`, or the place for it.
    pub fn entry(&mut self, hash: u64, resource: &str) -> Slot<'_> {
        self.tidy();
        let (hasher, order) = (&self.hasher, &mut self.order);
        match self.map.entry(hash, |l| l.is(resource), |l| hasher.hash(l.name())) {
            Entry::Occupied(entry) => Slot::Held(Found { entry, hasher, order, hash }),
            Entry::Vacant(entry) => Slot::Free(Vacant { entry, order, hash }),
        }
    }

    /// Readies the order of names for [`LockTable::ordered`] (see the module documentation);
    /// returns the locks looked at to build the index, if it had to be.
    pub fn listing(&mut self) -> usize {
        self.tidy();
        self.order.listing(&self.map, &self.hasher)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lock> {
        self.map.iter()
    }

    /// Up to `limit` locks that `wanted` takes, in name order, among those named `prefix` or
    /// after it (and after `after`); and how many locks were looked at. Call
    /// [`LockTable::listing`] first, or a large table is scanned. `wanted` must refuse
    /// names that do not start with `prefix` or are not after `after`: the order only says
    /// where to start and when to stop.
    pub fn ordered(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        wanted: impl Fn(&Lock) -> bool,
    ) -> (Vec<&Lock>, usize) {
        if limit == 0 {
            return (Vec::new(), 0);
        }
        let by_name = |a: &&Lock, b: &&Lock| a.name().cmp(b.name());
        let Some(index) = &self.order.index else {
            let mut found: Vec<&Lock> = self.map.iter().filter(|l| wanted(l)).collect();
            if found.len() > limit {
                found.select_nth_unstable_by(limit, by_name);
                found.truncate(limit);
            }
            found.sort_unstable_by(by_name);
            return (found, self.map.len());
        };
        let start = match after {
            Some(after) if after > prefix => after,
            _ => prefix,
        };
        let (mut found, mut visited) = (Vec::new(), 0);
        let mut here: Vec<&Lock> = Vec::new();
        for b in index.bucket_of(start)..index.buckets() {
            let bucket = index.bucket(b);
            if bucket.lower.is_some_and(|lower| lower > prefix && !lower.starts_with(prefix)) {
                // Every name from here on sorts after every name that starts with `prefix`.
                break;
            }
            visited += bucket.hashes.len();
            for &hash in bucket.hashes.iter() {
                here.extend(self.map.iter_hash(hash).filter(|l| bucket.holds(l.name()) && wanted(l)));
            }
            here.sort_unstable_by(by_name);
            // A lock whose hash looked like another's was found twice.
            here.dedup_by(|a, b| std::ptr::eq(*a, *b));
            found.extend(here.drain(..).take(limit - found.len()));
            if found.len() == limit {
                break;
            }
        }
        (found, visited)
    }

    /// Heap bytes of the table and everything its locks own, and of the index.
    pub fn heap_bytes(&self) -> usize {
        self.map.allocation_size()
            + self.map.iter().map(Lock::heap_bytes).sum::<usize>()
            + self.order.index.as_ref().map_or(0, NameIndex::heap_bytes)
    }

    /// Checks the name index against the table (see `NameIndex::check`).
    #[cfg(test)]
    pub fn check_order(&self) {
        if let Some(index) = &self.order.index {
            index.check(self.map.iter().map(|l| (l.name(), self.hasher.hash(l.name()))));
        }
    }

    /// Whether the table keeps a name index now.
    #[cfg(test)]
    pub fn indexed(&self) -> bool {
        self.order.index.is_some()
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_entry_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Lock>(), 40);
    }

    #[test]
    fn names_split_back_into_resource_and_owner() {
        let mut l = Lock::new("bücket/kéy", "wörker-1", 7);
        assert_eq!((l.name(), l.owner()), ("bücket/kéy", "wörker-1"));
        l.set_owner("");
        assert_eq!((l.name(), l.owner()), ("bücket/kéy", ""));
        let l = Lock::new("", "o", 1);
        assert_eq!((l.name(), l.owner()), ("", "o"));
        let l = Lock::new("ab", "cd", 1);
        assert_eq!(l.names(), ("ab", "cd"));
        assert!(l.is("ab") && !l.is("a") && !l.is("abc") && !l.is("abcd") && !l.is(""));
        assert!(l.held_by("cd") && !l.held_by("c") && !l.held_by("bcd"));
        let long = "x".repeat(100);
        let l = Lock::new(&long, "o", 1);
        // 100 is written "d\x01": its low six bits, 36, with 0x40 set, then 1.
        assert!(l.is(&long) && !l.is(&long[..99]) && !l.is(&long[..36]) && !l.is("d") && l.held_by("o"));
        for len in [0, 1, 63, 64, 65, 1000, 4095, 4096, 5000, 300_000] {
            let name = "é".repeat(len / 2) + &"n".repeat(len % 2);
            let l = Lock::new(&name, "wörker", 1);
            assert_eq!((l.name(), l.owner()), (name.as_str(), "wörker"), "a name of {len} bytes");
        }
    }

    #[test]
    fn a_names_length_takes_one_byte_under_64_and_two_under_4096() {
        let prefix = |len: usize| {
            let mut s = String::new();
            put_len(&mut s, len);
            assert_eq!(get_len(s.as_bytes()), (len, s.len()));
            assert_eq!(len_bytes(len), s.len());
            assert!(s.is_ascii());
            s.len()
        };
        assert_eq!([0, 63, 64, 4095, 4096, 262_143, 262_144].map(prefix), [1, 1, 2, 2, 3, 3, 4]);
        assert_eq!(Lock::new("bucket/object-0000000", "worker-17", 1).heap_bytes(), 1 + 21 + 9);
    }

    #[test]
    fn grant_ticks_keep_32_bits_and_time_holds_modulo_2_to_the_32_ms() {
        assert_eq!(held_for(grant_tick(1_000), 1_250), Some(250));
        assert_eq!(held_for(grant_tick(1_000), 1_000), Some(0));
        let wrap = 1u64 << 32;
        assert_eq!(held_for(grant_tick(wrap - 10), wrap + 5), Some(15), "across the wrap of the tick");
        assert_eq!(held_for(grant_tick(5), wrap + 6), Some(1), "a hold of 2^32 ms + 1 reads as 1 ms");
        assert_eq!(grant_tick(wrap - 1), GRANTED_UNKNOWN - 1, "kept 1 ms early");
        assert_eq!(held_for(GRANTED_UNKNOWN, 7), None);
        assert_eq!(Lock::new("r", "o", 1).granted, GRANTED_UNKNOWN);
    }

    #[test]
    fn churn_of_unique_names_does_not_keep_memory() {
        let mut t = LockTable::new(ResourceHasher::new());
        for i in 0..100_000 {
            let name = format!("job-{i}");
            let h = t.hash(&name);
            if let Slot::Free(v) = t.entry(h, &name) {
                v.insert(Lock::new(&name, "w", i));
            }
            if i >= 10 {
                let old = format!("job-{}", i - 10);
                t.find(t.hash(&old), &old).unwrap().remove();
            }
        }
        assert_eq!(t.len(), 10);
        assert!(t.capacity() <= MIN_SHRINK_CAPACITY, "capacity {}", t.capacity());

        for i in 0..50_000 {
            let name = format!("burst-{i}");
            let h = t.hash(&name);
            if let Slot::Free(v) = t.entry(h, &name) {
                v.insert(Lock::new(&name, "w", i));
            }
        }
        let peak = t.heap_bytes();
        for i in 0..50_000 {
            let name = format!("burst-{i}");
            t.find(t.hash(&name), &name).unwrap().remove();
        }
        assert!(t.capacity() <= MIN_SHRINK_CAPACITY, "capacity {}", t.capacity());
        assert!(t.heap_bytes() * 50 < peak, "{} of {peak} bytes kept", t.heap_bytes());
    }
}
