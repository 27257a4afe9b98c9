//! Where a held lock stands on this process's own clock, and the [`LostSignal`] that fires
//! when it can no longer be counted on. Knows nothing of connections: the connection and the
//! guard tell a [`Watch`] what they learn, and every signal taken from it sees the same.
//!
//! The server ends a lease `ttl` after it *received* the acquire or renewal that set it, and
//! never earlier; that moment is after the client *sent* it. So the send time plus the ttl,
//! on the client's clock, is a moment the lease cannot have ended before, whatever the
//! network or the server does meanwhile. A session (protocol version 2) is kept the same way:
//! the server ends it its timeout after its connection went, which is after the server
//! answered the last request on it, so after that request was sent. A [`Watch`] keeps such a
//! moment, for a lock's lease or for a session, and its alarm rings a [`safety_margin`]
//! before it.
//!
//! A lost watch stays lost: a renewal that succeeds after the alarm could have rung does not
//! take it back, so that whoever saw the loss can rely on it.

use std::fmt;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The share of a lease that a guard holds back, as a divisor: its signal fires with a fifth
/// of the lease still to go. It covers what happens between the signal and the holder's last
/// write: the holder noticing (a thread not scheduled at once on a busy machine), stopping
/// (a write in flight, a child process's exit), and the two machines' clocks running at
/// slightly different rates (NTP keeps that under 500 ppm, a small part of it).
pub const MARGIN_DIVISOR: u32 = 5;
/// The least margin, whatever the lease: the part of noticing and stopping that does not
/// shrink with a shorter lease (scheduling delays, a signal's delivery, a process's exit).
pub const MIN_MARGIN: Duration = Duration::from_millis(100);

/// How long before its end (on this process's clock) a lease of `ttl` is given up: a fifth
/// of it, at least [`MIN_MARGIN`], but never more than a third of it, so that a holder who
/// renews every third of the lease (as `ringlock lock` does) still has a third of it for the
/// renewal's answer to come back. A session's timeout is given up the same way.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / MARGIN_DIVISOR).max(MIN_MARGIN).min(ttl / 3)
}

/// Why a lock can no longer be counted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The server pushed `LOST`: the session lock's lease ran out there.
    Expired,
    /// No renewal was confirmed in time: on this process's clock the lease is within its
    /// [`safety_margin`] of its end (the server may be stopped, cut off, or just slow).
    Deadline,
    /// The server has not answered anything in time: on this process's clock the lock's
    /// session (protocol version 2), and so the session lock, is within its
    /// [`safety_margin`] of its end (the client could not reconnect, or the server is stopped,
    /// cut off, or slow).
    SessionDeadline,
    /// The client reconnected and the server no longer had its session (it had ended, or the
    /// server lost it): the session's locks are gone.
    SessionExpired,
    /// A renewal was refused (the error says how): the lock is no longer ours.
    Refused(String),
    /// The connection failed or ended, and with it the client (the error says how): with
    /// protocol version 1 session locks are released with their connection, and no lock can
    /// be renewed through it.
    Disconnected(String),
    /// The guard released the lock.
    Released,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::Expired => f.write_str("the server ended its lease"),
            LostReason::Deadline => f.write_str(
                "no renewal was confirmed in time: by this process's clock, the lease is within its safety margin of its end",
            ),
            LostReason::SessionDeadline => f.write_str(
                "the server has not answered in time: by this process's clock, the session is within its safety margin of its end",
            ),
            LostReason::SessionExpired => {
                f.write_str("session expired: the server no longer had the session when the client reconnected")
            }
            LostReason::Refused(why) => write!(f, "a renewal was refused: {why}"),
            LostReason::Disconnected(why) => write!(f, "the connection failed: {why}"),
            LostReason::Released => f.write_str("it was released"),
        }
    }
}

/// Where a lease (or a session) stands, as its watch and its signals see it.
#[derive(Clone, Debug)]
pub(crate) struct Standing {
    /// It cannot have ended at the server before this (`None`: it has no expiry).
    expires: Option<Instant>,
    /// When the alarm rings if nothing comes first: `expires` less the safety margin.
    alarm: Option<Instant>,
    /// Why it is lost once the alarm has rung ([`LostReason::Deadline`] for a lease).
    overdue: LostReason,
    /// Set once it is lost; never cleared.
    lost: Option<LostReason>,
}

impl Standing {
    /// Why it is lost, as of `now`.
    fn lost_at(&self, now: Instant) -> Option<LostReason> {
        self.lost.clone().or_else(|| self.alarm.filter(|&at| now >= at).map(|_| self.overdue.clone()))
    }
}

/// A lease's standing (or a session's), shared by its guard, its signals and the connection
/// that tells of pushes, answers and its own end.
pub(crate) struct Watch(watch::Sender<Standing>);

impl Watch {
    /// A lease of `ttl` (`None`: no expiry) asked for at `sent`.
    pub(crate) fn lease(sent: Instant, ttl: Option<Duration>) -> Watch {
        Watch::new(sent, ttl, LostReason::Deadline)
    }

    /// A session of `timeout`, heard from last by an answer to a request sent at `heard`.
    pub(crate) fn session(heard: Instant, timeout: Duration) -> Watch {
        Watch::new(heard, Some(timeout), LostReason::SessionDeadline)
    }

    fn new(sent: Instant, ttl: Option<Duration>, overdue: LostReason) -> Watch {
        let (expires, alarm) = deadlines(sent, ttl);
        Watch(watch::Sender::new(Standing { expires, alarm, overdue, lost: None }))
    }

    /// It is lost (unless it already was: the first reason stands).
    pub(crate) fn lose(&self, why: LostReason) {
        self.0.send_if_modified(|s| {
            let first = s.lost.is_none();
            if first {
                s.lost = Some(why);
            }
            first
        });
    }

    /// A renewal sent at `sent` was confirmed: the lease now runs `ttl` from then. If its
    /// answer came after the alarm (as of `now`), someone may have seen it lost, and it stays
    /// lost.
    pub(crate) fn renewed(&self, sent: Instant, ttl: Option<Duration>, now: Instant) {
        self.move_to(sent, ttl, now, |_, _| true);
    }

    /// The server answered a request of the session's sent at `sent`: the session, of
    /// `timeout`, now runs at least until `timeout` after then (answers come in any order,
    /// so an earlier one moves nothing). Stays lost as [`Watch::renewed`] does.
    pub(crate) fn heard(&self, sent: Instant, timeout: Duration, now: Instant) {
        self.move_to(sent, Some(timeout), now, |old, new| new > old);
    }

    fn move_to(
        &self,
        sent: Instant,
        ttl: Option<Duration>,
        now: Instant,
        moves: impl Fn(Option<Instant>, Option<Instant>) -> bool,
    ) {
        self.0.send_if_modified(|s| {
            if s.lost.is_some() {
                return false;
            }
            if let Some(why) = s.lost_at(now) {
                s.lost = Some(why);
                return true;
            }
            let (expires, alarm) = deadlines(sent, ttl);
            let moved = moves(s.expires, expires);
            if moved {
                (s.expires, s.alarm) = (expires, alarm);
            }
            moved
        });
    }

    /// Why it is lost, if it is, as of `now`.
    pub(crate) fn lost_at(&self, now: Instant) -> Option<LostReason> {
        self.0.borrow().lost_at(now)
    }

    /// A receiver of its standing, for a signal.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Standing> {
        self.0.subscribe()
    }
}

fn deadlines(sent: Instant, ttl: Option<Duration>) -> (Option<Instant>, Option<Instant>) {
    let expires = ttl.map(|ttl| sent + ttl);
    (expires, ttl.map(|ttl| sent + ttl - safety_margin(ttl)))
}

/// Fires when a lock can no longer be counted on: see [`crate::guard`] for when.
/// [`LostSignal::wait`] is the future to `select!` on while working; [`check`] asks without
/// waiting. Cheap to clone.
///
/// [`check`]: LostSignal::check
#[derive(Clone)]
pub struct LostSignal {
    lease: watch::Receiver<Standing>,
    /// A session lock's session (protocol version 2): the lock goes with it.
    session: Option<watch::Receiver<Standing>>,
}

impl LostSignal {
    /// The signal of a lease, and of the session it belongs to, if any.
    pub(crate) fn new(lease: &Watch, session: Option<&Watch>) -> LostSignal {
        LostSignal { lease: lease.subscribe(), session: session.map(Watch::subscribe) }
    }

    /// Resolves when the lock is lost, with the reason (at once if it already is). Needs a
    /// tokio runtime with its timer, for the deadline. Cancel-safe.
    pub async fn wait(&mut self) -> LostReason {
        loop {
            let now = Instant::now();
            let lease = self.lease.borrow_and_update().clone();
            let session = self.session.as_mut().map(|rx| rx.borrow_and_update().clone());
            if let Some(why) = lost_at(&lease, session.as_ref(), now) {
                return why;
            }
            let alarm = earliest(lease.alarm, session.and_then(|s| s.alarm));
            let ring = async {
                match alarm {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let session_news = async {
                match self.session.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.lease.changed() => {
                    if changed.is_err() {
                        // Every guard and connection that could say more is gone.
                        return self.lease.borrow().lost.clone().unwrap_or(LostReason::Released);
                    }
                }
                changed = session_news => {
                    if changed.is_err() {
                        // Nothing more will come of the session: its last word stands.
                        let last = self.session.take().map(|rx| rx.borrow().clone());
                        if let Some(why) = last.and_then(|s| s.lost_at(Instant::now())) {
                            return why;
                        }
                    }
                }
                () = ring => {}
            }
        }
    }

    /// Why the lock is lost, if it is, now.
    pub fn check(&self) -> Option<LostReason> {
        let session = self.session.as_ref().map(|rx| rx.borrow().clone());
        lost_at(&self.lease.borrow(), session.as_ref(), Instant::now())
    }

    /// When the signal fires if nothing else comes first: the lease's end on this process's
    /// clock less its [`safety_margin`], or for a session lock its session's, whichever is
    /// first (`None`: no expiry).
    pub fn deadline(&self) -> Option<Instant> {
        let session = self.session.as_ref().and_then(|rx| rx.borrow().alarm);
        earliest(self.lease.borrow().alarm, session)
    }

    /// The moment the lock cannot have been let go at the server before (`None`: never).
    pub(crate) fn expires(&self) -> Option<Instant> {
        let session = self.session.as_ref().and_then(|rx| rx.borrow().expires);
        earliest(self.lease.borrow().expires, session)
    }
}

fn lost_at(lease: &Standing, session: Option<&Standing>, now: Instant) -> Option<LostReason> {
    lease.lost_at(now).or_else(|| session.and_then(|s| s.lost_at(now)))
}

/// The earlier of two moments, where `None` is never.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        assert_eq!(safety_margin(Duration::from_secs(30)), Duration::from_secs(6));
        assert_eq!(safety_margin(Duration::from_secs(3)), Duration::from_millis(600));
        assert_eq!(safety_margin(Duration::from_millis(400)), Duration::from_millis(100), "at least 100 ms");
        assert_eq!(safety_margin(Duration::from_millis(150)), Duration::from_millis(50), "at most a third");
    }

    #[test]
    fn a_watch_moves_its_deadline_until_it_is_lost_and_then_stays_lost() {
        let sent = Instant::now();
        let ttl = Some(Duration::from_secs(60));
        let watch = Watch::lease(sent, ttl);
        let signal = LostSignal::new(&watch, None);
        assert_eq!(signal.deadline(), Some(sent + Duration::from_secs(48)));
        assert_eq!(signal.check(), None);
        let later = sent + Duration::from_secs(1);
        watch.renewed(later, ttl, later);
        assert_eq!(signal.deadline(), Some(later + Duration::from_secs(48)));
        watch.lose(LostReason::Expired);
        watch.lose(LostReason::Released);
        assert_eq!(signal.check(), Some(LostReason::Expired), "the first reason stands");
        watch.renewed(later + Duration::from_secs(1), ttl, later);
        assert_eq!(signal.check(), Some(LostReason::Expired), "a renewal does not undo a loss");

        let long_ago = Instant::now() - Duration::from_secs(10);
        let overdue = Watch::lease(long_ago, Some(Duration::from_secs(1)));
        let signal = LostSignal::new(&overdue, None);
        assert_eq!(signal.check(), Some(LostReason::Deadline));
        overdue.renewed(Instant::now(), Some(Duration::from_secs(60)), Instant::now());
        assert_eq!(signal.check(), Some(LostReason::Deadline), "too late: the alarm may have been seen");

        let forever = Watch::lease(sent, None);
        assert_eq!(LostSignal::new(&forever, None).deadline(), None);
    }

    #[test]
    fn a_session_lock_is_lost_with_its_session_and_by_the_earlier_deadline() {
        let now = Instant::now();
        let lease = Watch::lease(now, Some(Duration::from_secs(30)));
        let session = Watch::session(now, Duration::from_secs(10));
        let signal = LostSignal::new(&lease, Some(&session));
        assert_eq!(signal.deadline(), Some(now + Duration::from_secs(8)), "the session's comes first");
        assert_eq!(signal.expires(), Some(now + Duration::from_secs(10)));
        let no_lease = Watch::lease(now, None);
        assert_eq!(LostSignal::new(&no_lease, Some(&session)).deadline(), Some(now + Duration::from_secs(8)));
        session.heard(now + Duration::from_secs(20), Duration::from_secs(10), now);
        assert_eq!(signal.deadline(), Some(now + Duration::from_secs(24)), "now the lease's");
        session.heard(now + Duration::from_secs(1), Duration::from_secs(10), now);
        assert_eq!(signal.deadline(), Some(now + Duration::from_secs(24)), "an earlier answer moves nothing");
        session.lose(LostReason::SessionExpired);
        assert_eq!(signal.check(), Some(LostReason::SessionExpired));

        let long_ago = Instant::now() - Duration::from_secs(10);
        let stale = Watch::session(long_ago, Duration::from_secs(1));
        let signal = LostSignal::new(&lease, Some(&stale));
        assert_eq!(signal.check(), Some(LostReason::SessionDeadline));
        stale.heard(Instant::now(), Duration::from_secs(1), Instant::now());
        assert_eq!(signal.check(), Some(LostReason::SessionDeadline), "and it stays lost");
    }
}
