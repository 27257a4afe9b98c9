//! The hierarchical timer wheel: owns every pending deadline of one shard (lease ends and wait
//! timeouts) and says which of them are due. It reads no clock and does no I/O: `now` is passed
//! in, in ticks of one millisecond.
//!
//! Shape (after tokio's `runtime/time/wheel`): [`LEVELS`] levels of 64 slots; a slot of level
//! `L` spans `64^L` ticks, so the wheel sees `64^6` ms (about 795 days) ahead. Deadlines further
//! out park in the top level and cascade back in when their slot comes round. Each level keeps
//! a 64-bit occupancy bitmap, so the next due slot is one `rotate_right` + `trailing_zeros`.
//!
//! Entries live in one slab (`Vec`) and each slot is a circular doubly-linked list through it,
//! anchored at a sentinel node, so insert and cancel are O(1) and need no search. A [`TimerId`]
//! is a slab index; since indices are reused, [`TimerWheel::cancel`] also checks the payload,
//! and callers make payloads unique (a lock's token, a waiter's id), so a stale id can never
//! cancel somebody else's timer.
//!
//! Work is bounded: [`TimerWheel::advance`] takes a budget of steps (one step fires one entry,
//! moves one entry down a level, or opens one slot), so a tick with a million expiries is spread
//! over many calls instead of stalling the core.

/// Levels of the wheel.
pub const LEVELS: usize = 6;
/// Slots per level; a power of two so that slot arithmetic is shifts and masks.
const SLOTS: usize = 64;
/// `log2(SLOTS)`.
const SLOT_BITS: u32 = 6;
/// Ticks the wheel covers ahead of `elapsed` (64^6 ms, about 795 days).
const SPAN: u64 = 1 << (SLOT_BITS * LEVELS as u32);
/// Largest deadline accepted, in ticks (2^62 ms, some 146 million years); later ones are
/// clamped so that slot arithmetic can never overflow.
pub const MAX_DEADLINE: u64 = 1 << 62;

/// "No node" in a link.
const NIL: u32 = u32::MAX;
/// Sentinel of the list of entries that are due and wait to be handed out by `advance`.
const PENDING: u32 = (LEVELS * SLOTS) as u32;
/// Sentinel of the list of entries of an opened slot that still have to move down a level.
const CASCADE: u32 = PENDING + 1;
/// Index of the first real entry; below it are the sentinels (one per slot, then the two above).
const FIRST_ENTRY: u32 = CASCADE + 1;
/// `when` of a node on the free list (never a valid deadline: deadlines are <= MAX_DEADLINE).
const FREE: u64 = u64::MAX;
/// Initial slab length: a power of two, so that doubling lands on powers of two (1M timers fit
/// 2^20 nodes instead of spilling into a 386 * 2^12 one).
const INITIAL_NODES: usize = 512;

/// Handle of an inserted timer: its slab index. Pass it, with the payload it was inserted
/// with, to [`TimerWheel::cancel`] or [`TimerWheel::deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u32);

impl TimerId {
    /// A handle that never names a live timer; convenient as "no timer" in compact structs.
    pub const NONE: TimerId = TimerId(NIL);

    /// Whether this is [`TimerId::NONE`].
    pub fn is_none(self) -> bool {
        self.0 == NIL
    }
}

struct Node<T> {
    /// Deadline in ticks; [`FREE`] for a node on the free list.
    when: u64,
    prev: u32,
    /// Next node in the slot list, or in the free list for free nodes.
    next: u32,
    payload: T,
}

/// A hierarchical timer wheel holding payloads of type `T` (small, `Copy`, compared on cancel).
pub struct TimerWheel<T> {
    /// The tick the wheel has been advanced to; never goes back.
    elapsed: u64,
    /// Bit `s` of `occupied[l]` is set while slot `s` of level `l` holds an entry.
    occupied: [u64; LEVELS],
    /// Sentinels first (see [`FIRST_ENTRY`]), then entries, live or free.
    nodes: Vec<Node<T>>,
    /// Head of the free list.
    free: u32,
    /// Live timers.
    len: usize,
}

/// The next slot that will need attention, and when.
struct Expiration {
    level: usize,
    slot: usize,
    deadline: u64,
}

impl<T: Copy + Default + PartialEq> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default + PartialEq> TimerWheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        let mut nodes = Vec::with_capacity(INITIAL_NODES);
        nodes.extend((0..FIRST_ENTRY).map(|i| Node { when: 0, prev: i, next: i, payload: T::default() }));
        TimerWheel { elapsed: 0, occupied: [0; LEVELS], nodes, free: NIL, len: 0 }
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick the wheel has been advanced to.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Bytes of heap this wheel holds (its slab), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<T>>()
    }

    /// Schedules `payload` to fire at tick `when`. A deadline at or before the wheel's
    /// current tick fires on the next [`advance`](Self::advance).
    pub fn insert(&mut self, when: u64, payload: T) -> TimerId {
        let when = when.min(MAX_DEADLINE);
        let idx = match self.free {
            NIL => {
                let idx = u32::try_from(self.nodes.len()).expect("timer slab exceeds u32 indices");
                assert!(idx != NIL, "timer slab exceeds u32 indices");
                self.nodes.push(Node { when, prev: NIL, next: NIL, payload });
                idx
            }
            idx => {
                let node = &mut self.nodes[idx as usize];
                self.free = node.next;
                node.when = when;
                node.payload = payload;
                idx
            }
        };
        self.place(idx);
        self.len += 1;
        TimerId(idx)
    }

    /// Cancels timer `id` if it is live and still carries `payload`; returns whether it did.
    /// O(1).
    pub fn cancel(&mut self, id: TimerId, payload: &T) -> bool {
        if !self.is_live(id, payload) {
            return false;
        }
        self.unlink(id.0);
        self.release(id.0);
        true
    }

    /// Deadline of timer `id` if it is live and still carries `payload`.
    pub fn deadline(&self, id: TimerId, payload: &T) -> Option<u64> {
        self.is_live(id, payload).then(|| self.nodes[id.0 as usize].when)
    }

    /// The earliest tick at which [`advance`](Self::advance) may have work: never later than
    /// the earliest live deadline (it can be earlier, when a higher-level slot has to be opened
    /// and its entries moved down). `None` when no timer is live.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.list_is_empty(PENDING) || !self.list_is_empty(CASCADE) {
            return Some(self.elapsed);
        }
        self.next_expiration().map(|e| e.deadline)
    }

    /// Moves the wheel to tick `now` and appends `(deadline, payload)` of the timers due by
    /// then to `fired`, doing at most `budget` steps. Returns `true` if it stopped for the
    /// budget with work left (call again), `false` once everything due by `now` has fired.
    pub fn advance(&mut self, now: u64, budget: usize, fired: &mut Vec<(u64, T)>) -> bool {
        for _ in 0..budget {
            let due = self.nodes[PENDING as usize].next;
            if due != PENDING {
                self.unlink(due);
                let node = &self.nodes[due as usize];
                fired.push((node.when, node.payload));
                self.release(due);
                continue;
            }
            let moving = self.nodes[CASCADE as usize].next;
            if moving != CASCADE {
                self.unlink(moving);
                self.place(moving);
                continue;
            }
            match self.next_expiration() {
                Some(e) if e.deadline <= now => self.open_slot(e),
                _ => {
                    self.elapsed = self.elapsed.max(now.min(MAX_DEADLINE));
                    return false;
                }
            }
        }
        self.next_deadline().is_some_and(|d| d <= now)
    }

    fn is_live(&self, id: TimerId, payload: &T) -> bool {
        id.0 >= FIRST_ENTRY
            && self.nodes.get(id.0 as usize).is_some_and(|n| n.when != FREE && n.payload == *payload)
    }

    /// Links node `idx` into the list its deadline belongs to, relative to `elapsed`.
    fn place(&mut self, idx: u32) {
        let when = self.nodes[idx as usize].when;
        if when <= self.elapsed {
            self.link_back(PENDING, idx);
            return;
        }
        let level = level_for(self.elapsed, when);
        let slot = slot_for(when, level);
        self.link_back((level * SLOTS + slot) as u32, idx);
        self.occupied[level] |= 1 << slot;
    }

    /// Moves a due slot's whole list onto the cascade list (O(1)) and advances `elapsed` to the
    /// slot's start; `advance` then moves the entries down one step at a time.
    fn open_slot(&mut self, e: Expiration) {
        let head = (e.level * SLOTS + e.slot) as u32;
        self.occupied[e.level] &= !(1 << e.slot);
        self.elapsed = e.deadline;
        let first = self.nodes[head as usize].next;
        let last = self.nodes[head as usize].prev;
        self.nodes[head as usize].next = head;
        self.nodes[head as usize].prev = head;
        // The cascade list is empty whenever a slot is opened (advance drains it first).
        self.nodes[CASCADE as usize].next = first;
        self.nodes[CASCADE as usize].prev = last;
        self.nodes[first as usize].prev = CASCADE;
        self.nodes[last as usize].next = CASCADE;
    }

    fn next_expiration(&self) -> Option<Expiration> {
        (0..LEVELS).find_map(|level| {
            let occupied = self.occupied[level];
            if occupied == 0 {
                return None;
            }
            let shift = SLOT_BITS * level as u32;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << SLOT_BITS;
            // Search from the slot after the current one, round to the current one last: the
            // current slot of a level, and the ones before it, can only hold far deadlines
            // parked in the top level, which belong to the level's next turn.
            let now_slot = (self.elapsed >> shift) & (SLOTS as u64 - 1);
            let from = (now_slot as u32 + 1) % SLOTS as u32;
            let slot = (occupied.rotate_right(from).trailing_zeros() + from) as usize % SLOTS;
            let level_start = self.elapsed & !(level_range - 1);
            let mut deadline = level_start + slot as u64 * slot_range;
            if deadline <= self.elapsed {
                deadline += level_range;
            }
            Some(Expiration { level, slot, deadline })
        })
    }

    fn list_is_empty(&self, head: u32) -> bool {
        self.nodes[head as usize].next == head
    }

    fn link_back(&mut self, head: u32, idx: u32) {
        let last = self.nodes[head as usize].prev;
        self.nodes[idx as usize].prev = last;
        self.nodes[idx as usize].next = head;
        self.nodes[last as usize].next = idx;
        self.nodes[head as usize].prev = idx;
    }

    /// Unlinks node `idx` from its list, clearing the slot's occupancy bit if it empties.
    fn unlink(&mut self, idx: u32) {
        let Node { prev, next, .. } = self.nodes[idx as usize];
        self.nodes[prev as usize].next = next;
        self.nodes[next as usize].prev = prev;
        // Only a sentinel can be both neighbours of the last entry of a list.
        if prev == next && prev < PENDING {
            self.occupied[prev as usize / SLOTS] &= !(1 << (prev as usize % SLOTS));
        }
    }

    /// Returns an unlinked node to the free list. When the last timer goes, the slab goes
    /// back to its initial size: while timers are live it stays at its peak (ids are indices,
    /// so live nodes cannot move), which churn reuses but does not grow.
    fn release(&mut self, idx: u32) {
        let node = &mut self.nodes[idx as usize];
        node.when = FREE;
        node.payload = T::default();
        node.prev = NIL;
        node.next = self.free;
        self.free = idx;
        self.len -= 1;
        if self.len == 0 && self.nodes.capacity() > INITIAL_NODES {
            self.nodes.truncate(FIRST_ENTRY as usize);
            self.nodes.shrink_to(INITIAL_NODES);
            self.free = NIL;
        }
    }
}

/// The level whose slots are the right size for `when`, seen from `elapsed`: the highest
/// 6-bit digit in which the two differ. Deadlines beyond the span park in the top level.
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = ((elapsed ^ when) | (SLOTS as u64 - 1)).min(SPAN - 1);
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: usize = usize::MAX;

    fn fire(w: &mut TimerWheel<u64>, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        assert!(!w.advance(now, ALL, &mut out));
        let mut payloads: Vec<u64> = out.iter().map(|&(_, p)| p).collect();
        payloads.sort_unstable();
        payloads
    }

    #[test]
    fn fires_exactly_at_its_deadline_never_before() {
        let mut w = TimerWheel::new();
        w.insert(100, 1);
        assert_eq!(w.next_deadline(), Some(64), "level-1 slot opens at 64");
        assert_eq!(fire(&mut w, 99), Vec::<u64>::new());
        assert_eq!(w.next_deadline(), Some(100));
        assert_eq!(fire(&mut w, 100), vec![1]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn a_deadline_already_passed_fires_on_the_next_advance() {
        let mut w = TimerWheel::new();
        assert_eq!(fire(&mut w, 500), Vec::<u64>::new());
        w.insert(20, 7);
        w.insert(500, 8);
        assert_eq!(w.next_deadline(), Some(500));
        assert_eq!(fire(&mut w, 500), vec![7, 8]);
    }

    #[test]
    fn cancel_is_checked_against_the_payload() {
        let mut w = TimerWheel::new();
        let a = w.insert(10, 1);
        assert!(!w.cancel(a, &2), "wrong payload");
        assert_eq!(w.deadline(a, &1), Some(10));
        assert!(w.cancel(a, &1));
        assert!(!w.cancel(a, &1), "already cancelled");
        let b = w.insert(30, 3);
        assert_eq!(a, b, "slab slot reused");
        assert!(!w.cancel(a, &1), "stale handle must not cancel the new timer");
        assert_eq!(fire(&mut w, 30), vec![3]);
        assert!(!w.cancel(TimerId::NONE, &0));
    }

    #[test]
    fn far_deadlines_weeks_ahead_and_beyond_the_span() {
        let week = 7 * 24 * 3600 * 1000;
        let beyond = SPAN * 3 + 12345;
        let mut w = TimerWheel::new();
        w.insert(week, 1);
        w.insert(beyond, 2);
        let clamped = w.insert(u64::MAX, 3);
        assert_eq!(w.deadline(clamped, &3), Some(MAX_DEADLINE));
        assert_eq!(fire(&mut w, week - 1), Vec::<u64>::new());
        assert_eq!(fire(&mut w, week), vec![1]);
        assert_eq!(fire(&mut w, beyond - 1), Vec::<u64>::new());
        assert_eq!(fire(&mut w, beyond), vec![2]);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn advance_is_bounded_by_its_budget() {
        let mut w = TimerWheel::new();
        for i in 0..10_000 {
            w.insert(5000, i);
        }
        let mut out = Vec::new();
        let mut calls = 0;
        while w.advance(5000, 100, &mut out) {
            calls += 1;
            assert!(out.len() <= calls * 100);
        }
        assert_eq!(out.len(), 10_000);
        assert!(calls >= 100, "work was spread over {calls} calls");
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_works_while_an_opened_slot_is_cascading() {
        let mut w = TimerWheel::new();
        let ids: Vec<_> = (0..10).map(|i| w.insert(4096 + 70 + i, i)).collect();
        let mut out = Vec::new();
        // Open the level-2 slot, then stop mid-cascade.
        assert!(w.advance(4096 + 70, 2, &mut out));
        assert!(w.cancel(ids[5], &5));
        assert!(!w.advance(4096 + 100, ALL, &mut out));
        out.sort_unstable();
        let expected: Vec<(u64, u64)> = [0, 1, 2, 3, 4, 6, 7, 8, 9].map(|i| (4096 + 70 + i, i)).into();
        assert_eq!(out, expected);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let hour = 3_600_000u64;
        prop_oneof![
            4 => (0u64..200).prop_map(Op::Insert),
            2 => (0u64..100_000).prop_map(Op::Insert),
            1 => (0u64..(24 * 7 * 4 * hour)).prop_map(Op::Insert),
            1 => (0u64..SPAN * 2).prop_map(Op::Insert),
            3 => any::<usize>().prop_map(Op::Cancel),
            4 => prop_oneof![0u64..10, 0u64..5000, 0u64..(hour * 24 * 30)].prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Against a sorted list: every advance fires exactly the deadlines <= now, never
        /// early, and next_deadline is never later than the earliest live deadline.
        #[test]
        fn matches_a_sorted_list(ops in prop::collection::vec(op(), 1..200), budget in 1usize..50) {
            let mut w = TimerWheel::new();
            let mut model: Vec<(u64, u64)> = Vec::new(); // (deadline, payload), live timers
            let mut ids: Vec<(TimerId, u64)> = Vec::new();
            let mut now = 0u64;
            let mut next_payload = 0u64;
            for op in ops {
                match op {
                    Op::Insert(delta) => {
                        next_payload += 1;
                        let id = w.insert(now + delta, next_payload);
                        model.push((now + delta, next_payload));
                        ids.push((id, next_payload));
                    }
                    Op::Cancel(pick) => {
                        if ids.is_empty() { continue; }
                        let (id, payload) = ids[pick % ids.len()];
                        let live = model.iter().any(|&(_, p)| p == payload);
                        prop_assert_eq!(w.cancel(id, &payload), live);
                        model.retain(|&(_, p)| p != payload);
                    }
                    Op::Advance(delta) => {
                        now += delta;
                        let mut fired = Vec::new();
                        while w.advance(now, budget, &mut fired) {}
                        fired.sort_unstable();
                        let mut due: Vec<(u64, u64)> = model.iter().copied().filter(|&(d, _)| d <= now).collect();
                        due.sort_unstable();
                        prop_assert_eq!(&fired, &due);
                        model.retain(|&(d, _)| d > now);
                    }
                }
                prop_assert_eq!(w.len(), model.len());
                let earliest = model.iter().map(|&(d, _)| d).min();
                match (w.next_deadline(), earliest) {
                    (None, None) => {}
                    (Some(hint), Some(min)) => prop_assert!(hint <= min.max(w.elapsed()), "hint {hint} after earliest {min}"),
                    (hint, min) => prop_assert!(false, "hint {hint:?} vs earliest {min:?}"),
                }
            }
        }
    }
}
