//! Recovery as a pure fold: a core's snapshot and log batches, in order, folded into the locks
//! it held and the tokens it handed out. No I/O and no clock: times are the log's own.
//!
//! # The rules (docs/DURABILITY.md states them for users)
//! - A lock held at the crash is held after it, by the same owner, with the same token.
//! - A lease is not ended by the downtime: what is left of it is measured at the latest time
//!   the log knows (the last batch the core wrote), and runs again from the restart. So it ends
//!   no earlier than the restart plus what was left at the last record, and no later than the
//!   restart plus its full length, whatever the wall clock did meanwhile (no wall clock is
//!   read). A [`Record::Run`] applies the same rule at each earlier restart found in the log.
//!   A [`Record::Lead`] (a cluster's new leader) does too, and adds its grace to what was left.
//! - A released or expired lock stays free; waits are not in the log at all. A lock bound to
//!   one connection ([`CONNECTION_SESSION`]) is released, as that connection's end would have.
//! - No token is handed out twice: the next token is above every token the log has seen.
//! - A resumable session open at the crash is open after it, with no connection: it outlives
//!   the restart for its whole timeout, and its locks with it. The locks of a session that
//!   ended go, even where the release did not reach the log (each core logs its own, and the
//!   end is logged first on the session's core: [`open_sessions_only`]). No session id is
//!   handed out twice.

use hashbrown::HashMap;

use super::record::{Batch, CONNECTION_SESSION, Record, Records};

/// A lock held after recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredLock {
    pub resource: Box<str>,
    pub owner: Box<str>,
    pub token: u64,
    /// Ms of lease left, to run from the restart; `None`: no expiry.
    pub remaining: Option<u64>,
    /// The session that holds it (0: none).
    pub session: u64,
}

/// What a core's log folds into.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// In no particular order.
    pub locks: Vec<RecoveredLock>,
    /// Above every token the log has seen (at least 1).
    pub next_token: u64,
    /// The resumable sessions still open, `(id, timeout ms)`, in no particular order.
    pub sessions: Vec<(u64, u64)>,
    /// The highest session id the log has seen (0: none).
    pub max_session: u64,
}

/// Drops, from every core's recovered locks, those of resumable sessions that are not open
/// any more (a session's end is logged on its own core; its locks' releases on theirs, and a
/// crash may come between).
pub fn open_sessions_only(cores: &mut [Recovered]) {
    let open: hashbrown::HashSet<u64> =
        cores.iter().flat_map(|c| c.sessions.iter().map(|&(id, _)| id)).collect();
    for core in cores {
        core.locks.retain(|l| l.session == 0 || open.contains(&l.session));
    }
}

struct Held {
    owner: Box<str>,
    token: u64,
    /// A tick of the current run's clock.
    deadline: Option<u64>,
    session: u64,
}

/// The fold in progress. Feed it batches in the order they were written ([`Replay::batch`]),
/// then [`Replay::finish`].
#[derive(Default)]
pub struct Replay {
    locks: HashMap<Box<str>, Held>,
    by_token: HashMap<u64, Box<str>>,
    /// The latest time of the current run's clock the log has shown.
    clock: u64,
    next_token: u64,
    sessions: HashMap<u64, u64>,
    max_session: u64,
}

impl Replay {
    pub fn new() -> Replay {
        Replay::default()
    }

    /// Folds in one batch; an error is a record that cannot be read.
    pub fn batch(&mut self, batch: &Batch<'_>) -> Result<(), &'static str> {
        for record in Records::new(batch.body) {
            self.record(record?);
        }
        self.clock = self.clock.max(batch.at);
        Ok(())
    }

    fn record(&mut self, record: Record<'_>) {
        match record {
            Record::Grant { token, deadline, session, resource, owner } => {
                self.next_token = self.next_token.max(token + 1);
                let held = Held { owner: owner.into(), token, deadline, session };
                if let Some(old) = self.locks.insert(resource.into(), held) {
                    self.by_token.remove(&old.token);
                }
                self.by_token.insert(token, resource.into());
            }
            Record::Release { token } | Record::Expire { token } => {
                if let Some(resource) = self.by_token.remove(&token) {
                    self.locks.remove(&resource);
                }
            }
            Record::Extend { token, deadline } => {
                if let Some(held) = self.by_token.get(&token).and_then(|r| self.locks.get_mut(r)) {
                    held.deadline = deadline;
                }
            }
            Record::Run { at } => self.restart(at, 0),
            Record::Lead { at, grace_ms } => self.restart(at, grace_ms),
            Record::Tokens { next } => self.next_token = self.next_token.max(next),
            Record::SnapshotEnd { .. } => {}
            Record::SessionOpen { id, timeout_ms } => {
                self.sessions.insert(id, timeout_ms);
                self.max_session = self.max_session.max(id);
            }
            Record::SessionEnd { id } => {
                self.sessions.remove(&id);
            }
        }
    }

    /// A restart (or a new leader): what was left of each lease at the last time the log knew
    /// runs again from `at`, the new clock, with `grace_ms` more.
    fn restart(&mut self, at: u64, grace_ms: u64) {
        let clock = self.clock;
        let by_token = &mut self.by_token;
        self.locks.retain(|_, held| match held.deadline {
            _ if held.session == CONNECTION_SESSION => {
                by_token.remove(&held.token);
                false
            }
            Some(d) if d <= clock => {
                by_token.remove(&held.token);
                false
            }
            Some(d) => {
                held.deadline = Some(at.saturating_add(d - clock).saturating_add(grace_ms));
                true
            }
            None => true,
        });
        self.clock = at;
    }

    /// The latest time of the current clock the log has shown.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Above every token seen so far (at least 1).
    pub fn next_token(&self) -> u64 {
        self.next_token.max(1)
    }

    /// The highest session id seen so far (0: none).
    pub fn max_session(&self) -> u64 {
        self.max_session
    }

    /// The resumable sessions open now, `(id, timeout ms)`, in no particular order.
    pub fn sessions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.sessions.iter().map(|(&id, &timeout)| (id, timeout))
    }

    /// Every lock the fold holds now, as a grant record (deadlines in the current clock), in no
    /// particular order. Unlike [`Replay::finish`] this keeps what a restart would drop (leases
    /// the clock has reached, locks of one connection), so that folding these records again
    /// (with [`Replay::clock`]) gives this very state.
    pub fn grants(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        self.locks.iter().map(|(resource, held)| Record::Grant {
            token: held.token,
            deadline: held.deadline,
            session: held.session,
            resource,
            owner: &held.owner,
        })
    }

    /// The locks still held at the latest time the log knows, each with what was left of its
    /// lease then.
    pub fn finish(self) -> Recovered {
        let clock = self.clock;
        let locks = self
            .locks
            .into_iter()
            .filter(|(_, held)| held.session != CONNECTION_SESSION && held.deadline.is_none_or(|d| d > clock))
            .map(|(resource, held)| RecoveredLock {
                resource,
                owner: held.owner,
                token: held.token,
                remaining: held.deadline.map(|d| d - clock),
                session: held.session,
            })
            .collect();
        Recovered {
            locks,
            next_token: self.next_token.max(1),
            sessions: self.sessions.into_iter().collect(),
            max_session: self.max_session,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::encode;

    fn replay(batches: &[(u64, Vec<Record<'_>>)]) -> Recovered {
        let mut r = Replay::new();
        let bodies: Vec<(u64, Vec<u8>)> = batches
            .iter()
            .map(|(at, records)| {
                let mut body = Vec::new();
                records.iter().for_each(|rec| encode(&mut body, rec));
                (*at, body)
            })
            .collect();
        for (seq, (at, body)) in bodies.iter().enumerate() {
            r.batch(&Batch { seq: seq as u64, at: *at, body }).unwrap();
        }
        let mut out = r.finish();
        out.locks.sort_by(|a, b| a.resource.cmp(&b.resource));
        out
    }

    fn grant(token: u64, deadline: Option<u64>, resource: &str) -> Record<'_> {
        Record::Grant { token, deadline, session: 0, resource, owner: "o" }
    }

    fn held(resource: &str, token: u64, remaining: Option<u64>) -> RecoveredLock {
        RecoveredLock { resource: resource.into(), owner: "o".into(), token, remaining, session: 0 }
    }

    #[test]
    fn held_locks_come_back_with_their_token_and_what_was_left() {
        let r = replay(&[
            (10, vec![grant(1, Some(1_011), "a"), grant(2, None, "b"), grant(3, Some(500), "c")]),
            (20, vec![Record::Release { token: 2 }, Record::Extend { token: 3, deadline: Some(2_020) }]),
            (400, vec![]),
        ]);
        // At tick 400 (the last batch): a had 611 ms left, c 1620 ms; b was released.
        assert_eq!(r.locks, vec![held("a", 1, Some(611)), held("c", 3, Some(1_620))]);
        assert_eq!(r.next_token, 4);
    }

    #[test]
    fn expired_and_handed_on_locks_stay_free() {
        let r = replay(&[
            (0, vec![grant(1, Some(100), "a"), grant(2, Some(50), "b")]),
            (60, vec![Record::Expire { token: 2 }, grant(3, None, "a")]),
            (100, vec![]),
        ]);
        assert_eq!(r.locks, vec![held("a", 3, None)], "b expired; a was handed to token 3");
        // A lease whose deadline the log's time reached is over, record or not.
        let r = replay(&[(0, vec![grant(1, Some(100), "a")]), (100, vec![])]);
        assert_eq!(r.locks, vec![]);
    }

    #[test]
    fn a_restart_in_the_log_keeps_what_was_left() {
        // Run 1 ends at tick 900 with 100 ms left of a's lease; run 2 recovered at its tick 5
        // (so a ends at 105 in run 2's clock), and its last batch is at tick 55.
        let r = replay(&[
            (0, vec![grant(1, Some(1_000), "a"), grant(2, Some(800), "gone")]),
            (900, vec![]),
            (5, vec![Record::Run { at: 5 }]),
            (55, vec![]),
        ]);
        assert_eq!(r.locks, vec![held("a", 1, Some(50))]);
    }

    #[test]
    fn sessions_outlive_a_restart_and_the_locks_of_ended_ones_go() {
        let session_lock =
            |token, resource, session| Record::Grant { token, deadline: None, session, resource, owner: "o" };
        let mut home = replay(&[
            (
                0,
                vec![
                    Record::SessionOpen { id: 4, timeout_ms: 10_000 },
                    Record::SessionOpen { id: 6, timeout_ms: 500 },
                ],
            ),
            (1, vec![session_lock(1, "a", 4), Record::SessionEnd { id: 6 }]),
            (2, vec![Record::Run { at: 0 }]),
        ]);
        assert_eq!(home.sessions, vec![(4, 10_000)]);
        assert_eq!(home.max_session, 6);
        // Session 6 ended, but the release of its lock on another core never reached the log.
        let other = replay(&[(0, vec![session_lock(2, "b", 6), session_lock(3, "c", 4)])]);
        home.locks.push(RecoveredLock {
            resource: "x".into(),
            owner: "o".into(),
            token: 9,
            remaining: None,
            session: 0,
        });
        let mut cores = [home, other];
        open_sessions_only(&mut cores);
        let names: Vec<Vec<&str>> =
            cores.iter().map(|c| c.locks.iter().map(|l| &*l.resource).collect()).collect();
        assert_eq!(names, [vec!["a", "x"], vec!["c"]]);
    }

    #[test]
    fn a_new_leader_adds_its_grace_to_what_was_left() {
        // The old leader's last batch is at its tick 900: a has 100 ms left, b none (it ran
        // out at 900, unlogged), c has no expiry. The new leader's clock reads 40 when it leads.
        let r = replay(&[
            (0, vec![grant(1, Some(1_000), "a"), grant(2, Some(900), "b"), grant(3, None, "c")]),
            (900, vec![]),
            (40, vec![Record::Lead { at: 40, grace_ms: 600 }]),
        ]);
        assert_eq!(r.locks, vec![held("a", 1, Some(700)), held("c", 3, None)]);
        assert_eq!(r.next_token, 4);
    }

    #[test]
    fn grants_fold_back_into_the_same_state() {
        let mut r = Replay::new();
        let mut body = Vec::new();
        for rec in
            [grant(4, Some(50), "a"), grant(5, None, "b"), Record::SessionOpen { id: 2, timeout_ms: 9 }]
        {
            encode(&mut body, &rec);
        }
        r.batch(&Batch { seq: 1, at: 60, body: &body }).unwrap();
        let mut again = Vec::new();
        r.grants().for_each(|g| encode(&mut again, &g));
        let mut copy = Replay::new();
        copy.batch(&Batch { seq: 1, at: r.clock(), body: &again }).unwrap();
        // a's lease ran out at 50, but only a restart or a leader drops it: both keep it.
        assert_eq!(copy.grants().count(), 2);
        assert_eq!((copy.clock(), copy.next_token()), (60, 6));
        assert_eq!(r.sessions().collect::<Vec<_>>(), vec![(2, 9)]);
        assert_eq!(r.max_session(), 2);
    }

    #[test]
    fn tokens_never_go_back() {
        let r = replay(&[(
            0,
            vec![grant(7, None, "a"), Record::Release { token: 7 }, Record::Tokens { next: 3 }],
        )]);
        assert_eq!(r.next_token, 8);
        let r = replay(&[(0, vec![Record::Tokens { next: 1_000 }])]);
        assert_eq!(r.next_token, 1_000);
        assert_eq!(replay(&[]).next_token, 1);
    }
}
