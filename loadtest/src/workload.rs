//! What a connection asks for, in what order: the workloads as a per-connection [`Script`]
//! that answers "what next?" with an [`Op`] and learns from each reply's [`Outcome`]. Pure:
//! the caller passes `now` in and does the I/O, so a script is tested without a socket or a
//! clock.
//!
//! Every workload but hold-and-release decides its next request without waiting for a reply
//! (an acquire is always followed by the release of the same name), which is what lets a
//! connection pipeline them: a release sent behind an acquire that lost answers 409, and
//! counts as a conflict.

use std::time::{Duration, Instant};

use crate::op::{Op, OpKind, Outcome};
use crate::rng::SplitMix64;

/// What a run's connections do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Acquire a random name, then release it: almost never a conflict.
    Uncontended {
        /// Names to choose from.
        keys: u64,
    },
    /// Acquire one of a few hot names, then release it, every connection competing for them.
    Contended {
        /// Hot names to choose from.
        hot: u64,
    },
    /// Acquire one of a few hot names (retrying after each conflict), hold it, release it:
    /// measures how long a waiter takes to get a lock another owner gives back. One request
    /// in flight per connection, since each step depends on the last reply.
    Hold {
        /// Hot names to choose from.
        hot: u64,
        /// How long a granted lock is held.
        hold: Duration,
        /// Pause after a conflict before trying again.
        retry: Duration,
    },
    /// Acquire a random name with a lease, never release: the server's expiry does all the
    /// freeing.
    TtlOnly {
        /// Names to choose from.
        keys: u64,
    },
    /// Only health probes: no lock work at all.
    Health,
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Uncontended { .. } => "uncontended",
            Workload::Contended { .. } => "contended",
            Workload::Hold { .. } => "hold",
            Workload::TtlOnly { .. } => "ttl",
            Workload::Health => "health",
        }
    }

    /// Whether the next request can be chosen before the last one is answered (so that a
    /// connection may pipeline, and an open loop may send on schedule).
    pub fn is_blind(&self) -> bool {
        !matches!(self, Workload::Hold { .. })
    }

    /// Whether connections give back what they acquire: all but `ttl` (the leases expire) and
    /// `health` (nothing is acquired).
    pub fn releases(&self) -> bool {
        matches!(self, Workload::Uncontended { .. } | Workload::Contended { .. } | Workload::Hold { .. })
    }
}

/// What a connection should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this request.
    Send(Op),
    /// Send nothing for this long (a hold, or the pause before a retry).
    Wait(Duration),
    /// Send nothing until the reply in flight arrives.
    AwaitReply,
}

/// Where a hold-and-release connection is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// Between cycles: the next step picks a name.
    Idle,
    /// An acquire of `key` is in flight; the cycle began at `since`.
    Acquiring { key: u64, since: Instant },
    /// The last acquire of `key` lost; try again at `at`.
    Retrying { key: u64, since: Instant, at: Instant },
    /// `key` is ours until `until`, then we release it.
    Holding { key: u64, until: Instant },
    /// The release of `key` is in flight.
    Releasing { key: u64 },
}

/// What a hold-and-release reply means for the hand-off measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A lock is ours.
    Granted {
        /// Its name.
        key: u64,
        /// Time since the cycle's first attempt.
        waited: Duration,
    },
    /// We gave a lock back.
    Released {
        /// Its name.
        key: u64,
    },
}

/// One connection's sequence of requests.
#[derive(Clone, Debug)]
pub struct Script {
    workload: Workload,
    rng: SplitMix64,
    /// A blind workload's release still owed for the acquire it just sent.
    owed_release: Option<u64>,
    hold: Hold,
}

impl Script {
    /// The script of connection `conn` in a run seeded with `seed`.
    pub fn new(workload: Workload, seed: u64, conn: usize) -> Script {
        Script { workload, rng: SplitMix64::for_connection(seed, conn), owed_release: None, hold: Hold::Idle }
    }

    /// The next step at time `now`.
    pub fn next(&mut self, now: Instant) -> Step {
        match self.workload {
            Workload::Uncontended { keys } => Step::Send(self.pair(keys)),
            Workload::Contended { hot } => Step::Send(self.pair(hot)),
            Workload::TtlOnly { keys } => Step::Send(Op::Acquire { key: self.rng.below(keys) }),
            Workload::Health => Step::Send(Op::Health),
            Workload::Hold { hot, .. } => match self.hold {
                Hold::Idle => {
                    let key = self.rng.below(hot);
                    self.hold = Hold::Acquiring { key, since: now };
                    Step::Send(Op::Acquire { key })
                }
                Hold::Retrying { key, since, at } => {
                    if now >= at {
                        self.hold = Hold::Acquiring { key, since };
                        Step::Send(Op::Acquire { key })
                    } else {
                        Step::Wait(at - now)
                    }
                }
                Hold::Holding { key, until } => {
                    if now >= until {
                        self.hold = Hold::Releasing { key };
                        Step::Send(Op::Release { key })
                    } else {
                        Step::Wait(until - now)
                    }
                }
                Hold::Acquiring { .. } | Hold::Releasing { .. } => Step::AwaitReply,
            },
        }
    }

    /// An acquire of a random name of `n`, then its release.
    fn pair(&mut self, n: u64) -> Op {
        match self.owed_release.take() {
            Some(key) => Op::Release { key },
            None => {
                let key = self.rng.below(n);
                self.owed_release = Some(key);
                Op::Acquire { key }
            }
        }
    }

    /// Learns the outcome of a request of kind `kind`, answered at `now`. Hold-and-release
    /// reports its grants and releases, from which the run measures hand-offs.
    pub fn on_reply(&mut self, kind: OpKind, outcome: Outcome, now: Instant) -> Option<Event> {
        let Workload::Hold { hold, retry, .. } = self.workload else {
            return None;
        };
        match (self.hold, kind, outcome) {
            (Hold::Acquiring { key, since }, OpKind::Acquire, Outcome::Granted) => {
                self.hold = Hold::Holding { key, until: now + hold };
                Some(Event::Granted { key, waited: now - since })
            }
            (Hold::Acquiring { key, since }, OpKind::Acquire, Outcome::Conflict) => {
                self.hold = Hold::Retrying { key, since, at: now + retry };
                None
            }
            (Hold::Releasing { key }, OpKind::Release, Outcome::Done) => {
                self.hold = Hold::Idle;
                Some(Event::Released { key })
            }
            // An error ends the cycle; the next one starts afresh on a new name.
            _ => {
                self.hold = Hold::Idle;
                None
            }
        }
    }

    /// The name this hold-and-release script is trying to get: from its cycle's first acquire
    /// until the grant (retries and waits included).
    pub fn wants(&self) -> Option<u64> {
        match self.hold {
            Hold::Acquiring { key, .. } | Hold::Retrying { key, .. } => Some(key),
            Hold::Idle | Hold::Holding { .. } | Hold::Releasing { .. } => None,
        }
    }

    /// Whether the script is inside a cycle that should be finished before the connection
    /// stops: an acquire sent whose release is not, or a lock held. Stopping only between
    /// cycles leaves no lock held behind, so the next run starts on an empty table.
    pub fn mid_cycle(&self) -> bool {
        self.owed_release.is_some() || matches!(self.hold, Hold::Holding { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn uncontended_alternates_acquire_and_release_of_the_same_key() {
        let now = Instant::now();
        let mut s = Script::new(Workload::Uncontended { keys: 1000 }, 1, 0);
        for _ in 0..50 {
            assert!(!s.mid_cycle());
            let Step::Send(Op::Acquire { key }) = s.next(now) else {
                panic!("expected an acquire");
            };
            assert!(key < 1000);
            assert!(s.mid_cycle());
            assert_eq!(s.next(now), Step::Send(Op::Release { key }));
        }
    }

    #[test]
    fn contended_keys_stay_among_the_hot_names_and_use_them_all() {
        let now = Instant::now();
        let mut s = Script::new(Workload::Contended { hot: 3 }, 5, 2);
        let mut seen = [false; 3];
        for _ in 0..100 {
            let Step::Send(Op::Acquire { key }) = s.next(now) else {
                panic!("expected an acquire");
            };
            seen[key as usize] = true;
            assert_eq!(s.next(now), Step::Send(Op::Release { key }));
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn ttl_only_never_releases_and_is_never_mid_cycle() {
        let now = Instant::now();
        let mut s = Script::new(Workload::TtlOnly { keys: 10 }, 3, 0);
        for _ in 0..20 {
            assert!(matches!(s.next(now), Step::Send(Op::Acquire { key }) if key < 10));
            assert!(!s.mid_cycle());
        }
    }

    #[test]
    fn health_only_sends_probes() {
        let now = Instant::now();
        let mut s = Script::new(Workload::Health, 3, 0);
        assert_eq!(s.next(now), Step::Send(Op::Health));
        assert_eq!(s.next(now), Step::Send(Op::Health));
        assert_eq!(s.on_reply(OpKind::Health, Outcome::Done, now), None);
    }

    #[test]
    fn same_seed_and_connection_give_the_same_keys() {
        let now = Instant::now();
        let keys = |conn| {
            let mut s = Script::new(Workload::TtlOnly { keys: 1 << 40 }, 11, conn);
            (0..5)
                .map(|_| match s.next(now) {
                    Step::Send(Op::Acquire { key }) => key,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(0), keys(0));
        assert_ne!(keys(0), keys(1));
    }

    #[test]
    fn hold_cycle_acquires_holds_releases_and_reports_the_hand_off() {
        let t0 = Instant::now();
        let w = Workload::Hold { hot: 1, hold: ms(5), retry: ms(2) };
        let mut s = Script::new(w, 1, 0);
        assert_eq!(s.wants(), None);
        assert_eq!(s.next(t0), Step::Send(Op::Acquire { key: 0 }));
        assert_eq!(s.wants(), Some(0));
        assert_eq!(s.next(t0), Step::AwaitReply);
        // Lost: retry 2 ms after the conflict's reply, still trying for the name.
        assert_eq!(s.on_reply(OpKind::Acquire, Outcome::Conflict, t0 + ms(1)), None);
        assert!(!s.mid_cycle());
        assert_eq!(s.wants(), Some(0));
        assert_eq!(s.next(t0 + ms(2)), Step::Wait(ms(1)));
        assert_eq!(s.next(t0 + ms(3)), Step::Send(Op::Acquire { key: 0 }));
        // Won 4 ms after the first attempt; hold until 9 ms.
        assert_eq!(
            s.on_reply(OpKind::Acquire, Outcome::Granted, t0 + ms(4)),
            Some(Event::Granted { key: 0, waited: ms(4) })
        );
        assert!(s.mid_cycle());
        assert_eq!(s.wants(), None);
        assert_eq!(s.next(t0 + ms(6)), Step::Wait(ms(3)));
        assert_eq!(s.next(t0 + ms(9)), Step::Send(Op::Release { key: 0 }));
        assert!(!s.mid_cycle());
        assert_eq!(s.next(t0 + ms(9)), Step::AwaitReply);
        assert_eq!(s.on_reply(OpKind::Release, Outcome::Done, t0 + ms(10)), Some(Event::Released { key: 0 }));
        // A new cycle, timed from its own first attempt.
        assert_eq!(s.next(t0 + ms(20)), Step::Send(Op::Acquire { key: 0 }));
        assert_eq!(
            s.on_reply(OpKind::Acquire, Outcome::Granted, t0 + ms(21)),
            Some(Event::Granted { key: 0, waited: ms(1) })
        );
    }

    #[test]
    fn hold_error_abandons_the_cycle() {
        let t0 = Instant::now();
        let w = Workload::Hold { hot: 1, hold: ms(5), retry: ms(0) };
        let mut s = Script::new(w, 1, 0);
        assert_eq!(s.next(t0), Step::Send(Op::Acquire { key: 0 }));
        assert_eq!(s.on_reply(OpKind::Acquire, Outcome::Error, t0), None);
        assert!(!s.mid_cycle());
        assert_eq!(s.wants(), None);
        assert_eq!(s.next(t0), Step::Send(Op::Acquire { key: 0 }));
        // A release refused (the lease ran out and another owner took the lock) is no hand-off.
        assert_eq!(
            s.on_reply(OpKind::Acquire, Outcome::Granted, t0),
            Some(Event::Granted { key: 0, waited: ms(0) })
        );
        assert_eq!(s.next(t0 + ms(5)), Step::Send(Op::Release { key: 0 }));
        assert_eq!(s.on_reply(OpKind::Release, Outcome::Conflict, t0 + ms(5)), None);
        assert_eq!(s.next(t0 + ms(5)), Step::Send(Op::Acquire { key: 0 }));
    }

    #[test]
    fn only_hold_is_not_blind() {
        assert!(Workload::Uncontended { keys: 1 }.is_blind());
        assert!(Workload::Contended { hot: 1 }.is_blind());
        assert!(Workload::TtlOnly { keys: 1 }.is_blind());
        assert!(Workload::Health.is_blind());
        let hold = Workload::Hold { hot: 1, hold: ms(1), retry: ms(0) };
        assert!(!hold.is_blind());
    }

    #[test]
    fn only_ttl_and_health_do_not_release() {
        assert!(Workload::Uncontended { keys: 1 }.releases());
        assert!(Workload::Contended { hot: 1 }.releases());
        assert!(Workload::Hold { hot: 1, hold: ms(1), retry: ms(0) }.releases());
        assert!(!Workload::TtlOnly { keys: 1 }.releases());
        assert!(!Workload::Health.releases());
    }
}
