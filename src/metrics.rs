//! Metrics: owns the service-time histogram each core keeps, the snapshot a core gives of
//! itself, and the Prometheus text exposition of all cores' snapshots (`GET /metrics`), with
//! the lock times each core's shard counts ([`Durations`]). Counts and times only: never a
//! resource or owner name, never the secret.

use std::cell::Cell;
use std::fmt::Write;
use std::time::Duration;

use crate::shard::{DURATION_BUCKETS_MS, Durations, Stats};

/// Upper bounds of the service-time buckets, in microseconds (the last bucket is +Inf).
/// Lock work itself takes a microsecond or two; waits and other cores' answers fill the rest.
pub const BUCKETS_US: [u64; 14] =
    [10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000];

/// Upper bounds of the log's batch-size buckets, in bytes (the last bucket is +Inf): one lock
/// change is a few tens of bytes, a turn under load gathers thousands.
pub const BATCH_BUCKETS_BYTES: [u64; 8] = [64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576];

/// Log batches by size, one core's, as [`Durations`] keeps times: `counts[i]` batches of
/// `(BATCH_BUCKETS_BYTES[i-1], BATCH_BUCKETS_BYTES[i]]` bytes, the last above them all; and
/// the bytes of them all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchSizes {
    pub counts: [u64; BATCH_BUCKETS_BYTES.len() + 1],
    pub sum_bytes: u64,
}

impl BatchSizes {
    /// Counts one batch of `bytes`.
    pub fn record(&mut self, bytes: u64) {
        self.counts[BATCH_BUCKETS_BYTES.partition_point(|&bound| bound < bytes)] += 1;
        self.sum_bytes = self.sum_bytes.saturating_add(bytes);
    }

    /// Batches counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Service times (from a request's arrival to its answer being ready), one core's.
#[derive(Default)]
pub struct Histogram {
    /// `counts[i]`: times in `(BUCKETS_US[i-1], BUCKETS_US[i]]`; the last: above them all.
    counts: [Cell<u64>; BUCKETS_US.len() + 1],
    sum_us: Cell<u64>,
}

impl Histogram {
    /// Records `n` requests that each took `took`.
    pub fn record(&self, took: Duration, n: u64) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        self.counts[bucket].set(self.counts[bucket].get() + n);
        self.sum_us.set(self.sum_us.get().saturating_add(us.saturating_mul(n)));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot { counts: self.counts.each_ref().map(Cell::get), sum_us: self.sum_us.get() }
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub counts: [u64; BUCKETS_US.len() + 1],
    pub sum_us: u64,
}

/// One core at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub core: usize,
    pub shard: Stats,
    pub connections: usize,
    pub latency: HistogramSnapshot,
    /// Its log, if the server keeps one.
    pub log: Option<LogStats>,
    /// Requests its connections had refused for a missing or wrong secret.
    pub auth_failures: u64,
}

/// A core's log at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches written and synced, by size.
    pub sizes: BatchSizes,
    /// Writes or syncs that failed (each retried).
    pub write_errors: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Writes fail now: changes are refused.
    pub failing: bool,
    /// Time to write and sync each batch.
    pub sync: HistogramSnapshot,
}

/// A metric's name, help text, and how to read it from a snapshot.
type Metric<T> = (&'static str, &'static str, fn(&T) -> u64);
/// A lock-time histogram's name, help text, and how to read it from a shard's stats.
type LockTimes = (&'static str, &'static str, fn(&Stats) -> &Durations);

/// The Prometheus text of every core's snapshot: totals summed, gauges per core.
pub fn render(cores: &[CoreStats]) -> String {
    let mut out = String::new();
    let total = |f: fn(&Stats) -> u64| cores.iter().map(|c| f(&c.shard)).sum::<u64>();
    let _ =
        writeln!(out, "# HELP ringlock_build_info The running version.\n# TYPE ringlock_build_info gauge");
    let _ = writeln!(out, "ringlock_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let counters: [Metric<Stats>; 11] = [
        ("grants", "Locks granted, hand-offs to waiters included.", |s| s.grants),
        ("conflicts", "Acquires answered that the lock is held.", |s| s.conflicts),
        ("releases", "Locks released by their holder.", |s| s.releases),
        ("forced_releases", "Locks freed by a forced release, whoever held them.", |s| s.forced_releases),
        ("extends", "Leases renewed.", |s| s.extends),
        ("expiries", "Leases that ran out.", |s| s.expiries),
        ("waits", "Acquires that queued to wait for a lock.", |s| s.waits),
        ("wait_timeouts", "Waits that ran out.", |s| s.wait_timeouts),
        ("refused_locks", "Acquires of a new name refused: a core held its share of --max-locks.", |s| {
            s.refused_locks
        }),
        ("refused_waiters", "Waits refused: a core held its share of --max-waiters.", |s| s.refused_waiters),
        ("list_visited", "Locks that list calls looked at to make their pages.", |s| s.list_visited),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP ringlock_{name}_total {help}\n# TYPE ringlock_{name}_total counter");
        let _ = writeln!(out, "ringlock_{name}_total {}", total(get));
    }
    let name = "ringlock_auth_failures_total";
    let help = "Requests refused for a missing or wrong secret.";
    let auth_failures: u64 = cores.iter().map(|c| c.auth_failures).sum();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {auth_failures}");
    let gauges: [Metric<CoreStats>; 5] = [
        ("held_locks", "Locks held, per core.", |c| c.shard.held),
        ("waiters", "Acquires waiting for a lock, per core.", |c| c.shard.waiters),
        ("max_locks", "Each core's share of --max-locks.", |c| c.shard.max_locks),
        ("max_waiters", "Each core's share of --max-waiters.", |c| c.shard.max_waiters),
        ("connections", "Open connections, per core.", |c| c.connections as u64),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP ringlock_{name} {help}\n# TYPE ringlock_{name} gauge");
        for c in cores {
            let _ = writeln!(out, "ringlock_{name}{{core=\"{}\"}} {}", c.core, get(c));
        }
    }
    histogram(
        &mut out,
        "ringlock_request_duration_seconds",
        "Time from a request's arrival to its answer being ready.",
        cores.iter().map(|c| &c.latency),
    );
    let lock_times: [LockTimes; 2] = [
        (
            "ringlock_wait_duration_seconds",
            "Time a granted acquire waited, from queueing to its grant.",
            |s| &s.wait_times,
        ),
        (
            "ringlock_hold_duration_seconds",
            "Time a lock was held, from its grant to its release (forced too) or expiry.",
            |s| &s.hold_times,
        ),
    ];
    for (name, help, get) in lock_times {
        let parts = cores.iter().map(|c| get(&c.shard)).map(|d| (&d.counts[..], d.sum_ms));
        buckets(&mut out, name, help, (&DURATION_BUCKETS_MS, 1e3), parts);
    }
    let logs: Vec<&LogStats> = cores.iter().filter_map(|c| c.log.as_ref()).collect();
    if !logs.is_empty() {
        let log_counters: [Metric<LogStats>; 4] = [
            ("log_batches", "Log batches written and synced.", |l| l.sizes.count()),
            ("log_bytes", "Bytes of log records written.", |l| l.sizes.sum_bytes),
            ("log_write_errors", "Log writes or syncs that failed (each is retried).", |l| l.write_errors),
            ("log_snapshots", "Snapshots written.", |l| l.snapshots),
        ];
        for (name, help, get) in log_counters {
            let _ =
                writeln!(out, "# HELP ringlock_{name}_total {help}\n# TYPE ringlock_{name}_total counter");
            let _ = writeln!(out, "ringlock_{name}_total {}", logs.iter().map(|l| get(l)).sum::<u64>());
        }
        let name = "ringlock_log_failing";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while a core cannot write its log (and refuses changes).\n# TYPE {name} gauge"
        );
        for c in cores {
            if let Some(l) = &c.log {
                let _ = writeln!(out, "{name}{{core=\"{}\"}} {}", c.core, u8::from(l.failing));
            }
        }
        histogram(
            &mut out,
            "ringlock_log_sync_duration_seconds",
            "Time to write and sync one log batch.",
            logs.iter().map(|l| &l.sync),
        );
        buckets(
            &mut out,
            "ringlock_log_batch_bytes",
            "Bytes of records in one log batch.",
            (&BATCH_BUCKETS_BYTES, 1.0),
            logs.iter().map(|l| (&l.sizes.counts[..], l.sizes.sum_bytes)),
        );
    }
    out
}

/// Writes a histogram of service times summed over `parts`.
fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    parts: impl Iterator<Item = &'a HistogramSnapshot> + Clone,
) {
    buckets(out, name, help, (&BUCKETS_US, 1e6), parts.map(|h| (&h.counts[..], h.sum_us)));
}

/// Writes a histogram summed over `parts` (each its bucket counts and sum), whose buckets are
/// bounded by `bounds` (then +Inf) in units of which `per_unit` make one of the exposed unit
/// (1e6 µs a second; 1.0 for bytes).
fn buckets<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    (bounds, per_unit): (&[u64], f64),
    parts: impl Iterator<Item = (&'a [u64], u64)> + Clone,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in
        bounds.iter().map(|&b| format!("{}", b as f64 / per_unit)).chain(["+Inf".to_owned()]).enumerate()
    {
        cumulative += parts.clone().map(|(counts, _)| counts[i]).sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let sum: u64 = parts.map(|(_, sum)| sum).sum();
    let _ = writeln!(out, "{name}_sum {}", sum as f64 / per_unit);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let h = Histogram::default();
        h.record(Duration::from_micros(3), 2);
        h.record(Duration::from_micros(10), 1);
        h.record(Duration::from_micros(11), 1);
        h.record(Duration::from_secs(60), 1);
        let s = h.snapshot();
        assert_eq!(&s.counts[..3], &[3, 1, 0]);
        assert_eq!(s.counts[BUCKETS_US.len()], 1);
        assert_eq!(s.sum_us, 6 + 10 + 11 + 60_000_000);
    }

    #[test]
    fn log_batches_by_size() {
        let mut sizes = BatchSizes::default();
        for bytes in [31, 64, 65, 5_000, 2_000_000] {
            sizes.record(bytes);
        }
        assert_eq!(sizes.counts, [2, 1, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!((sizes.count(), sizes.sum_bytes), (5, 2_005_160));
        let log = LogStats { sizes, ..LogStats::default() };
        let mut small = BatchSizes::default();
        small.record(40);
        let other = LogStats { sizes: small, ..LogStats::default() };
        let text = render(&[
            CoreStats { log: Some(log), ..CoreStats::default() },
            CoreStats { core: 1, log: Some(other), ..CoreStats::default() },
        ]);
        for line in [
            "# TYPE ringlock_log_batch_bytes histogram",
            "ringlock_log_batch_bytes_bucket{le=\"64\"} 3",
            "ringlock_log_batch_bytes_bucket{le=\"256\"} 4",
            "ringlock_log_batch_bytes_bucket{le=\"16384\"} 5",
            "ringlock_log_batch_bytes_bucket{le=\"1048576\"} 5",
            "ringlock_log_batch_bytes_bucket{le=\"+Inf\"} 6",
            "ringlock_log_batch_bytes_sum 2005200",
            "ringlock_log_batch_bytes_count 6",
            "ringlock_log_batches_total 6",
            "ringlock_log_bytes_total 2005200",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn exposition_text() {
        let h = Histogram::default();
        h.record(Duration::from_micros(40), 3);
        let a = CoreStats {
            core: 0,
            shard: Stats { grants: 5, conflicts: 1, held: 2, ..Stats::default() },
            connections: 3,
            latency: h.snapshot(),
            log: None,
            auth_failures: 0,
        };
        let mut hold_times = Durations::default();
        hold_times.record(3);
        hold_times.record(86_400_001);
        let b = CoreStats {
            core: 1,
            shard: Stats { grants: 2, held: 1, forced_releases: 1, hold_times, ..Stats::default() },
            ..CoreStats::default()
        };
        let text = render(&[CoreStats { auth_failures: 3, ..a }, CoreStats { auth_failures: 1, ..b }]);
        for line in [
            "ringlock_grants_total 7",
            "ringlock_conflicts_total 1",
            "ringlock_expiries_total 0",
            "ringlock_auth_failures_total 4",
            "ringlock_held_locks{core=\"0\"} 2",
            "ringlock_held_locks{core=\"1\"} 1",
            "ringlock_connections{core=\"0\"} 3",
            "ringlock_request_duration_seconds_bucket{le=\"0.00001\"} 0",
            "ringlock_request_duration_seconds_bucket{le=\"0.00005\"} 3",
            "ringlock_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "ringlock_request_duration_seconds_sum 0.00012",
            "ringlock_request_duration_seconds_count 3",
            "# TYPE ringlock_request_duration_seconds histogram",
            "ringlock_forced_releases_total 1",
            "# TYPE ringlock_hold_duration_seconds histogram",
            "ringlock_hold_duration_seconds_bucket{le=\"0.001\"} 0",
            "ringlock_hold_duration_seconds_bucket{le=\"0.005\"} 1",
            "ringlock_hold_duration_seconds_bucket{le=\"86400\"} 1",
            "ringlock_hold_duration_seconds_bucket{le=\"+Inf\"} 2",
            "ringlock_hold_duration_seconds_sum 86400.004",
            "ringlock_hold_duration_seconds_count 2",
            "# TYPE ringlock_wait_duration_seconds histogram",
            "ringlock_wait_duration_seconds_bucket{le=\"+Inf\"} 0",
            "ringlock_wait_duration_seconds_sum 0",
            "ringlock_wait_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
