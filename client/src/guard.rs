//! A held lock, on this process's own clock: the [`Guard`] that [`Client::lock`] returns,
//! and its [`LostSignal`], which fires when the lock can no longer be counted on.
//!
//! The server ends a lease `ttl` after it *received* the acquire or renewal that set it, and
//! never earlier; that moment is after the client *sent* it. So the send time plus the ttl,
//! on the client's clock, is a moment the lease cannot have ended before, whatever the
//! network or the server does meanwhile, a server that stopped answering included. A guard
//! keeps that moment for its last confirmed acquire or renewal, and its signal fires a
//! [`safety_margin`] before it, or earlier, at the first of:
//! - the server's `LOST` push (a session lock's lease ran out);
//! - a renewal refused (the lock is no longer ours) or failed (timed out, the connection
//!   gone: session locks go with their connection, and nothing can be renewed on it);
//! - the connection's end, for any reason.
//!
//! A lost guard stays lost: a renewal that succeeds after the signal could have fired does
//! not take the signal back, so that whoever saw it can rely on it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::conn::{Client, Lease};
use crate::error::Error;

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
/// renewal's answer to come back.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / MARGIN_DIVISOR).max(MIN_MARGIN).min(ttl / 3)
}

/// Why a lock can no longer be counted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The server pushed `LOST`: the session lock's lease ran out there, or an operator
    /// force-released it.
    Expired,
    /// No renewal was confirmed in time: on this process's clock the lease is within its
    /// [`safety_margin`] of its end (the server may be stopped, cut off, or just slow).
    Deadline,
    /// A renewal was refused (the error says how): the lock is no longer ours.
    Refused(String),
    /// The connection failed or ended (the error says how): session locks are released with
    /// it, and no lock can be renewed through it.
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
            LostReason::Refused(why) => write!(f, "a renewal was refused: {why}"),
            LostReason::Disconnected(why) => write!(f, "the connection failed: {why}"),
            LostReason::Released => f.write_str("it was released"),
        }
    }
}

/// Where a held lock stands, as its guard and its signals see it.
#[derive(Clone, Debug)]
struct Standing {
    /// The lease cannot have ended at the server before this (`None`: it has no expiry).
    expires: Option<Instant>,
    /// When the signal fires if nothing comes first: `expires` less the safety margin.
    alarm: Option<Instant>,
    /// Set once the lock is lost; never cleared.
    lost: Option<LostReason>,
}

impl Standing {
    /// Why the lock is lost, as of `now`.
    fn lost_at(&self, now: Instant) -> Option<LostReason> {
        self.lost.clone().or_else(|| self.alarm.filter(|&at| now >= at).map(|_| LostReason::Deadline))
    }
}

/// A lock's standing, shared by its guard, its signals and the connection that tells of
/// pushes and of its own end.
pub(crate) struct Watch(watch::Sender<Standing>);

impl Watch {
    fn new(sent: Instant, ttl: Option<Duration>) -> Watch {
        let (expires, alarm) = deadlines(sent, ttl);
        Watch(watch::Sender::new(Standing { expires, alarm, lost: None }))
    }

    /// The lock is lost (unless it already was: the first reason stands).
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
    /// answer came after the alarm, someone may have seen the lock lost, and it stays lost.
    fn renewed(&self, sent: Instant, ttl: Option<Duration>) {
        self.0.send_modify(|s| {
            if s.lost.is_some() {
                return;
            }
            if let Some(why) = s.lost_at(Instant::now()) {
                s.lost = Some(why);
                return;
            }
            (s.expires, s.alarm) = deadlines(sent, ttl);
        });
    }
}

fn deadlines(sent: Instant, ttl: Option<Duration>) -> (Option<Instant>, Option<Instant>) {
    let expires = ttl.map(|ttl| sent + ttl);
    (expires, ttl.map(|ttl| sent + ttl - safety_margin(ttl)))
}

/// A held lock on an async [`Client`]. Renew it with [`Guard::extend`]; watch it with
/// [`Guard::lost`]. Dropping it releases the lock (token-checked) without waiting for the
/// answer; [`Guard::release`] waits and reports.
pub struct Guard {
    client: Client,
    lease: Lease,
    watch: Arc<Watch>,
    released: bool,
}

impl Guard {
    pub(crate) fn new(client: Client, lease: Lease, sent: Instant, ttl: Option<Duration>) -> Guard {
        let watch = Arc::new(Watch::new(sent, ttl));
        client.watch(lease.token, watch.clone());
        Guard { client, lease, watch, released: false }
    }

    /// The lease: resource and fencing token.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The fencing token to hand to the storage being written.
    pub fn token(&self) -> u64 {
        self.lease.token
    }

    /// The moment, on this process's clock, that the lease cannot have ended at the server
    /// before: the last confirmed acquire's or renewal's send time plus its ttl (`None`: no
    /// expiry).
    pub fn expires(&self) -> Option<Instant> {
        self.watch.0.borrow().expires
    }

    /// A signal that fires when the lock can no longer be counted on (see [`LostSignal`]).
    /// Take as many as you like; they all fire.
    pub fn lost(&self) -> LostSignal {
        LostSignal { rx: self.watch.0.subscribe() }
    }

    /// Renews the lease: it now ends `ttl` from now (`None`: never). A confirmed renewal moves
    /// the guard's deadline; a refused or failed one makes the guard lost (an `Invalid`
    /// answer changes nothing at the server, and so nothing here).
    pub async fn extend(&self, ttl: Option<Duration>) -> Result<(), Error> {
        let sent = Instant::now();
        let renewed = self.client.extend(&self.lease.resource, Some(self.lease.token), ttl).await;
        match &renewed {
            Ok(()) => self.watch.renewed(sent, ttl),
            Err(Error::Invalid(_)) => {}
            Err(e @ (Error::NotFound | Error::NotHolder | Error::TokenMismatch)) => {
                self.watch.lose(LostReason::Refused(e.to_string()))
            }
            Err(e) => self.watch.lose(LostReason::Disconnected(e.to_string())),
        }
        renewed
    }

    /// Releases now, and reports the outcome.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.forget();
        self.client.release(&self.lease.resource, Some(self.lease.token)).await
    }

    fn forget(&self) {
        self.client.unwatch(self.lease.token);
        self.watch.lose(LostReason::Released);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.released {
            self.forget();
            self.client.release_detached(&self.lease.resource, self.lease.token);
        }
    }
}

/// Fires when a lock can no longer be counted on: see the [module documentation](self) for
/// when. [`LostSignal::wait`] is the future to `select!` on while working; [`check`] asks
/// without waiting. Cheap to clone.
///
/// [`check`]: LostSignal::check
#[derive(Clone)]
pub struct LostSignal {
    rx: watch::Receiver<Standing>,
}

impl LostSignal {
    /// Resolves when the lock is lost, with the reason (at once if it already is). Needs a
    /// tokio runtime with its timer, for the deadline. Cancel-safe.
    pub async fn wait(&mut self) -> LostReason {
        loop {
            let alarm = {
                let standing = self.rx.borrow_and_update();
                if let Some(why) = standing.lost_at(Instant::now()) {
                    return why;
                }
                standing.alarm
            };
            let ring = async {
                match alarm {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // Every guard and connection that could say more is gone.
                        return self.rx.borrow().lost.clone().unwrap_or(LostReason::Released);
                    }
                }
                () = ring => {}
            }
        }
    }

    /// Why the lock is lost, if it is, now.
    pub fn check(&self) -> Option<LostReason> {
        self.rx.borrow().lost_at(Instant::now())
    }

    /// When the signal fires if nothing else comes first: the lease's end on this process's
    /// clock less its [`safety_margin`] (`None`: no expiry).
    pub fn deadline(&self) -> Option<Instant> {
        self.rx.borrow().alarm
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
        let watch = Watch::new(sent, ttl);
        let signal = LostSignal { rx: watch.0.subscribe() };
        assert_eq!(signal.deadline(), Some(sent + Duration::from_secs(48)));
        assert_eq!(signal.check(), None);
        let later = sent + Duration::from_secs(1);
        watch.renewed(later, ttl);
        assert_eq!(signal.deadline(), Some(later + Duration::from_secs(48)));
        watch.lose(LostReason::Expired);
        watch.lose(LostReason::Released);
        assert_eq!(signal.check(), Some(LostReason::Expired), "the first reason stands");
        watch.renewed(later + Duration::from_secs(1), ttl);
        assert_eq!(signal.check(), Some(LostReason::Expired), "a renewal does not undo a loss");

        let long_ago = Instant::now() - Duration::from_secs(10);
        let overdue = Watch::new(long_ago, Some(Duration::from_secs(1)));
        let signal = LostSignal { rx: overdue.0.subscribe() };
        assert_eq!(signal.check(), Some(LostReason::Deadline));
        overdue.renewed(Instant::now(), Some(Duration::from_secs(60)));
        assert_eq!(signal.check(), Some(LostReason::Deadline), "too late: the alarm may have been seen");

        let forever = Watch::new(sent, None);
        assert_eq!((LostSignal { rx: forever.0.subscribe() }).deadline(), None);
    }
}
