//! A failover's timing, the same for every target: a lock granted first (the cluster serves),
//! then the leader's SIGKILL, then a new attempt on the next survivor every
//! [`PROBE_INTERVAL`], each on its own (an attempt that the dead leader will never answer
//! holds back no other), until the first grant: its arrival less the kill's instant is the
//! failover time, to within one interval. The target is seen only through `attempt`, one
//! acquire of a name never tried before on a given survivor.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::RunError;
use crate::cli::{FAILOVER_FIRST_KEY, Failover, Plan};
use crate::op::Outcome;
use crate::stats::MAX_ERROR_TEXT;

/// How often a new attempt starts after the kill: the failover time's resolution. Ten
/// milliseconds is under 1% of the 2 s goal, and at most a few hundred attempts in flight.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Longest wait for one attempt's answer; past it the attempt counts as timed out (later ones
/// are under way by then).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait, before the kill, for a grant that shows the cluster serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a failover measurement found, as printed and as serialized by `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailoverReport {
    /// A name the caller gave the measurement (`--label`).
    pub label: Option<String>,
    /// The target's name.
    pub target: &'static str,
    /// The survivors, as given.
    pub addr: String,
    /// The process killed.
    pub kill_pid: u32,
    /// How long the grant before the kill took, ms: the cluster's ordinary answer.
    pub grant_before_kill_ms: f64,
    /// From the SIGKILL to the arrival of the first grant after it, ms; `None` if none came
    /// within the timeout.
    pub first_grant_ms: Option<f64>,
    /// Attempts started after the kill.
    pub attempts: u64,
    /// Attempts refused (a conflict: the name was somehow held).
    pub conflicts: u64,
    /// Attempts answered with an error (no leader yet, a closed connection).
    pub errors: u64,
    /// Attempts not answered within [`ATTEMPT_TIMEOUT`] (among those that ended before the
    /// first grant).
    pub timeouts: u64,
    /// The first error after the kill, described.
    pub first_error: Option<String>,
}

impl fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(label) = &self.label {
            writeln!(f, "label        {label}")?;
        }
        writeln!(f, "target       {} {} (killed pid {})", self.target, self.addr, self.kill_pid)?;
        writeln!(f, "before kill  a grant in {:.1} ms", self.grant_before_kill_ms)?;
        match self.first_grant_ms {
            Some(ms) => writeln!(f, "failover     first grant {ms:.1} ms after the SIGKILL")?,
            None => writeln!(f, "failover     no grant before the timeout")?,
        }
        writeln!(
            f,
            "attempts     {} (conflicts {}, errors {}, timed out {})",
            self.attempts, self.conflicts, self.errors, self.timeouts
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "first error  {e}")?;
        }
        Ok(())
    }
}

/// What the attempts after the kill share.
#[derive(Default)]
struct Probe {
    first_grant: Cell<Option<Instant>>,
    conflicts: Cell<u64>,
    errors: Cell<u64>,
    timeouts: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

impl Probe {
    fn note_error(&self, why: String) {
        self.errors.set(self.errors.get() + 1);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            let mut why = why;
            if why.len() > MAX_ERROR_TEXT {
                let mut cut = MAX_ERROR_TEXT;
                while !why.is_char_boundary(cut) {
                    cut -= 1;
                }
                why.truncate(cut);
            }
            *first = Some(why);
        }
    }
}

/// Times the failover of the servers of `plan` when `failover.kill_pid` is killed; `attempt(i,
/// key)` acquires `key` on the `i`-th server.
pub(super) async fn measure<F, Fut>(
    plan: &Plan,
    failover: Failover,
    attempt: F,
) -> Result<FailoverReport, RunError>
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = Result<Outcome, String>> + 'static,
{
    let servers = plan.endpoints.len();
    let mut key = FAILOVER_FIRST_KEY;
    let server_of = |key: u64| ((key - FAILOVER_FIRST_KEY) % servers as u64) as usize;

    // A grant first: a cluster that cannot grant before the kill tells nothing after it.
    let ready_by = Instant::now() + READY_TIMEOUT;
    let before = loop {
        let sent = Instant::now();
        let why = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(server_of(key), key)).await {
            Ok(Ok(Outcome::Granted)) => break sent.elapsed(),
            Ok(Ok(other)) => format!("{other:?}"),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer in {} s", ATTEMPT_TIMEOUT.as_secs()),
        };
        key += 1;
        if Instant::now() >= ready_by {
            return Err(RunError::Setup(format!(
                "no grant in {} s before the kill; the last attempt: {why}",
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    };
    key += 1;

    let pid = libc::pid_t::try_from(failover.kill_pid)
        .map_err(|_| RunError::Setup(format!("{} is no process id", failover.kill_pid)))?;
    // SAFETY: kill(2) takes no pointers; the process is the one the caller named.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        let e = io::Error::last_os_error();
        return Err(RunError::Setup(format!("cannot kill process {pid}: {e}")));
    }
    let killed = Instant::now();
    let deadline = killed + failover.timeout;

    let probe = Rc::new(Probe::default());
    let mut attempts = Vec::new();
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if probe.first_grant.get().is_some() || Instant::now() >= deadline {
            break;
        }
        let answer = attempt(server_of(key), key);
        key += 1;
        let probe = probe.clone();
        attempts.push(tokio::task::spawn_local(async move {
            let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, answer).await;
            let now = Instant::now();
            match answer {
                Ok(Ok(Outcome::Granted)) => {
                    if probe.first_grant.get().is_none() {
                        probe.first_grant.set(Some(now));
                    }
                }
                Ok(Ok(Outcome::Conflict)) => probe.conflicts.set(probe.conflicts.get() + 1),
                Ok(Ok(other)) => probe.note_error(format!("answered {other:?}")),
                Ok(Err(e)) => probe.note_error(e),
                Err(_) => probe.timeouts.set(probe.timeouts.get() + 1),
            }
        }));
    }
    for attempt in &attempts {
        attempt.abort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(FailoverReport {
        label: plan.label.clone(),
        target: plan.target.name(),
        addr: plan.addrs(),
        kill_pid: failover.kill_pid,
        grant_before_kill_ms: ms(before),
        first_grant_ms: probe.first_grant.get().map(|t| ms(t.saturating_duration_since(killed))),
        attempts: attempts.len() as u64,
        conflicts: probe.conflicts.get(),
        errors: probe.errors.get(),
        timeouts: probe.timeouts.get(),
        first_error: probe.first_error.borrow().clone(),
    })
}
