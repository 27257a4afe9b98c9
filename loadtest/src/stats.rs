//! What a run counts and measures: counters of replies by outcome, latency histograms
//! (`hdrhistogram`, nanoseconds), the per-second progress line, and the final [`Report`] in
//! its two forms (a human table, and JSON for scripts). No I/O except through the caller.

use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::op::{OpKind, Outcome};

/// Highest latency a histogram tracks; longer ones are recorded as this. A reply later than a
/// minute is a hung server, which the run's drain timeout reports anyway.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Significant decimal digits the histograms keep: 0.1% resolution at every magnitude.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Longest description of an error reply kept for the report.
pub const MAX_ERROR_TEXT: usize = 160;

/// A histogram of latencies in nanoseconds.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS).expect("constant bounds are valid")
}

/// Replies counted by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Replies received.
    pub replies: u64,
    /// Acquires granted.
    pub grants: u64,
    /// Lock requests refused (409, Redis nil or `:0`).
    pub conflicts: u64,
    /// Releases and health probes that succeeded.
    pub done: u64,
    /// Error replies, plus requests never answered because their connection failed.
    pub errors: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        self.replies += 1;
        match outcome {
            Outcome::Granted => self.grants += 1,
            Outcome::Conflict => self.conflicts += 1,
            Outcome::Done => self.done += 1,
            Outcome::Error => self.errors += 1,
        }
    }
}

/// Everything a run records. Replies to requests sent (or, in an open loop, due) before the
/// warm-up ended count only in `all_time`, which feeds the progress line.
pub struct Stats {
    /// Counts over the whole run, warm-up included.
    pub all_time: Counts,
    /// Counts over the measured window.
    pub measured: Counts,
    /// Latency of measured acquires.
    pub acquire: Histogram<u64>,
    /// Latency of every measured request.
    pub all: Histogram<u64>,
    /// Hold-and-release: from a cycle's first acquire attempt to its grant.
    pub wait: Histogram<u64>,
    /// Hold-and-release: from a lock's release to its next grant (to another connection).
    pub handoff: Histogram<u64>,
    /// Open loop: how late each request left after its intended send time.
    pub send_lag: Histogram<u64>,
    /// The first error seen, described.
    pub first_error: Option<String>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Stats {
        Stats {
            all_time: Counts::default(),
            measured: Counts::default(),
            acquire: histogram(),
            all: histogram(),
            wait: histogram(),
            handoff: histogram(),
            send_lag: histogram(),
            first_error: None,
        }
    }

    /// Records one reply to a request of kind `kind` that took `latency`; `measured` says
    /// whether it belongs to the measured window.
    pub fn record(&mut self, kind: OpKind, outcome: Outcome, latency: Duration, measured: bool) {
        self.all_time.add(outcome);
        if measured {
            self.measured.add(outcome);
            let ns = nanos(latency);
            self.all.saturating_record(ns);
            if kind == OpKind::Acquire {
                self.acquire.saturating_record(ns);
            }
        }
    }

    /// Records how long a hold-and-release cycle waited for its grant.
    pub fn record_wait(&mut self, wait: Duration, measured: bool) {
        if measured {
            self.wait.saturating_record(nanos(wait));
        }
    }

    /// Records how long a lock stayed free between a release and the next grant.
    pub fn record_handoff(&mut self, gap: Duration, measured: bool) {
        if measured {
            self.handoff.saturating_record(nanos(gap));
        }
    }

    /// Records how late an open-loop request left.
    pub fn record_lag(&mut self, lag: Duration, measured: bool) {
        if measured {
            self.send_lag.saturating_record(nanos(lag));
        }
    }

    /// Counts `lost` requests that will never be answered (their connection failed, or the
    /// run gave up waiting) as errors, and keeps `why` if it is the first error.
    pub fn record_lost(&mut self, lost: u64, measured: u64, why: impl FnOnce() -> String) {
        self.all_time.errors += lost;
        self.measured.errors += measured;
        self.note_error(why);
    }

    /// Keeps the description of the first error.
    pub fn note_error(&mut self, why: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            let mut text = why();
            if text.len() > MAX_ERROR_TEXT {
                let mut cut = MAX_ERROR_TEXT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            self.first_error = Some(text);
        }
    }
}

/// A duration in whole nanoseconds, at least 1 (the histograms' lowest value).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value (to the histogram's resolution).
    pub max: f64,
}

impl Latency {
    /// The summary of `h`, or `None` if it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

/// The progress line for one second: requests answered in it, and the totals so far.
pub fn progress_line(elapsed: Duration, last_second: u64, stats: &Stats, warming: bool) -> String {
    let p99 = if stats.acquire.is_empty() { &stats.all } else { &stats.acquire };
    let mut line = format!(
        "[{:6.1}s] {:>10} req/s  conflicts {:>10}  errors {:>6}",
        elapsed.as_secs_f64(),
        last_second,
        stats.all_time.conflicts,
        stats.all_time.errors
    );
    if warming {
        line.push_str("  (warm-up)");
    } else if !p99.is_empty() {
        let _ = write!(
            line,
            "  p99 {} {:.1} us",
            if stats.acquire.is_empty() { "all" } else { "acquire" },
            p99.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    line
}

/// The outcome of a run, as printed and as serialized by `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// A name the caller gave the run (`--label`), e.g. which server it was.
    pub label: Option<String>,
    /// `http`, `health`, `redis`, `wire` or `etcd`.
    pub target: &'static str,
    /// The server's address.
    pub addr: String,
    /// The workload's name.
    pub workload: &'static str,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Connections.
    pub connections: usize,
    /// Closed loop: requests in flight per connection. Open loop: requests per write.
    pub depth: usize,
    /// Open loop: the offered rate, requests/s over all connections.
    pub rate: Option<u64>,
    /// The lease each acquire asked for, in ms.
    pub ttl_ms: Option<u64>,
    /// Seconds of warm-up left out of the statistics.
    pub warmup_s: f64,
    /// Seconds of the measured window: from the end of the warm-up to the last reply.
    pub elapsed_s: f64,
    /// Replies in the measured window (every HTTP request or Redis command is one).
    pub requests: u64,
    /// `requests / elapsed_s`.
    pub throughput: f64,
    /// Counts in the measured window.
    pub counts: Counts,
    /// The first error seen (warm-up included), described.
    pub first_error: Option<String>,
    /// Acquire latency, µs.
    pub acquire_us: Option<Latency>,
    /// Latency of every request, µs.
    pub all_us: Option<Latency>,
    /// Hold-and-release: a cycle's first attempt to its grant, µs (queueing behind the other
    /// connections included).
    pub wait_us: Option<Latency>,
    /// Hold-and-release: a release's reply to the next grant's reply of the same name, µs:
    /// how long a freed lock sat free before a waiter had it.
    pub handoff_us: Option<Latency>,
    /// Open loop: lateness of sends after their intended time, µs. Large values mean the
    /// generator, not the server, could not keep the rate.
    pub send_lag_us: Option<Latency>,
    /// The server's CPU time (user + system, all threads) over the measured window, seconds.
    pub server_cpu_s: Option<f64>,
    /// Server CPU per request: `server_cpu_s / requests`, µs.
    pub server_cpu_us_per_request: Option<f64>,
    /// The part of `server_cpu_us_per_request` spent in user space (the rest is the kernel's),
    /// µs.
    pub server_user_us_per_request: Option<f64>,
    /// The generator's own CPU time over the measured window, as a share of one core. Near
    /// 1.0, the generator itself was the limit.
    pub generator_cpu_share: Option<f64>,
    /// The part of `generator_cpu_share` spent in user space, the generator's own code; the
    /// rest is the kernel's (on loopback, most of the TCP cost of both directions).
    pub generator_user_share: Option<f64>,
    /// CPU used by every other process on the machine over the measured window, in cores
    /// (0.1: a tenth of one core). Above a few hundredths, the run shared its cores.
    pub others_cpu_share: Option<f64>,
    /// CPU the hypervisor gave to other virtual machines over the window, in cores.
    pub steal_share: Option<f64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(label) = &self.label {
            writeln!(f, "label        {label}")?;
        }
        let shape = match self.rate {
            None => format!("closed loop, {} connections x depth {}", self.connections, self.depth),
            Some(r) => format!(
                "open loop, {r} req/s over {} connections, {} per write",
                self.connections, self.depth
            ),
        };
        writeln!(f, "target       {} {} ({})", self.target, self.addr, self.workload)?;
        writeln!(f, "load         {shape}")?;
        if let Some(ttl) = self.ttl_ms {
            writeln!(f, "lease        {ttl} ms")?;
        }
        writeln!(
            f,
            "measured     {:.2} s after {:.1} s warm-up: {} requests, {:.0} req/s",
            self.elapsed_s, self.warmup_s, self.requests, self.throughput
        )?;
        let c = &self.counts;
        writeln!(
            f,
            "outcomes     grants {}  conflicts {}  released/ok {}  errors {}",
            c.grants, c.conflicts, c.done, c.errors
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "first error  {e}")?;
        }
        writeln!(f, "latency (us)      count       p50       p90       p99     p99.9       max")?;
        for (name, l) in [
            ("acquire", &self.acquire_us),
            ("all", &self.all_us),
            ("wait", &self.wait_us),
            ("hand-off", &self.handoff_us),
            ("send lag", &self.send_lag_us),
        ] {
            if let Some(l) = l {
                writeln!(
                    f,
                    "  {name:<10} {:>11} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                    l.count, l.p50, l.p90, l.p99, l.p999, l.max
                )?;
            }
        }
        match (self.server_cpu_s, self.server_cpu_us_per_request) {
            (Some(s), Some(per)) => writeln!(
                f,
                "server CPU   {s:.2} s, {per:.2} us/request ({:.2} in user space)",
                self.server_user_us_per_request.unwrap_or(0.0)
            )?,
            (Some(s), None) => writeln!(f, "server CPU   {s:.2} s")?,
            _ => {}
        }
        if let Some(share) = self.generator_cpu_share {
            write!(f, "generator    {:.0}% of one core", share * 100.0)?;
            if let Some(user) = self.generator_user_share {
                write!(f, " ({:.0}% in user space)", user * 100.0)?;
            }
            writeln!(f)?;
        }
        if let (Some(others), Some(steal)) = (self.others_cpu_share, self.steal_share) {
            writeln!(
                f,
                "machine      other processes {:.0}% of a core, steal {:.0}%",
                others * 100.0,
                steal * 100.0
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn counts_split_by_outcome_and_only_measured_replies_reach_histograms() {
        let mut s = Stats::new();
        s.record(OpKind::Acquire, Outcome::Granted, us(10), true);
        s.record(OpKind::Acquire, Outcome::Conflict, us(20), true);
        s.record(OpKind::Release, Outcome::Done, us(30), true);
        s.record(OpKind::Release, Outcome::Error, us(40), true);
        s.record(OpKind::Acquire, Outcome::Granted, us(999), false);
        assert_eq!(s.measured, Counts { replies: 4, grants: 1, conflicts: 1, done: 1, errors: 1 });
        assert_eq!(s.all_time, Counts { replies: 5, grants: 2, conflicts: 1, done: 1, errors: 1 });
        assert_eq!(s.acquire.len(), 2);
        assert_eq!(s.all.len(), 4);
        assert_eq!(s.acquire.max(), s.acquire.highest_equivalent(20_000));
    }

    #[test]
    fn latency_summary_is_in_microseconds() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = Latency::of(&h).unwrap();
        assert_eq!(l.count, 1000);
        // 3 significant digits: each value is within 0.1% of the exact one.
        assert!((l.p50 - 500.0).abs() <= 0.5, "{l:?}");
        assert!((l.p90 - 900.0).abs() <= 0.9, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.p999 - 999.0).abs() <= 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() <= 1.0, "{l:?}");
        assert!((l.mean - 500.5).abs() <= 0.5, "{l:?}");
        assert_eq!(Latency::of(&histogram()), None);
    }

    #[test]
    fn latencies_beyond_the_bound_saturate_and_zero_counts_as_one_ns() {
        let mut s = Stats::new();
        s.record(OpKind::Health, Outcome::Done, Duration::from_secs(3600), true);
        s.record(OpKind::Health, Outcome::Done, Duration::ZERO, true);
        assert_eq!(s.all.len(), 2);
        assert!(s.all.max() >= MAX_LATENCY_NS);
        assert_eq!(s.all.min(), 1);
    }

    #[test]
    fn lost_requests_are_errors_and_the_first_error_is_kept_and_cut() {
        let mut s = Stats::new();
        s.record_lost(3, 2, || "connection reset".to_string());
        s.note_error(|| "second".to_string());
        assert_eq!(s.all_time.errors, 3);
        assert_eq!(s.measured.errors, 2);
        assert_eq!(s.first_error.as_deref(), Some("connection reset"));

        let mut s = Stats::new();
        s.note_error(|| "é".repeat(MAX_ERROR_TEXT));
        let kept = s.first_error.unwrap();
        assert!(kept.len() <= MAX_ERROR_TEXT && kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn progress_line_shows_rate_totals_and_p99() {
        let mut s = Stats::new();
        assert_eq!(
            progress_line(Duration::from_millis(1000), 1234, &s, true),
            "[   1.0s]       1234 req/s  conflicts          0  errors      0  (warm-up)"
        );
        s.record(OpKind::Acquire, Outcome::Conflict, us(100), true);
        assert_eq!(
            progress_line(Duration::from_millis(2000), 5, &s, false),
            "[   2.0s]          5 req/s  conflicts          1  errors      0  p99 acquire 100.0 us"
        );
    }
}
