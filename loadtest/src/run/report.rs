//! What a run tells: the progress line on stderr each second, the CPU samples that bound the
//! measured window, and the final [`Report`] gathered from the run's [`Shared`] state. Reads
//! the clock and `/proc` (through [`cpu`]) but touches no connection.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::shared::Shared;
use crate::cli::{Load, Plan};
use crate::cpu;
use crate::stats::{Latency, Report, progress_line};

/// A CPU sample, taken at the start of the measured window and at the end of the run.
#[derive(Clone, Copy, Debug)]
pub(super) struct CpuSample {
    at: Instant,
    server: Option<cpu::CpuTime>,
    generator: Option<cpu::CpuTime>,
    machine: Option<cpu::MachineTime>,
}

impl CpuSample {
    /// Samples the server (if its PID is known), the generator and the machine now.
    pub(super) fn take(pid: Option<u32>) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            server: pid.and_then(cpu::process_cpu),
            generator: cpu::own_cpu(),
            machine: cpu::machine_cpu(),
        }
    }
}

/// The report of a run of `plan` whose requests asked for leases of `lease_ms`, from its
/// state and its CPU samples at the start of the measured window (if it got that far) and at
/// the end.
pub(super) fn report(
    plan: &Plan,
    lease_ms: Option<u64>,
    shared: &Shared,
    first: Option<CpuSample>,
    end: CpuSample,
) -> Report {
    let stats = shared.stats.borrow();
    let elapsed = shared
        .last_reply
        .get()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(shared.warmup_end))
        .as_secs_f64();
    let requests = stats.measured.replies;
    let cpu_delta = |a: Option<cpu::CpuTime>, b: Option<cpu::CpuTime>| Some(b?.since(a?));
    let window = first.map(|f| end.at.saturating_duration_since(f.at).as_secs_f64());
    let server_cpu = first.and_then(|f| cpu_delta(f.server, end.server));
    let generator_cpu = first.and_then(|f| cpu_delta(f.generator, end.generator));
    let machine = first.and_then(|f| Some(end.machine?.since(f.machine?)));
    let share = |d: Duration| window.filter(|&w| w > 0.0).map(|w| d.as_secs_f64() / w);
    // Processes other than the server and the generator: the machine's process time less
    // theirs (without a server PID, the server counts as "other").
    let others = machine.map(|m| {
        let ours = server_cpu.map_or(Duration::ZERO, |t| t.total())
            + generator_cpu.map_or(Duration::ZERO, |t| t.total());
        m.processes.saturating_sub(ours)
    });
    let (connections, depth, rate) = match plan.load {
        Load::Closed { connections, depth } => (connections, depth, None),
        Load::Open { connections, rate, batch } => (connections, batch, Some(rate)),
    };
    Report {
        label: plan.label.clone(),
        target: plan.target.name(),
        addr: plan.addrs(),
        workload: plan.workload.name(),
        mode: if rate.is_some() { "open" } else { "closed" },
        connections,
        depth,
        rate,
        ttl_ms: lease_ms,
        warmup_s: plan.warmup.as_secs_f64(),
        elapsed_s: elapsed,
        requests,
        throughput: if elapsed > 0.0 { requests as f64 / elapsed } else { 0.0 },
        counts: stats.measured,
        first_error: stats.first_error.clone(),
        acquire_us: Latency::of(&stats.acquire),
        all_us: Latency::of(&stats.all),
        wait_us: Latency::of(&stats.wait),
        handoff_us: Latency::of(&stats.handoff),
        send_lag_us: Latency::of(&stats.send_lag),
        server_cpu_s: server_cpu.map(|t| t.total().as_secs_f64()),
        server_cpu_us_per_request: server_cpu
            .filter(|_| requests > 0)
            .map(|t| t.total().as_secs_f64() * 1e6 / requests as f64),
        server_user_us_per_request: server_cpu
            .filter(|_| requests > 0)
            .map(|t| t.user.as_secs_f64() * 1e6 / requests as f64),
        generator_cpu_share: generator_cpu
            .zip(window)
            .filter(|&(_, w)| w > 0.0)
            .map(|(t, w)| t.total().as_secs_f64() / w),
        generator_user_share: generator_cpu
            .zip(window)
            .filter(|&(_, w)| w > 0.0)
            .map(|(t, w)| t.user.as_secs_f64() / w),
        others_cpu_share: others.and_then(share),
        steal_share: machine.and_then(|m| share(m.steal)),
    }
}

/// Prints one progress line to stderr each second until aborted.
pub(super) async fn report_progress(shared: Rc<Shared>) {
    let second = Duration::from_secs(1);
    let mut ticks = tokio::time::interval_at((shared.start + second).into(), second);
    let mut last = 0;
    loop {
        let now = ticks.tick().await.into_std();
        let stats = shared.stats.borrow();
        let replies = stats.all_time.replies;
        eprintln!("{}", progress_line(now - shared.start, replies - last, &stats, now < shared.warmup_end));
        last = replies;
    }
}
