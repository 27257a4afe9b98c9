//! The lock table: owns the state of every held lock of one shard, in a `hashbrown`
//! [`HashTable`] keyed by resource name. Storage only; what a lock may do is `shard`'s business.
//!
//! A held lock costs one 40-byte table entry (see the size test below) plus one allocation with
//! the resource and owner names. Waiters and session watchers, which most locks never have,
//! live behind an `Option<Box<_>>` so they cost a held lock 8 bytes when absent.

use std::collections::VecDeque;

use hashbrown::HashTable;
use hashbrown::hash_table::{Entry, OccupiedEntry};

use crate::route::ResourceHasher;
use crate::timer::TimerId;

use super::Ticket;

/// Below this many entries of capacity the table never shrinks (re-growing costs more than the
/// few kilobytes it would give back).
const MIN_SHRINK_CAPACITY: usize = 1024;

/// One held lock.
pub(super) struct Lock {
    /// Fencing token of the current grant; unique within the shard.
    pub token: u64,
    /// The resource name followed by the holder's name, in one allocation.
    names: Box<str>,
    /// Timer of the lease's end, or [`TimerId::NONE`] for a lease without expiry.
    pub timer: TimerId,
    /// Bytes of `names` that are the resource name.
    name_len: u32,
    /// Waiters and watcher, if any.
    pub extra: Option<Box<Extra>>,
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
}

impl Lock {
    pub fn new(resource: &str, owner: &str, token: u64) -> Lock {
        Lock {
            token,
            names: concat(resource, owner),
            timer: TimerId::NONE,
            name_len: u32::try_from(resource.len()).expect("resource name over 4 GiB"),
            extra: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.names[..self.name_len as usize]
    }

    pub fn owner(&self) -> &str {
        &self.names[self.name_len as usize..]
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
        let (_, absent) = self.entry.remove();
        let map = absent.into_table();
        if map.capacity() > MIN_SHRINK_CAPACITY && map.len() * 4 < map.capacity() {
            map.shrink_to(map.len() * 2, |l| self.hasher.hash(l.name()));
        }
    }
}

fn concat(a: &str, b: &str) -> Box<str> {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s.into_boxed_str()
}

/// Held locks by resource name.
pub(super) struct LockTable {
    map: HashTable<Lock>,
    hasher: ResourceHasher,
}

impl LockTable {
    pub fn new(hasher: ResourceHasher) -> Self {
        LockTable { map: HashTable::new(), hasher }
    }

    pub fn hash(&self, resource: &str) -> u64 {
        self.hasher.hash(resource)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The lock named `resource`, as an entry that can also remove it.
    pub fn find(&mut self, hash: u64, resource: &str) -> Option<Found<'_>> {
        let hasher = &self.hasher;
        let entry = self.map.find_entry(hash, |l| l.name() == resource).ok()?;
        Some(Found { entry, hasher })
    }

    /// The lock a timer is for: `hash` is its name's hash, `id` the lease's token or a
    /// waiter's id (`waiter`), both unique within the shard, so the lock is found exactly
    /// even if another name has the same hash.
    pub fn find_by_timer(&mut self, hash: u64, id: u64, waiter: bool) -> Option<Found<'_>> {
        let hasher = &self.hasher;
        let is_it = |l: &Lock| {
            if waiter {
                l.extra.as_ref().is_some_and(|e| e.waiters.iter().any(|w| w.id == id))
            } else {
                l.token == id
            }
        };
        let entry = self.map.find_entry(hash, is_it).ok()?;
        Some(Found { entry, hasher })
    }

    pub fn entry(&mut self, hash: u64, resource: &str) -> Entry<'_, Lock> {
        let hasher = &self.hasher;
        self.map.entry(hash, |l| l.name() == resource, |l| hasher.hash(l.name()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lock> {
        self.map.iter()
    }

    /// Heap bytes of the table and everything its locks own.
    pub fn heap_bytes(&self) -> usize {
        self.map.allocation_size() + self.map.iter().map(Lock::heap_bytes).sum::<usize>()
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
    }

    #[test]
    fn churn_of_unique_names_does_not_keep_memory() {
        let mut t = LockTable::new(ResourceHasher::new());
        for i in 0..100_000 {
            let name = format!("job-{i}");
            let h = t.hash(&name);
            if let Entry::Vacant(v) = t.entry(h, &name) {
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
            if let Entry::Vacant(v) = t.entry(h, &name) {
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
