//! The open loop's arithmetic: when each request is due, and how a connection waits for the
//! next one. A fixed total rate is spread evenly over the connections, in batches of `batch`
//! requests written together (1: each request on its own; 16: like a client pipelining 16 at a
//! time). The run's batches are numbered 0, 1, 2, ... and batch `n` is due `n * batch / rate`
//! seconds after the start; connection `c` of `N` sends batches `c, c + N, c + 2N, ...`.
//! Latency is measured from these intended times, so a generator or server that falls behind
//! shows up in the latency instead of silently lowering the rate (no coordinated omission).

use std::time::Duration;

/// Closer than this to a request's due time, a connection polls the clock (yielding to the
/// other tasks in between) instead of sleeping: tokio's timer wheel ticks once a millisecond,
/// so a sleep could send up to a millisecond late, which would swamp latencies of tens of
/// microseconds.
pub const SPIN_BELOW: Duration = Duration::from_millis(2);

/// When the `k`-th batch of connection `conn` (of `conns`) is due, counted from the start of
/// the run, at `rate` requests per second in total and `batch` requests per batch.
pub fn due(conn: usize, k: u64, conns: usize, rate: u64, batch: usize) -> Duration {
    debug_assert!(rate > 0 && batch > 0 && conn < conns);
    let n = u128::from(k) * conns as u128 + conn as u128;
    let ns = n * batch as u128 * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// How a connection waits for a request due at `due`, when the time is `now` (both offsets
/// from the start of the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// It is due: send it.
    Send,
    /// It is due within [`SPIN_BELOW`]: yield and look again.
    Spin,
    /// Sleep until this offset, then look again.
    Sleep(Duration),
}

/// How to wait at `now` for a request due at `due`.
pub fn wait(now: Duration, due: Duration) -> Wait {
    if due <= now {
        Wait::Send
    } else if due - now <= SPIN_BELOW {
        Wait::Spin
    } else {
        Wait::Sleep(due - SPIN_BELOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn connections_interleave_into_one_evenly_spaced_stream() {
        // 1000 requests/s over 4 connections: one every millisecond, round robin.
        assert_eq!(due(0, 0, 4, 1000, 1), ms(0));
        assert_eq!(due(1, 0, 4, 1000, 1), ms(1));
        assert_eq!(due(3, 0, 4, 1000, 1), ms(3));
        assert_eq!(due(0, 1, 4, 1000, 1), ms(4));
        assert_eq!(due(2, 5, 4, 1000, 1), ms(22));
        let mut all: Vec<Duration> =
            (0..4).flat_map(|c| (0..25).map(move |k| due(c, k, 4, 1000, 1))).collect();
        all.sort();
        assert_eq!(all, (0..100).map(ms).collect::<Vec<_>>());
    }

    #[test]
    fn batches_are_spaced_by_their_size() {
        // 1000 requests/s in batches of 10 over 2 connections: a batch every 10 ms, alternating.
        assert_eq!(due(0, 0, 2, 1000, 10), ms(0));
        assert_eq!(due(1, 0, 2, 1000, 10), ms(10));
        assert_eq!(due(0, 1, 2, 1000, 10), ms(20));
        assert_eq!(due(1, 7, 2, 1000, 10), ms(150));
    }

    #[test]
    fn rates_that_do_not_divide_a_second_round_down_to_the_nanosecond() {
        // 3 requests/s: 0, 333333333 ns, 666666666 ns, 1 s.
        assert_eq!(due(0, 1, 1, 3, 1), Duration::from_nanos(333_333_333));
        assert_eq!(due(0, 2, 1, 3, 1), Duration::from_nanos(666_666_666));
        assert_eq!(due(0, 3, 1, 3, 1), Duration::from_secs(1));
    }

    #[test]
    fn a_run_of_a_million_requests_per_second_for_an_hour_does_not_overflow() {
        let k = 3_600_000_000 / 64 / 16;
        assert_eq!(due(0, k, 64, 1_000_000, 16), Duration::from_secs(3600));
    }

    #[test]
    fn waiting_polls_near_the_due_time_and_sleeps_before() {
        assert_eq!(wait(ms(10), ms(10)), Wait::Send);
        assert_eq!(wait(ms(11), ms(10)), Wait::Send);
        assert_eq!(wait(ms(10), ms(11)), Wait::Spin);
        assert_eq!(wait(ms(10), ms(12)), Wait::Spin);
        assert_eq!(wait(ms(10), ms(13)), Wait::Sleep(ms(11)));
        assert_eq!(wait(ms(0), ms(1000)), Wait::Sleep(ms(998)));
    }
}
