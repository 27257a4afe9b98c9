//! The async client: one connection to a ringlock server, with any number of requests in
//! flight on it. The connection is two tasks on the caller's tokio runtime: a writer that
//! batches every queued request into one write, and a reader that hands each reply to its
//! caller by id. A caller that stops waiting (its future dropped) does not strand a lock: a
//! grant that arrives for nobody is released at once.
//!
//! The client keeps its own time: every call has a timeout ([`Config::call_timeout`]), and
//! one that runs out closes the connection, since a server that stopped answering (stopped,
//! cut off, overloaded) cannot be trusted with what is still on it. The socket has TCP
//! keepalive, and on Linux `TCP_USER_TIMEOUT`, so that a peer that vanished is noticed by the
//! kernel too, even on a connection with nothing in flight. (Neither helps against a server
//! process that is stopped while its machine runs: its kernel still acknowledges everything.
//! Only the call timeout and a guard's own deadline catch that.)

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::Error;
use crate::frame::{self, FrameError, WireReply, WireRequest};
use crate::guard::{Guard, LostReason, Watch};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Lost-lease notices kept for a subscriber that is not reading (older ones are dropped).
const LOST_BACKLOG: usize = 64;
/// Idle time before the kernel probes the server. Renewals keep a connection with leases
/// busy; this is for one that only waits (a long server-side wait, a session lock without a
/// lease), so that a server gone without a word is found within about half a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Time between unanswered probes (Linux; other systems keep their default).
#[cfg(target_os = "linux")]
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the kernel drops the connection (Linux).
#[cfg(target_os = "linux")]
const KEEPALIVE_PROBES: u32 = 3;

/// How to acquire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcquireOptions {
    /// Lease length; `None` holds until released (or, for a session lock, until disconnect).
    pub ttl: Option<Duration>,
    /// How long to wait server-side if the lock is held; `None` answers at once.
    pub wait: Option<Duration>,
    /// Bind the lock to this connection: released when it closes.
    pub session: bool,
}

/// A granted lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub resource: String,
    /// Its fencing token: pass it to the storage you write to, which should refuse a lower one.
    pub token: u64,
}

/// A lock as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub owner: String,
    pub token: u64,
    /// Time left of the lease; `None` for no expiry.
    pub expires_in: Option<Duration>,
    pub waiters: u32,
}

/// A session lock whose lease ran out (pushed by the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub resource: String,
    pub token: u64,
}

/// A reply as the caller receives it (owned: it crosses from the reader task).
#[derive(Debug)]
enum Answer {
    Granted(u64),
    Done,
    Pong,
    Lock(Option<LockInfo>),
}

/// A request on its way to the writer.
struct Call {
    frame: Vec<u8>,
    /// For an acquire: what releasing a grant that nobody waits for takes.
    on_orphan: Option<(String, String)>,
    reply: oneshot::Sender<Result<Answer, Error>>,
}

/// A caller waiting for its reply, and what releasing an unwanted grant takes.
type Caller = (oneshot::Sender<Result<Answer, Error>>, Option<(String, String)>);

/// What a connection's two tasks and its callers share.
struct Shared {
    /// Replies the reader still owes, by id; `None` once the connection has ended, so that a
    /// call made after that fails at once instead of waiting for a reader that is gone.
    pending: Mutex<Option<HashMap<u32, Caller>>>,
    /// The guards of locks taken on this connection, by token, to tell when their lock is
    /// lost; `None` once the connection has ended.
    guards: Mutex<Option<HashMap<u64, Arc<Watch>>>>,
    /// Set, to the time it waited, by a call that ran out of time: both tasks stop, and the
    /// socket closes.
    abandoned: watch::Sender<Option<Duration>>,
    call_timeout: Duration,
}

/// A connection to a ringlock server. Cheap to clone; clones share the connection, which
/// closes when the last one is dropped.
#[derive(Clone)]
pub struct Client {
    calls: mpsc::UnboundedSender<Call>,
    owner: Arc<str>,
    lost: broadcast::Sender<Lost>,
    shared: Arc<Shared>,
}

impl Client {
    /// Connects, and presents the secret, within [`Config::call_timeout`]. Must be called
    /// within a tokio runtime (the connection's tasks run on it).
    pub async fn connect(config: &Config) -> Result<Client, Error> {
        let limit = config.call_timeout;
        let (rd, wr, buf) =
            tokio::time::timeout(limit, handshake(config)).await.map_err(|_| Error::CallTimeout(limit))??;
        let (calls, queue) = mpsc::unbounded_channel();
        let (lost, _) = broadcast::channel(LOST_BACKLOG);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            guards: Mutex::new(Some(HashMap::new())),
            abandoned: watch::Sender::new(None),
            call_timeout: limit,
        });
        let client = Client { calls, owner: config.owner.as_str().into(), lost: lost.clone(), shared };
        tokio::spawn(write_loop(wr, queue, client.shared.clone()));
        tokio::spawn(read_loop(rd, buf, client.shared.clone(), lost, client.calls.downgrade()));
        Ok(client)
    }

    /// The owner name this client acquires and releases as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Session locks whose lease ran out from now on. (A [`Guard`] tells of its own lock,
    /// and of every other way to lose it: see [`Guard::lost`].)
    pub fn lost(&self) -> broadcast::Receiver<Lost> {
        self.lost.subscribe()
    }

    /// Acquires, and returns a [`Guard`]: it keeps the lease's time on this process's clock,
    /// tells when the lock can no longer be counted on ([`Guard::lost`]), and releases the
    /// lock when dropped. An acquire that may have waited server-side is renewed at once, so
    /// that the lease is counted from a known moment rather than from before the wait.
    pub async fn lock(&self, resource: &str, opts: AcquireOptions) -> Result<Guard, Error> {
        let sent = Instant::now();
        let lease = self.acquire(resource, opts).await?;
        let guard = Guard::new(self.clone(), lease, sent, opts.ttl);
        if opts.ttl.is_some() && opts.wait.is_some_and(|w| !w.is_zero()) {
            guard.extend(opts.ttl).await?;
        }
        Ok(guard)
    }

    /// Takes `resource`, waiting server-side up to `opts.wait` if it is held.
    pub async fn acquire(&self, resource: &str, opts: AcquireOptions) -> Result<Lease, Error> {
        let req = WireRequest::Acquire {
            resource,
            owner: &self.owner,
            ttl: opts.ttl.map(millis),
            wait: opts.wait.map_or(0, millis),
            session: opts.session,
        };
        let orphan = Some((resource.to_owned(), self.owner.to_string()));
        match self.call(&req, orphan, opts.wait.unwrap_or_default()).await? {
            Answer::Granted(token) => Ok(Lease { resource: resource.to_owned(), token }),
            other => Err(unexpected(other)),
        }
    }

    /// Releases `resource` if this client's owner holds it (under `token`, if given).
    pub async fn release(&self, resource: &str, token: Option<u64>) -> Result<(), Error> {
        let req = WireRequest::Release { resource, owner: &self.owner, token };
        match self.call(&req, None, Duration::ZERO).await? {
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
        let req = WireRequest::Extend { resource, owner: &self.owner, token, ttl: ttl.map(millis) };
        match self.call(&req, None, Duration::ZERO).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Who holds `resource`, if anybody.
    pub async fn inspect(&self, resource: &str) -> Result<Option<LockInfo>, Error> {
        match self.call(&WireRequest::Inspect { resource }, None, Duration::ZERO).await {
            Ok(Answer::Lock(info)) => Ok(info),
            Err(Error::NotFound) => Ok(None),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    /// A round trip that does nothing (keeps the connection in use, measures latency).
    pub async fn ping(&self) -> Result<(), Error> {
        match self.call(&WireRequest::Ping, None, Duration::ZERO).await? {
            Answer::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `req` and waits for its answer, for the call timeout plus `waits` (the time the
    /// request asked the server to wait). Out of time, it gives the connection up.
    async fn call(
        &self,
        req: &WireRequest<'_>,
        on_orphan: Option<(String, String)>,
        waits: Duration,
    ) -> Result<Answer, Error> {
        let mut frame = Vec::new();
        // The writer stamps the id; 0 is a placeholder.
        frame::encode_request(&mut frame, 0, req);
        let (reply, answer) = oneshot::channel();
        self.calls.send(Call { frame, on_orphan, reply }).map_err(|_| Error::Closed)?;
        let limit = self.shared.call_timeout.saturating_add(waits);
        match tokio::time::timeout(limit, answer).await {
            Ok(answer) => answer.map_err(|_| Error::Closed)?,
            Err(_) => {
                self.shared.abandoned.send_replace(Some(limit));
                Err(Error::CallTimeout(limit))
            }
        }
    }

    /// Sends a token-checked release and does not wait for its answer (for a guard dropped
    /// where nothing can wait).
    pub(crate) fn release_detached(&self, resource: &str, token: u64) {
        send_detached(&self.calls, resource, &self.owner, token);
    }

    /// Starts telling `watch` of its lock's loss: a `LOST` push for `token`, or the
    /// connection's end (at once, if it has ended already).
    pub(crate) fn watch(&self, token: u64, watch: Arc<Watch>) {
        match self.shared.guards.lock().expect("guards map").as_mut() {
            Some(guards) => drop(guards.insert(token, watch)),
            None => watch.lose(LostReason::Disconnected(Error::Closed.to_string())),
        }
    }

    /// Stops telling anyone of `token`'s loss.
    pub(crate) fn unwatch(&self, token: u64) {
        if let Some(guards) = self.shared.guards.lock().expect("guards map").as_mut() {
            guards.remove(&token);
        }
    }
}

/// Opens the socket, sets its options, and presents the secret: the two halves, and what
/// was read past the answer to `HELLO`.
async fn handshake(config: &Config) -> Result<(OwnedReadHalf, OwnedWriteHalf, Vec<u8>), Error> {
    let stream = TcpStream::connect(&config.addr).await?;
    stream.set_nodelay(true)?;
    // Best effort: the call timeout and the guards' deadlines do not depend on it.
    let _ = set_liveness(&stream, config.call_timeout);
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = frame::PREFACE.to_vec();
    frame::encode_request(&mut hello, 0, &WireRequest::Hello { secret: config.secret.as_bytes() });
    wr.write_all(&hello).await?;
    let mut buf = Vec::with_capacity(READ_CHUNK_BYTES);
    let first = loop {
        if let Some(n) = frame::check(&buf).map_err(protocol)? {
            break n;
        }
        if rd.read_buf(&mut buf).await? == 0 {
            return Err(Error::Closed);
        }
    };
    match frame::parse_reply(&buf[..first]).map_err(protocol)?.1 {
        WireReply::HelloOk { .. } => {}
        WireReply::Unauthorized => return Err(Error::Unauthorized),
        other => return Err(Error::Protocol(format!("unexpected answer to HELLO: {other:?}"))),
    }
    buf.drain(..first);
    Ok((rd, wr, buf))
}

/// TCP keepalive, and on Linux `TCP_USER_TIMEOUT`: the kernel drops the connection when what
/// we sent stays unacknowledged for `unacked` (a call would time out by then anyway), rather
/// than after its default of about 15 minutes of retransmissions.
fn set_liveness(stream: &TcpStream, unacked: Duration) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive.with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES);
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(unacked))?;
    #[cfg(not(target_os = "linux"))]
    let _ = unacked;
    Ok(())
}

/// Resolves once a call has given the connection up, with the time that call waited.
async fn abandoned(rx: &mut watch::Receiver<Option<Duration>>) -> Duration {
    let after = rx.wait_for(Option::is_some).await.map(|after| after.unwrap_or_default());
    match after {
        Ok(after) => after,
        // The sender lives in `Shared`, as long as the tasks that wait here.
        Err(_) => std::future::pending().await,
    }
}

/// Milliseconds of a duration, rounded up (a lease or wait is never shorter than asked).
fn millis(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn protocol(e: FrameError) -> Error {
    match e {
        FrameError::Fatal(why) | FrameError::Invalid { reason: why, .. } => Error::Protocol(why.to_owned()),
    }
}

fn unexpected(answer: Answer) -> Error {
    Error::Protocol(format!("unexpected reply {answer:?}"))
}

/// Sends queued requests, as many per write as are queued, numbering them; stops when a call
/// gives the connection up.
async fn write_loop(mut wr: OwnedWriteHalf, mut queue: mpsc::UnboundedReceiver<Call>, shared: Arc<Shared>) {
    let mut next_id: u32 = 1;
    let mut batch = Vec::with_capacity(64);
    let mut buf = Vec::new();
    let mut gave_up = shared.abandoned.subscribe();
    loop {
        let queued = tokio::select! {
            n = queue.recv_many(&mut batch, 64) => n,
            _ = abandoned(&mut gave_up) => break,
        };
        if queued == 0 {
            break;
        }
        buf.clear();
        {
            let mut pending = shared.pending.lock().expect("pending map");
            let Some(pending) = pending.as_mut() else {
                // The connection has ended: these calls can only fail.
                batch.drain(..).for_each(|call| drop(call.reply.send(Err(Error::Closed))));
                continue;
            };
            for mut call in batch.drain(..) {
                let id = next_id;
                // Id 0 is the server's, for pushes.
                next_id = next_id.checked_add(1).unwrap_or(1);
                call.frame[frame::LEN_BYTES + 1..frame::LEN_BYTES + 5].copy_from_slice(&id.to_le_bytes());
                buf.extend_from_slice(&call.frame);
                pending.insert(id, (call.reply, call.on_orphan));
            }
        }
        let written = tokio::select! {
            written = wr.write_all(&buf) => written,
            _ = abandoned(&mut gave_up) => break,
        };
        if written.is_err() {
            // The reader sees the connection end too, and fails what is pending.
            let _ = wr.shutdown().await;
            queue.close();
        }
    }
    let _ = wr.shutdown().await;
}

/// Hands each reply to its caller, pushes to subscribers and guards; when the connection ends
/// (or a call gives it up), fails every pending call and tells every guard.
async fn read_loop(
    mut rd: OwnedReadHalf,
    mut buf: Vec<u8>,
    shared: Arc<Shared>,
    lost: broadcast::Sender<Lost>,
    calls: mpsc::WeakUnboundedSender<Call>,
) {
    let mut gave_up = shared.abandoned.subscribe();
    let failure = 'conn: loop {
        loop {
            let n = match frame::check(&buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => break 'conn protocol(e),
            };
            let (id, reply) = match frame::parse_reply(&buf[..n]) {
                Ok(parsed) => parsed,
                Err(e) => break 'conn protocol(e),
            };
            if let WireReply::Lost { token, resource } = reply {
                let guard = shared.guards.lock().expect("guards map").as_mut().and_then(|g| g.remove(&token));
                if let Some(guard) = guard {
                    guard.lose(LostReason::Expired);
                }
                let _ = lost.send(Lost { resource: resource.to_owned(), token });
            } else if let WireReply::ProtocolError { reason } = reply {
                break 'conn Error::Protocol(reason.to_owned());
            } else if let Some((caller, on_orphan)) =
                shared.pending.lock().expect("pending map").as_mut().and_then(|p| p.remove(&id))
            {
                let granted = if let WireReply::Granted { token } = reply { Some(token) } else { None };
                if caller.send(answer(reply)).is_err() {
                    release_orphan(&calls, on_orphan, granted);
                }
            }
            buf.drain(..n);
        }
        let read = tokio::select! {
            read = rd.read_buf(&mut buf) => read,
            after = abandoned(&mut gave_up) => break Error::CallTimeout(after),
        };
        match read {
            Ok(0) => break Error::Closed,
            Ok(_) => {}
            Err(e) => break Error::Io(e),
        }
    };
    let waiting = shared.pending.lock().expect("pending map").take().unwrap_or_default();
    for (_, (caller, _)) in waiting {
        let _ = caller.send(Err(match &failure {
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
            Error::Protocol(why) => Error::Protocol(why.clone()),
            Error::CallTimeout(after) => Error::CallTimeout(*after),
            _ => Error::Closed,
        }));
    }
    let guards = shared.guards.lock().expect("guards map").take().unwrap_or_default();
    for guard in guards.into_values() {
        guard.lose(LostReason::Disconnected(failure.to_string()));
    }
}

/// A grant arrived for a caller that stopped waiting: give the lock back.
fn release_orphan(
    calls: &mpsc::WeakUnboundedSender<Call>,
    on_orphan: Option<(String, String)>,
    granted: Option<u64>,
) {
    let (Some((resource, owner)), Some(token), Some(calls)) = (on_orphan, granted, calls.upgrade()) else {
        return;
    };
    send_detached(&calls, &resource, &owner, token);
}

/// Queues a token-checked release whose answer nobody waits for.
fn send_detached(calls: &mpsc::UnboundedSender<Call>, resource: &str, owner: &str, token: u64) {
    let mut frame = Vec::new();
    let req = WireRequest::Release { resource, owner, token: Some(token) };
    frame::encode_request(&mut frame, 0, &req);
    let (reply, _) = oneshot::channel();
    let _ = calls.send(Call { frame, on_orphan: None, reply });
}

fn answer(reply: WireReply<'_>) -> Result<Answer, Error> {
    match reply {
        WireReply::Granted { token } => Ok(Answer::Granted(token)),
        WireReply::Released { .. } | WireReply::Extended { .. } => Ok(Answer::Done),
        WireReply::Pong | WireReply::HelloOk { .. } | WireReply::SessionOk { .. } => Ok(Answer::Pong),
        WireReply::Lock { token, expires_in, waiters, owner } => Ok(Answer::Lock(Some(LockInfo {
            owner: owner.to_owned(),
            token,
            expires_in: expires_in.map(Duration::from_millis),
            waiters,
        }))),
        WireReply::NotFound => Err(Error::NotFound),
        WireReply::Busy => Err(Error::Busy),
        WireReply::TimedOut => Err(Error::TimedOut),
        WireReply::QueueFull => Err(Error::QueueFull),
        WireReply::Unavailable => Err(Error::Unavailable),
        WireReply::NotHolder => Err(Error::NotHolder),
        WireReply::TokenMismatch => Err(Error::TokenMismatch),
        WireReply::Invalid { reason } => Err(Error::Invalid(reason.to_owned())),
        WireReply::Unauthorized => Err(Error::Unauthorized),
        WireReply::ProtocolError { reason } => Err(Error::Protocol(reason.to_owned())),
        WireReply::Lost { .. } => Err(Error::Protocol("a push where a reply was due".into())),
    }
}
