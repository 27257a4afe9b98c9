//! The client's side of its session: which session locks it holds, and, with protocol
//! version 2, the session's id, its timeout, and the guarantee its session locks' guards
//! share. Pure bookkeeping: the connection tells it what the server answered, and when.
//!
//! A version 2 session outlives its connection for its timeout, counted by the server from
//! the moment it noticed the connection gone. That is after it answered the last request on
//! the connection, so after that request was sent: the send time of the latest answered
//! request plus the timeout is a moment, on this process's clock, that the session (and its
//! locks) cannot have ended before. The client keeps that moment in a [`Watch`], which the
//! guards of its session locks watch besides their lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::standing::{LostReason, Watch};

/// A session's guarantee moves only for an answer at least this share (a divisor) of the
/// timeout newer than its last move, so that a busy connection does not wake every guard's
/// signal on every answer. The guarantee then lags the truth by at most a sixteenth of the
/// timeout: it errs early, never late.
const HEARD_STEP_DIVISOR: u32 = 16;

/// The session as this client knows it.
pub(crate) struct Session {
    /// Its id (version 2; 0 for version 1, whose session is its connection).
    id: u64,
    /// How long the server keeps it after its connection goes (version 2).
    timeout: Duration,
    /// Session locks held: token -> resource (to name the server's `LOST` pushes, to tell of
    /// them when the session ends, and to release them when the client closes).
    locks: HashMap<u64, String>,
    /// The guarantee the guards of session locks granted now share (version 2).
    standing: Option<Arc<Watch>>,
    /// The send time `standing` was last moved to.
    moved_to: Instant,
}

impl Session {
    /// Version 1: the session is the connection.
    pub(crate) fn connection_bound(now: Instant) -> Session {
        Session { id: 0, timeout: Duration::ZERO, locks: HashMap::new(), standing: None, moved_to: now }
    }

    /// Version 2: session `id` of `timeout`, opened (or resumed) by a `HELLO_SESSION` sent at
    /// `sent`.
    pub(crate) fn resumable(id: u64, timeout: Duration, sent: Instant) -> Session {
        let standing = Some(Arc::new(Watch::session(sent, timeout)));
        Session { id, timeout, locks: HashMap::new(), standing, moved_to: sent }
    }

    /// The id to resume (0: none).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The session's timeout (zero for version 1).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The server answered a request sent at `sent` on a connection of this session (`now`
    /// is the clock at the answer).
    pub(crate) fn heard(&mut self, sent: Instant, now: Instant) {
        if self.standing.is_some() && sent >= self.moved_to + self.timeout / HEARD_STEP_DIVISOR {
            self.move_to(sent, now);
        }
    }

    /// The session lock `resource` was granted under `token`, in answer to a request sent at
    /// `sent`: the guarantee its guard is to watch (version 2).
    pub(crate) fn granted(
        &mut self,
        token: u64,
        resource: &str,
        sent: Instant,
        now: Instant,
    ) -> Option<Arc<Watch>> {
        self.locks.insert(token, resource.to_owned());
        if self.standing.as_ref()?.lost_at(now).is_some() {
            self.move_to(sent, now);
        } else {
            self.heard(sent, now);
        }
        self.standing.clone()
    }

    /// Moves the guarantee to `sent`. One that is lost already stays so, for the guards that
    /// watch it; guards of locks granted from now on get a new one.
    fn move_to(&mut self, sent: Instant, now: Instant) {
        let Some(standing) = &self.standing else { return };
        match standing.lost_at(now) {
            None => standing.heard(sent, self.timeout, now),
            Some(why) => {
                // Whoever saw it lost can rely on that.
                standing.lose(why);
                let fresh = Watch::session(sent, self.timeout);
                if fresh.lost_at(now).is_some() {
                    return;
                }
                self.standing = Some(Arc::new(fresh));
            }
        }
        self.moved_to = sent;
    }

    /// The lock granted under `token` was released.
    pub(crate) fn released(&mut self, token: u64) {
        self.locks.remove(&token);
    }

    /// The server pushed `LOST` for `token`: its resource, if it is one of ours.
    pub(crate) fn lost(&mut self, token: u64) -> Option<String> {
        self.locks.remove(&token)
    }

    /// The session locks held, `(token, resource)`.
    pub(crate) fn locks(&self) -> impl Iterator<Item = (u64, &str)> {
        self.locks.iter().map(|(&token, resource)| (token, resource.as_str()))
    }

    /// The server no longer has the session: every guard of its locks is lost at once;
    /// returns the locks, `(token, resource)`, to tell of.
    pub(crate) fn end(self) -> Vec<(u64, String)> {
        if let Some(standing) = &self.standing {
            standing.lose(LostReason::SessionExpired);
        }
        let mut locks: Vec<_> = self.locks.into_iter().collect();
        locks.sort_unstable();
        locks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standing::LostSignal;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn signal(session: &Watch) -> LostSignal {
        LostSignal::new(&Watch::lease(Instant::now(), None), Some(session))
    }

    #[test]
    fn answers_move_the_guarantee_in_steps_and_a_lost_one_is_replaced_for_new_grants() {
        let t0 = Instant::now();
        let mut s = Session::resumable(7, TIMEOUT, t0);
        let first = s.granted(1, "a", t0, t0).unwrap();
        let a = signal(&first);
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(8)), "the timeout less its margin");
        s.heard(t0 + Duration::from_millis(100), t0);
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(8)), "less than a step: not moved");
        s.heard(t0 + Duration::from_secs(1), t0);
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(9)));

        // Nothing heard for long enough: the guards of the session's locks are lost, and stay so.
        let late = t0 + Duration::from_secs(30);
        assert_eq!(first.lost_at(late), Some(LostReason::SessionDeadline));
        s.heard(t0 + Duration::from_secs(25), late);
        assert_eq!(first.lost_at(t0), Some(LostReason::SessionDeadline), "latched");
        let second = s.granted(2, "b", t0 + Duration::from_secs(25), late).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.lost_at(late), None, "a lock granted now is counted from now");
        assert_eq!(s.locks().count(), 2);
    }

    #[test]
    fn a_session_that_ends_loses_its_locks_and_names_them() {
        let t0 = Instant::now();
        let mut s = Session::resumable(7, TIMEOUT, t0);
        let watch = s.granted(5, "five", t0, t0).unwrap();
        s.granted(3, "three", t0, t0);
        s.granted(9, "nine", t0, t0);
        s.released(9);
        assert_eq!(s.lost(3), Some("three".to_owned()));
        assert_eq!(s.lost(3), None);
        assert_eq!(s.end(), vec![(5, "five".to_owned())]);
        assert_eq!(watch.lost_at(t0), Some(LostReason::SessionExpired));
    }

    #[test]
    fn a_connection_bound_session_has_no_guarantee_of_its_own() {
        let t0 = Instant::now();
        let mut s = Session::connection_bound(t0);
        assert!(s.granted(1, "a", t0, t0).is_none());
        assert_eq!((s.id(), s.lost(1)), (0, Some("a".to_owned())));
    }
}
