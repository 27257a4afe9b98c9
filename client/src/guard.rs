//! A held lock, on this process's own clock: the [`Guard`] that [`Client::lock`] returns,
//! and its [`LostSignal`], which fires when the lock can no longer be counted on.
//!
//! The server ends a lease `ttl` after it *received* the acquire or renewal that set it, and
//! never earlier; that moment is after the client *sent* it. So a guard keeps, on this
//! process's clock, a moment the lease cannot have ended at the server before, whatever the
//! network or the server does meanwhile: its last confirmed acquire's or renewal's send time
//! plus its ttl. A session lock (protocol version 2) has a second one, its session's: the
//! server ends a session its timeout after the session's connection went, which is after it
//! answered the last request on it, so the send time of the last answered request plus the
//! session timeout. The signal fires a [`safety_margin`] before the first of them, or earlier,
//! at the first of:
//! - the server's `LOST` push (a session lock's lease ran out);
//! - a renewal refused (the lock is no longer ours);
//! - for a session lock, the client reconnecting to find its session gone
//!   ([`LostReason::SessionExpired`]);
//! - with protocol version 1, the connection's end, for any reason: session locks go with it,
//!   and the client with it.
//!
//! With version 2 a connection that fails loses nothing by itself: the client reconnects and
//! resumes its session, and the guard stays held as long as its deadlines hold; its renewals
//! go on the new connection. A renewal that fails without an answer (the connection failed,
//! the server could not write its log) leaves the guard to its deadlines.
//!
//! A lost guard stays lost: a renewal that succeeds after the signal could have fired does
//! not take the signal back, so that whoever saw it can rely on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Client;
use crate::error::Error;
use crate::lease::{AcquireOptions, Lease};
use crate::standing::Watch;
pub use crate::standing::{LostReason, LostSignal, MARGIN_DIVISOR, MIN_MARGIN, safety_margin};

// `lock` lives here, with the guard it makes, so that the client knows nothing of guards.
impl Client {
    /// Acquires, and returns a [`Guard`]: it keeps the lease's time on this process's clock,
    /// tells when the lock can no longer be counted on ([`Guard::lost`]), and releases the
    /// lock when dropped. An acquire that may have waited server-side is renewed at once, so
    /// that the lease is counted from a known moment rather than from before the wait.
    pub async fn lock(&self, resource: &str, opts: AcquireOptions) -> Result<Guard, Error> {
        let sent = Instant::now();
        let (lease, session) = self.acquire_watched(resource, opts).await?;
        let guard = Guard::new(self.clone(), lease, sent, opts.ttl, session);
        if opts.ttl.is_some() && opts.wait.is_some_and(|w| !w.is_zero()) {
            guard.extend(opts.ttl).await?;
        }
        Ok(guard)
    }
}

/// A held lock on an async [`Client`]. Renew it with [`Guard::extend`]; watch it with
/// [`Guard::lost`]. Dropping it releases the lock (token-checked) without waiting for the
/// answer; [`Guard::release`] waits and reports.
pub struct Guard {
    client: Client,
    lease: Lease,
    watch: Arc<Watch>,
    /// A version 2 session lock's session guarantee.
    session: Option<Arc<Watch>>,
    released: bool,
}

impl Guard {
    fn new(
        client: Client,
        lease: Lease,
        sent: Instant,
        ttl: Option<Duration>,
        session: Option<Arc<Watch>>,
    ) -> Guard {
        let watch = Arc::new(Watch::lease(sent, ttl));
        client.watch(lease.token, watch.clone());
        Guard { client, lease, watch, session, released: false }
    }

    /// The lease: resource and fencing token.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The fencing token to hand to the storage being written.
    pub fn token(&self) -> u64 {
        self.lease.token
    }

    /// The moment, on this process's clock, that the lock cannot have been let go at the
    /// server before: the last confirmed acquire's or renewal's send time plus its ttl, or
    /// for a session lock its session's end if that comes first (`None`: no expiry).
    pub fn expires(&self) -> Option<Instant> {
        self.lost().expires()
    }

    /// A signal that fires when the lock can no longer be counted on (see [`LostSignal`]).
    /// Take as many as you like; they all fire.
    pub fn lost(&self) -> LostSignal {
        LostSignal::new(&self.watch, self.session.as_deref())
    }

    /// Renews the lease: it now ends `ttl` from now (`None`: never). A confirmed renewal moves
    /// the guard's deadline; a refused one makes the guard lost. One that fails otherwise
    /// (no answer, the connection failed, the server could not write its log, an `Invalid`
    /// answer) changes nothing here: the deadline stands.
    pub async fn extend(&self, ttl: Option<Duration>) -> Result<(), Error> {
        let sent = Instant::now();
        let renewed = self.client.extend(&self.lease.resource, Some(self.lease.token), ttl).await;
        match &renewed {
            Ok(()) => self.watch.renewed(sent, ttl, Instant::now()),
            Err(e @ (Error::NotFound | Error::NotHolder | Error::TokenMismatch)) => {
                self.watch.lose(LostReason::Refused(e.to_string()))
            }
            Err(_) => {}
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
