//! How long acquires waited for their grant and how long locks were held: bucket counts a
//! shard keeps of its own locks, in its ticks (ms), for `/metrics`. Pure and plain (`&mut`, no
//! cell): the shard records, a stats request copies.

/// Upper bounds of the buckets, in ms (the last bucket is +Inf): from a lock held for the
/// millisecond of one request to the day a wait may last at most, through the seconds and
/// minutes of typical jobs.
pub const DURATION_BUCKETS_MS: [u64; 15] =
    [1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 1_800_000, 3_600_000, 86_400_000];

/// Times in ms, by bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durations {
    /// `counts[i]`: times in `(DURATION_BUCKETS_MS[i-1], DURATION_BUCKETS_MS[i]]`; the last:
    /// above them all.
    pub counts: [u64; DURATION_BUCKETS_MS.len() + 1],
    pub sum_ms: u64,
}

impl Durations {
    /// Records one time of `ms`.
    pub fn record(&mut self, ms: u64) {
        // Most holds and waits of a busy server fit the first bucket: one comparison.
        let bucket = match ms <= DURATION_BUCKETS_MS[0] {
            true => 0,
            false => DURATION_BUCKETS_MS.partition_point(|&bound| bound < ms),
        };
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Times recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_goes_in_the_first_bucket_it_fits() {
        let mut d = Durations::default();
        for ms in [0, 1, 2, 5, 86_400_000, 86_400_001, u64::MAX] {
            d.record(ms);
        }
        let mut counts = [0; 16];
        (counts[0], counts[1], counts[14], counts[15]) = (2, 2, 1, 2);
        assert_eq!(d.counts, counts);
        assert_eq!((d.count(), d.sum_ms), (7, u64::MAX), "the sum saturates");
    }
}
