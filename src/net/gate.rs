//! A connection's durability gate: which of its answer bytes may go out. An answer written
//! while the core's log still had records on their way to the disk waits for the batch that
//! carries them (and, bytes being in order, so does everything after it). Pure bookkeeping
//! over offsets into the connection's answer buffer.

use std::collections::VecDeque;

/// Marks in a connection's answer buffer: from each mark on, the bytes wait for a batch.
#[derive(Debug, Default)]
pub struct Gate {
    /// `(start, batch)`, in buffer order, batches rising.
    marks: VecDeque<(usize, u64)>,
}

impl Gate {
    /// Bytes from `start` on may go out only once batch `batch` is durable.
    pub fn hold(&mut self, start: usize, batch: u64) {
        if self.marks.back().is_some_and(|&(_, b)| b >= batch) {
            // An earlier mark already holds these bytes back at least as long.
            return;
        }
        self.marks.push_back((start, batch));
    }

    /// How many of the `len` bytes may go out now that every batch up to `durable` is.
    pub fn sendable(&mut self, len: usize, durable: u64) -> usize {
        while self.marks.front().is_some_and(|&(_, b)| b <= durable) {
            self.marks.pop_front();
        }
        self.marks.front().map_or(len, |&(start, _)| start)
    }

    /// The first `n` bytes went out.
    pub fn sent(&mut self, n: usize) {
        for (start, _) in self.marks.iter_mut() {
            *start -= n;
        }
    }

    /// Whether bytes wait for a batch.
    #[cfg(test)]
    fn holding(&self) -> bool {
        !self.marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_wait_for_their_batch_and_those_behind_them_too() {
        let mut g = Gate::default();
        assert_eq!(g.sendable(10, 0), 10, "nothing held");
        g.hold(10, 3);
        g.hold(25, 3);
        g.hold(30, 4);
        assert_eq!(g.sendable(40, 2), 10);
        g.sent(10);
        assert_eq!(g.sendable(30, 2), 0, "the rest waits for batch 3");
        assert_eq!(g.sendable(30, 3), 20, "batch 3 durable: up to the mark for batch 4");
        g.sent(20);
        assert!(g.holding());
        assert_eq!(g.sendable(10, 4), 10);
        assert!(!g.holding());
    }
}
