//! The async client: its calls, each with its timeout, over the connection its driver keeps
//! (see [`crate::link`] for how: any number of requests in flight, reconnects, sessions). A
//! caller that stops waiting (its future dropped) does not strand a lock: a request not yet
//! sent is not sent, and a grant that arrives for nobody is released at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::Error;
use crate::frame::WireRequest;
use crate::lease::{AcquireOptions, Lease, LockInfo, Lost};
use crate::link::{self, Answer, Call, Shared};
use crate::standing::Watch;

/// A client of a ringlock server. Cheap to clone; clones share the connection and the
/// session. When the last clone (and the last guard) is dropped, the connection is closed
/// after what was queued on it, and with protocol version 2 after releasing the session's
/// locks, which the server would otherwise keep for the session's timeout.
#[derive(Clone)]
pub struct Client {
    calls: mpsc::UnboundedSender<Call>,
    shared: Arc<Shared>,
}

impl Client {
    /// Connects, and presents the secret (with protocol version 2, opening a session), within
    /// [`Config::call_timeout`]; it does not retry: a server that cannot be reached now is
    /// an error. Must be called within a tokio runtime (the connection's tasks run on it).
    pub async fn connect(config: &Config) -> Result<Client, Error> {
        let (shared, calls) = link::open(config).await?;
        Ok(Client { calls, shared })
    }

    /// The owner name this client acquires and releases as.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Session locks lost from now on: their lease ran out (the server's `LOST` push), or,
    /// with protocol version 2, their session ended while the client was away. (A
    /// [`Guard`](crate::Guard) tells of its own lock, and of every other way to lose it: see
    /// [`Guard::lost`](crate::Guard::lost).)
    pub fn lost(&self) -> broadcast::Receiver<Lost> {
        self.shared.lost()
    }

    /// Takes `resource`, waiting server-side up to `opts.wait` if it is held.
    pub async fn acquire(&self, resource: &str, opts: AcquireOptions) -> Result<Lease, Error> {
        self.acquire_watched(resource, opts).await.map(|(lease, _)| lease)
    }

    /// [`Client::acquire`], with the session's guarantee for a version 2 session lock.
    pub(crate) async fn acquire_watched(
        &self,
        resource: &str,
        opts: AcquireOptions,
    ) -> Result<(Lease, Option<Arc<Watch>>), Error> {
        let req = WireRequest::Acquire {
            resource,
            owner: self.owner(),
            ttl: opts.ttl.map(link::millis),
            wait: opts.wait.map_or(0, link::millis),
            session: opts.session,
        };
        match self.call(&req, opts.wait.unwrap_or_default()).await? {
            Answer::Granted(token, session) => Ok((Lease { resource: resource.to_owned(), token }, session)),
            other => Err(unexpected(other)),
        }
    }

    /// Releases `resource` if this client's owner holds it (under `token`, if given).
    pub async fn release(&self, resource: &str, token: Option<u64>) -> Result<(), Error> {
        let req = WireRequest::Release { resource, owner: self.owner(), token };
        match self.call(&req, Duration::ZERO).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Renews the lease on `resource`: it now ends `ttl` from now (`None`: never).
    pub async fn extend(
        &self,
        resource: &str,
        token: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let req = WireRequest::Extend { resource, owner: self.owner(), token, ttl: ttl.map(link::millis) };
        match self.call(&req, Duration::ZERO).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Who holds `resource`, if anybody.
    pub async fn inspect(&self, resource: &str) -> Result<Option<LockInfo>, Error> {
        match self.call(&WireRequest::Inspect { resource }, Duration::ZERO).await {
            Ok(Answer::Lock(info)) => Ok(info),
            Err(Error::NotFound) => Ok(None),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    /// A round trip that does nothing (keeps the connection in use, measures latency).
    pub async fn ping(&self) -> Result<(), Error> {
        match self.call(&WireRequest::Ping, Duration::ZERO).await? {
            Answer::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `req` and waits for its answer, for the call timeout plus `waits` (the time the
    /// request asked the server to wait). Out of time with the request on the connection, it
    /// gives the connection up.
    async fn call(&self, req: &WireRequest<'_>, waits: Duration) -> Result<Answer, Error> {
        if self.shared.ended() {
            return Err(Error::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let call = Call::request(&self.shared, req, reply);
        let id = call.id();
        self.calls.send(call).map_err(|_| Error::Closed)?;
        let limit = self.shared.call_timeout.saturating_add(waits);
        match tokio::time::timeout(limit, answer).await {
            Ok(answer) => answer.map_err(|_| Error::Closed)?,
            Err(_) => Err(self.shared.timed_out(id, limit)),
        }
    }

    /// Sends a token-checked release and does not wait for its answer (for a guard dropped
    /// where nothing can wait).
    pub(crate) fn release_detached(&self, resource: &str, token: u64) {
        let _ = self.calls.send(Call::release(&self.shared, resource, token));
    }

    /// Starts telling `watch` of its lock's loss: a `LOST` push for `token`, or the client's
    /// end (at once, if it has ended already).
    pub(crate) fn watch(&self, token: u64, watch: Arc<Watch>) {
        self.shared.watch(token, watch);
    }

    /// Stops telling anyone of `token`'s loss.
    pub(crate) fn unwatch(&self, token: u64) {
        self.shared.unwatch(token);
    }

    /// How long a call waits for the server.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.shared.call_timeout
    }

    /// Set once the connection has been given what was queued, and its last words, after
    /// the last handle is gone.
    pub(crate) fn done(&self) -> watch::Receiver<bool> {
        self.shared.done()
    }
}

fn unexpected(answer: Answer) -> Error {
    Error::Protocol(format!("unexpected reply {answer:?}"))
}
