//! What every connection of a run shares ([`Shared`]): the clock marks, the request budget,
//! the count in flight, the hold-and-release hand-offs in progress and the statistics; and
//! taking a connection's complete replies into them, each for the request it answers (or, for
//! etcd, whose calls each await their own, one answer at a time). One
//! thread: `Cell`s and `RefCell`s, never borrowed across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Instant;

use super::conn::{InBuf, Pending, answered};
use crate::cli::Plan;
use crate::op::Outcome;
use crate::proto::{Protocol, describe_reply};
use crate::stats::Stats;
use crate::workload::{Event, Script, Workload};

/// What every task of a run shares.
pub(super) struct Shared {
    pub(super) start: Instant,
    pub(super) warmup_end: Instant,
    pub(super) deadline: Instant,
    /// Requests the run may still send.
    pub(super) budget: Cell<u64>,
    /// Requests sent and not yet answered (or given up on).
    pub(super) in_flight: Cell<u64>,
    /// When the last reply of the measured window arrived.
    pub(super) last_reply: Cell<Option<Instant>>,
    /// Hold-and-release: each hot name's hand-off in progress.
    pub(super) names: RefCell<Vec<HotName>>,
    pub(super) stats: RefCell<Stats>,
}

/// A hot name of the hold-and-release workload, as the hand-off measurement follows it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct HotName {
    /// When its release was sent while another connection was trying for it (and not granted
    /// since): a release nobody waits for starts no hand-off, or the next grant, whenever
    /// someone comes along, would count the idle time between.
    pub(super) released_at: Option<Instant>,
    /// Connections trying for it: between a cycle's first acquire and its grant.
    pub(super) contenders: u32,
}

impl Shared {
    /// The state of a run of `plan` that starts (its warm-up first) at `start`.
    pub(super) fn new(plan: &Plan, start: Instant) -> Shared {
        let warmup_end = start + plan.warmup;
        Shared {
            start,
            warmup_end,
            deadline: warmup_end + plan.duration,
            budget: Cell::new(plan.max_requests),
            in_flight: Cell::new(0),
            last_reply: Cell::new(None),
            names: RefCell::new(match plan.workload {
                Workload::Hold { hot, .. } => vec![HotName::default(); hot as usize],
                _ => Vec::new(),
            }),
            stats: RefCell::new(Stats::new()),
        }
    }

    /// Whether new cycles should no longer start.
    pub(super) fn stopping(&self, now: Instant) -> bool {
        now >= self.deadline || self.budget.get() == 0
    }

    /// Counts one request sent against the budget (requests finishing a cycle are sent even
    /// when it is spent, so the budget can be overrun by one per connection).
    pub(super) fn spend(&self) {
        self.budget.set(self.budget.get().saturating_sub(1));
    }

    pub(super) fn measured(&self, at: Instant) -> bool {
        at >= self.warmup_end
    }

    /// Follows a script's change of the name it tries for (from `before` to `after`).
    pub(super) fn note_wants(&self, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        let mut names = self.names.borrow_mut();
        if let Some(n) = before.and_then(|k| names.get_mut(k as usize)) {
            n.contenders -= 1;
        }
        if let Some(n) = after.and_then(|k| names.get_mut(k as usize)) {
            n.contenders += 1;
        }
    }

    /// Gives up on `pending` requests of a connection that failed.
    pub(super) fn lose(&self, pending: &VecDeque<Pending>, why: String) {
        let lost = pending.len() as u64;
        let measured = pending.iter().filter(|p| self.measured(p.at)).count() as u64;
        self.in_flight.set(self.in_flight.get() - lost);
        self.stats.borrow_mut().record_lost(lost, measured, || why);
    }

    /// Notes that the release of hot name `key` left at `sent`. Hold-and-release (the only
    /// workload that tracks names): the hand-off runs from here, since the next holder's grant
    /// may well be read before this release's own reply (the server answers both in one turn).
    pub(super) fn note_release_sent(&self, key: u64, sent: Instant) {
        if let Some(name) = self.names.borrow_mut().get_mut(key as usize) {
            name.released_at = (name.contenders > 0).then_some(sent);
        }
    }

    /// Takes one reply at `now`: `outcome` for the request `p` (no longer in flight), into the
    /// statistics, and into `script` (the closed loop's, which may wait on it), following
    /// hold-and-release's grants; `describe` tells an error reply.
    pub(super) fn answer(
        &self,
        p: Pending,
        outcome: Outcome,
        now: Instant,
        script: Option<&mut Script>,
        describe: impl FnOnce() -> String,
    ) {
        let mut stats = self.stats.borrow_mut();
        let measured = self.measured(p.at);
        stats.record(p.kind, outcome, now.saturating_duration_since(p.at), measured);
        if outcome == Outcome::Error {
            stats.note_error(describe);
        }
        if let Some(script) = script {
            let wanted = script.wants();
            let event = script.on_reply(p.kind, outcome, now);
            self.note_wants(wanted, script.wants());
            match event {
                Some(Event::Granted { key, waited }) => {
                    stats.record_wait(waited, measured);
                    if let Some(freed) = self.names.borrow_mut()[key as usize].released_at.take() {
                        stats.record_handoff(now.saturating_duration_since(freed), measured);
                    }
                }
                Some(Event::Released { .. }) | None => {}
            }
        }
        if measured {
            self.last_reply.set(Some(now));
        }
        self.in_flight.set(self.in_flight.get() - 1);
    }

    /// Takes every complete reply at the front of `input`, each for the request in `pending`
    /// it answers (the oldest, or the one its id names). Errors end the connection: the bytes
    /// after a bad one cannot be trusted.
    pub(super) fn take_replies<P: Protocol>(
        &self,
        proto: &P,
        input: &mut InBuf,
        pending: &mut VecDeque<Pending>,
        mut script: Option<&mut Script>,
        now: Instant,
    ) -> Result<(), String> {
        while !pending.is_empty() {
            let kind_of = |id| answered(pending, id).map(|i| pending[i].kind);
            let (reply, p) = match proto.parse(input.data(), kind_of) {
                Ok(Some(reply)) => {
                    let i = answered(pending, reply.id).expect("the parser found its request");
                    (reply, pending.remove(i).expect("an index in range"))
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(format!("unparsable reply ({e}): {}", describe_reply(input.data())));
                }
            };
            let bytes = &input.data()[..reply.len];
            self.answer(p, reply.outcome, now, script.as_deref_mut(), || describe_reply(bytes));
            input.consume(reply.len);
        }
        if pending.is_empty() && !input.data().is_empty() {
            return Err(format!("bytes with no request in flight: {}", describe_reply(input.data())));
        }
        Ok(())
    }
}
