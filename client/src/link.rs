//! The connection under a [`Client`](crate::Client): opening one (TCP, its socket options,
//! the preface and the secret), driving it, and with protocol version 2 opening the next one
//! when it fails, resuming the session. Every task runs on the caller's tokio runtime: one
//! driver per client, which writes (every queued request in one write), and a reader per
//! connection, which hands each reply to its caller by id.
//!
//! A connection fails on an I/O error, the server's end of it, a protocol error, or a call
//! that runs out of time ([`Config::call_timeout`]) with its request on it: a server that
//! stopped answering (stopped, cut off, overloaded) cannot be trusted with what is on it. The
//! calls in flight on it then fail, their outcome unknown ([`Error::Interrupted`]). With
//! version 1 the client ends with it. With version 2 the driver reconnects, at once and then
//! with a growing pause ([`RECONNECT_FIRST_PAUSE`] doubling to [`RECONNECT_MAX_PAUSE`]), and
//! resumes the session with `HELLO_SESSION`; calls made meanwhile wait for the new connection
//! (or fail with [`Error::NotConnected`] when their time is up). If the server no longer has
//! the session, its locks are gone: their guards are lost at once
//! ([`LostReason::SessionExpired`](crate::LostReason::SessionExpired)), and the client goes on
//! in the new session.
//!
//! With version 2 an idle connection is pinged every third of the session timeout, so that
//! the session's guarantee (see [`crate::session`]) stays fresh and a server gone silent is
//! noticed (by the ping's own timeout) even when nothing else is asked of it. The socket also
//! has TCP keepalive, and on Linux `TCP_USER_TIMEOUT`, so that a peer that vanished is noticed
//! by the kernel too. (Neither helps against a server process that is stopped while its
//! machine runs: its kernel still acknowledges everything. Only the call timeout and a
//! guard's own deadline catch that.)

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use crate::config::{Config, Protocol};
use crate::error::Error;
use crate::frame::{self, FrameError, WireReply, WireRequest};
use crate::lease::{LockInfo, Lost};
use crate::session::Session;
use crate::standing::{LostReason, Watch};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Requests taken from the queue at a time, and so at most in one write (more wait for the
/// next write, a few microseconds later).
const BATCH: usize = 64;
/// Lost-lock notices kept for a subscriber that is not reading (older ones are dropped).
const LOST_BACKLOG: usize = 64;
/// Idle time before the kernel probes the server. Renewals and heartbeats keep a version 2
/// connection busy; this is for one that only waits (version 1, a long server-side wait), so
/// that a server gone without a word is found within about half a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Time between unanswered probes (Linux; other systems keep their default).
#[cfg(target_os = "linux")]
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the kernel drops the connection (Linux).
#[cfg(target_os = "linux")]
const KEEPALIVE_PROBES: u32 = 3;
/// Pause before the second attempt to reconnect (the first is made at once: the failure may
/// have been one connection's). A restarting server takes a few hundred milliseconds to
/// listen again; starting at 50 ms and doubling finds it within about one pause of it.
pub const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between attempts to reconnect: a refused attempt costs the server next to
/// nothing, and a second between attempts leaves about ten of them within the default
/// session timeout (10 s), so that a server back within it finds the client back too. Each
/// pause is drawn between half of it and all of it, so that the clients of a restarted server
/// do not all come back in the same millisecond.
pub const RECONNECT_MAX_PAUSE: Duration = Duration::from_secs(1);
/// An idle version 2 connection is pinged every this share (a divisor) of the session
/// timeout, as ZooKeeper's clients do: two pings can go unanswered (slow, not lost: TCP loses
/// nothing) before the session's guarantee, four fifths of the timeout, runs out.
const HEARTBEATS_PER_TIMEOUT: u32 = 3;
/// The shortest heartbeat period, whatever the session timeout, so that an absurdly short
/// one does not turn the heartbeat into a busy loop.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// A reply as the caller receives it (owned: it crosses from the reader task).
pub(crate) enum Answer {
    /// The token, and for a version 2 session lock its session's guarantee.
    Granted(u64, Option<Arc<Watch>>),
    Done,
    Pong,
    Lock(Option<LockInfo>),
}

/// A request on its way to the driver.
pub(crate) struct Call {
    /// Its id on the wire, given by the caller (so that it can find its request on the
    /// connection when it runs out of time).
    id: u32,
    frame: Vec<u8>,
    /// `None`: nobody waits for the answer (a guard's release on drop, a heartbeat); it is
    /// sent whatever happens.
    reply: Option<oneshot::Sender<Result<Answer, Error>>>,
    /// For an acquire: its resource, and whether it asks for a session lock (to keep track of
    /// session locks, and to release a grant that nobody waits for).
    acquire: Option<(String, bool)>,
    /// When it was queued.
    queued: Instant,
}

/// A request on the connection, waiting for its reply.
struct Pending {
    reply: Option<oneshot::Sender<Result<Answer, Error>>>,
    acquire: Option<(String, bool)>,
    /// When it was sent (before the write: the server cannot have received it earlier).
    sent: Instant,
}

/// What a client's handles, its driver and its reader share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// The next request id (0 is the server's, for pushes).
    next_id: AtomicU32,
    pub(crate) owner: Arc<str>,
    pub(crate) call_timeout: Duration,
    protocol: Protocol,
    lost: broadcast::Sender<Lost>,
    /// Set once the driver has written everything it was given, its last words included: a
    /// blocking client waits for it before it stops the driver's runtime.
    done: watch::Sender<bool>,
    /// Told when the last request of a closing connection has been answered.
    drained: Notify,
}

struct State {
    /// The connection requests go to now (`None`: there is none, for now or for good).
    link: Option<Link>,
    /// The number of the newest connection.
    generation: u64,
    /// Why the client has ended (version 1: its connection ended): calls fail at once.
    ended: Option<String>,
    /// Why the last connection, or the last attempt at one, failed.
    last_failure: String,
    session: Session,
    /// The guards of held locks, by token, to tell of their loss.
    guards: HashMap<u64, Arc<Watch>>,
}

/// One connection's requests in flight.
struct Link {
    generation: u64,
    pending: HashMap<u32, Pending>,
    /// Set to give the connection up: its reader and writer stop.
    abandon: watch::Sender<bool>,
    /// The client is closing: tell [`Shared::drained`] when nothing is pending.
    closing: bool,
}

/// How the server took a connection's first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hello {
    /// Version 1: authorized.
    Authorized,
    /// Version 2: in session `id`, of `timeout`; `resumed`: the one asked for.
    Session { id: u64, timeout: Duration, resumed: bool },
}

/// A connection that the server has taken.
struct Opened {
    rd: ReadHalf,
    wr: WriteHalf,
    /// What was read past the answer to the first frame.
    buf: Vec<u8>,
    /// When the first frame was sent.
    sent: Instant,
    hello: Hello,
    /// Which of [`Config::members`] it is to.
    member: usize,
}

/// How a connection ended.
enum Served {
    /// It failed (and the client, with version 1).
    Failed,
    /// Every handle of the client is gone, and the connection was closed after its last words.
    Closed,
}

/// Connects, presents the secret (and opens a session) within [`Config::call_timeout`], and
/// starts the driver on the current tokio runtime: the client's shared state and the queue
/// to its driver. Of a cluster's members, the first to let the client in, each tried in turn
/// within the call timeout (the last one's failure if none does).
pub(crate) async fn open(config: &Config) -> Result<(Arc<Shared>, mpsc::UnboundedSender<Call>), Error> {
    let limit = config.call_timeout;
    let mut failure = None;
    for member in 0..config.members().len() {
        match tokio::time::timeout(limit, handshake(config, member, 0)).await {
            Ok(Ok(opened)) => return Ok(start(config, opened)),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(Error::CallTimeout(limit)),
        }
    }
    Err(failure.unwrap_or(Error::Closed))
}

/// Starts the driver on `opened`, the client's first connection.
fn start(config: &Config, opened: Opened) -> (Arc<Shared>, mpsc::UnboundedSender<Call>) {
    let limit = config.call_timeout;
    let session = match opened.hello {
        Hello::Authorized => Session::connection_bound(opened.sent),
        Hello::Session { id, timeout, .. } => Session::resumable(id, timeout, opened.sent),
    };
    let (lost, _) = broadcast::channel(LOST_BACKLOG);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            link: None,
            generation: 0,
            ended: None,
            last_failure: String::new(),
            session,
            guards: HashMap::new(),
        }),
        next_id: AtomicU32::new(1),
        owner: config.owner.as_str().into(),
        call_timeout: limit,
        protocol: config.protocol,
        lost,
        done: watch::Sender::new(false),
        drained: Notify::new(),
    });
    let (calls, queue) = mpsc::unbounded_channel();
    tokio::spawn(drive(shared.clone(), config.clone(), queue, calls.downgrade(), opened));
    (shared, calls)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("client state")
    }

    /// A request id no request in flight has.
    pub(crate) fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Whether the client has ended (version 1: its connection did): a call fails at once.
    pub(crate) fn ended(&self) -> bool {
        self.state().ended.is_some()
    }

    /// Session locks lost from now on.
    pub(crate) fn lost(&self) -> broadcast::Receiver<Lost> {
        self.lost.subscribe()
    }

    /// Resolves once the driver has written its last words (or at once if it has).
    pub(crate) fn done(&self) -> watch::Receiver<bool> {
        self.done.subscribe()
    }

    /// Call `id` waited `limit` without an answer: if its request is on the connection, the
    /// connection is given up. The error to fail the call with.
    pub(crate) fn timed_out(&self, id: u32, limit: Duration) -> Error {
        let generation = {
            let st = self.state();
            match &st.link {
                Some(link) if link.pending.contains_key(&id) => link.generation,
                // Queued behind a write the server does not take; the calls in that write give
                // the connection up.
                Some(_) => return Error::CallTimeout(limit),
                None if st.ended.is_some() => return Error::Closed,
                None => return Error::NotConnected { waited: limit, why: st.last_failure.clone() },
            }
        };
        self.fail(generation, &Error::CallTimeout(limit));
        Error::CallTimeout(limit)
    }

    /// Starts telling `watch` of its lock's loss: a `LOST` push for `token`, or the client's
    /// end (at once, if it has ended already).
    pub(crate) fn watch(&self, token: u64, watch: Arc<Watch>) {
        let mut st = self.state();
        match &st.ended {
            Some(why) => watch.lose(LostReason::Disconnected(why.clone())),
            None => drop(st.guards.insert(token, watch)),
        }
    }

    /// Stops telling anyone of `token`'s loss.
    pub(crate) fn unwatch(&self, token: u64) {
        self.state().guards.remove(&token);
    }

    /// Gives connection `generation` up, if it is still the current one, because of `why`:
    /// its calls in flight fail, their outcome unknown; with version 1 the client ends, and
    /// every guard is lost.
    fn fail(&self, generation: u64, why: &Error) {
        let mut st = self.state();
        let Some(link) = st.link.take_if(|l| l.generation == generation) else { return };
        link.abandon.send_replace(true);
        let why = why.to_string();
        if self.protocol == Protocol::Version1 {
            // Before the calls fail, so that a caller told of the failure finds its guard lost.
            st.ended = Some(why.clone());
            for guard in std::mem::take(&mut st.guards).into_values() {
                guard.lose(LostReason::Disconnected(why.clone()));
            }
        }
        for p in link.pending.into_values() {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(Error::Interrupted(why.clone())));
            }
        }
        st.last_failure = why;
    }

    /// Makes `opened` the connection requests go to: its number. A version 2 session that the
    /// server did not resume (`first`: none was asked for) is over: its locks are lost.
    fn install(&self, opened: &Opened, first: bool) -> u64 {
        let mut st = self.state();
        let now = Instant::now();
        match opened.hello {
            Hello::Authorized => {}
            Hello::Session { id, resumed: true, .. } if id == st.session.id() => {
                st.session.heard(opened.sent, now);
            }
            Hello::Session { .. } if first => {}
            Hello::Session { id, timeout, .. } => {
                let old = std::mem::replace(&mut st.session, Session::resumable(id, timeout, opened.sent));
                for (token, resource) in old.end() {
                    st.guards.remove(&token);
                    let _ = self.lost.send(Lost { resource, token });
                }
            }
        }
        st.generation += 1;
        let generation = st.generation;
        let abandon = watch::Sender::new(false);
        st.link = Some(Link { generation, pending: HashMap::new(), abandon, closing: false });
        generation
    }

    /// The signal that connection `generation` is given up (already set if it is).
    fn abandoned(&self, generation: u64) -> watch::Receiver<bool> {
        match self.state().link.as_ref().filter(|l| l.generation == generation) {
            Some(link) => link.abandon.subscribe(),
            None => watch::Sender::new(true).subscribe(),
        }
    }

    /// Puts `calls` on connection `generation` (stamped as sent `now`), appending their frames
    /// to `out`; `false` if it is no longer the current one (they stay in `calls`).
    fn put_on(&self, generation: u64, calls: &mut Vec<Call>, now: Instant, out: &mut Vec<u8>) -> bool {
        let mut st = self.state();
        let st = &mut *st;
        let Some(link) = st.link.as_mut().filter(|l| l.generation == generation) else { return false };
        for call in calls.drain(..) {
            if call.reply.as_ref().is_some_and(|r| r.is_closed()) {
                // Its caller gave up before it was sent: it is not carried out.
                continue;
            }
            let waited = now.saturating_duration_since(call.queued);
            if call.reply.is_some() && waited > self.call_timeout / 2 {
                // It waited for this connection for more than half its time: too little is
                // left for an answer, and its caller would give the connection up, so it is
                // not sent (and so not carried out).
                let why = match st.last_failure.as_str() {
                    "" => "the connection did not take it".to_owned(),
                    failure => failure.to_owned(),
                };
                if let Some(reply) = call.reply {
                    let _ = reply.send(Err(Error::NotConnected { waited, why }));
                }
                continue;
            }
            out.extend_from_slice(&call.frame);
            link.pending.insert(call.id, Pending { reply: call.reply, acquire: call.acquire, sent: now });
        }
        true
    }

    /// Hands a reply (`now`: when it was read) to its caller, or a push to the guards and
    /// subscribers; `false` if connection `generation` has been given up.
    fn deliver(
        &self,
        generation: u64,
        id: u32,
        reply: WireReply<'_>,
        now: Instant,
        calls: &mpsc::WeakUnboundedSender<Call>,
    ) -> bool {
        let mut st = self.state();
        let st = &mut *st;
        let Some(link) = st.link.as_mut().filter(|l| l.generation == generation) else { return false };
        if let WireReply::Lost { token, resource } = reply {
            if let Some(guard) = st.guards.remove(&token) {
                guard.lose(LostReason::Expired);
            }
            // Version 2 pushes a lock granted on an earlier connection without its name.
            let named = st.session.lost(token);
            let resource = if resource.is_empty() { named.unwrap_or_default() } else { resource.to_owned() };
            let _ = self.lost.send(Lost { resource, token });
            return true;
        }
        let Some(p) = link.pending.remove(&id) else { return true };
        if link.closing && link.pending.is_empty() {
            self.drained.notify_one();
        }
        st.session.heard(p.sent, now);
        let mut standing = None;
        match (&reply, &p.acquire) {
            (WireReply::Granted { token }, Some((resource, true))) => {
                standing = st.session.granted(*token, resource, p.sent, now);
            }
            (WireReply::Released { token }, _) => st.session.released(*token),
            _ => {}
        }
        let granted = if let WireReply::Granted { token } = reply { Some(token) } else { None };
        let unwanted = match p.reply {
            Some(caller) => caller.send(answer(reply, standing)).is_err(),
            None => true,
        };
        if let (true, Some(token), Some((resource, _))) = (unwanted, granted, &p.acquire) {
            // A grant for a caller that stopped waiting: give the lock back.
            if let Some(calls) = calls.upgrade() {
                let _ = calls.send(Call::release(self, resource, token));
            }
        }
        true
    }
}

impl Call {
    /// A request whose answer `reply` waits for.
    pub(crate) fn request(
        shared: &Shared,
        req: &WireRequest<'_>,
        reply: oneshot::Sender<Result<Answer, Error>>,
    ) -> Call {
        let id = shared.next_id();
        let mut frame = Vec::new();
        frame::encode_request(&mut frame, id, req);
        let acquire = match req {
            WireRequest::Acquire { resource, session, .. } => Some(((*resource).to_owned(), *session)),
            _ => None,
        };
        Call { id, frame, reply: Some(reply), acquire, queued: Instant::now() }
    }

    /// Its id on the wire.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// A token-checked release whose answer nobody waits for.
    pub(crate) fn release(shared: &Shared, resource: &str, token: u64) -> Call {
        let req = WireRequest::Release { resource, owner: &shared.owner, token: Some(token) };
        Call::detached(shared, &req)
    }

    fn detached(shared: &Shared, req: &WireRequest<'_>) -> Call {
        let id = shared.next_id();
        let mut frame = Vec::new();
        frame::encode_request(&mut frame, id, req);
        Call { id, frame, reply: None, acquire: None, queued: Instant::now() }
    }
}

/// Opens a socket to `member` (of [`Config::members`]), sets its options, and sends the
/// preface and the first frame: `HELLO`, or with version 2 `HELLO_SESSION` for `session` (0:
/// a new one); then reads the answer.
async fn handshake(config: &Config, member: usize, session: u64) -> Result<Opened, Error> {
    let stream = TcpStream::connect(config.members()[member]).await?;
    stream.set_nodelay(true)?;
    // Best effort: the call timeout and the guards' deadlines do not depend on it.
    let _ = set_liveness(&stream, config.call_timeout);
    let (mut rd, mut wr) = transport(stream, config, config.members()[member]).await?;
    let secret = config.secret.as_bytes();
    let mut hello = Vec::new();
    match config.protocol {
        Protocol::Version1 => {
            hello.extend_from_slice(&frame::PREFACE);
            frame::encode_request(&mut hello, 0, &WireRequest::Hello { secret });
        }
        Protocol::Version2 => {
            hello.extend_from_slice(&frame::PREFACE_SESSIONS);
            let timeout_ms = millis(config.session_timeout);
            frame::encode_request(&mut hello, 0, &WireRequest::HelloSession { secret, session, timeout_ms });
        }
    }
    let sent = Instant::now();
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
    let hello = match frame::parse_reply(&buf[..first]).map_err(protocol)?.1 {
        WireReply::HelloOk { .. } if config.protocol == Protocol::Version1 => Hello::Authorized,
        WireReply::SessionOk { session, timeout_ms, resumed } if config.protocol == Protocol::Version2 => {
            Hello::Session { id: session, timeout: Duration::from_millis(timeout_ms), resumed }
        }
        WireReply::Unauthorized => return Err(Error::Unauthorized),
        WireReply::Unavailable => return Err(Error::Unavailable),
        WireReply::ProtocolError { reason } => return Err(Error::Protocol(reason.to_owned())),
        other => return Err(Error::Protocol(format!("unexpected answer to HELLO: {other:?}"))),
    };
    buf.drain(..first);
    Ok(Opened { rd, wr, buf, sent, hello, member })
}

/// A connection's reading side: the socket's, or its TLS session's.
type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
/// A connection's writing side.
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// The two sides of `stream`, connected to `addr`: over TLS if the config says so (the
/// server's certificate checked against `addr`'s host), else the socket's own.
async fn transport(stream: TcpStream, config: &Config, addr: &str) -> Result<(ReadHalf, WriteHalf), Error> {
    let Some(tls) = &config.tls else {
        let (rd, wr) = stream.into_split();
        return Ok((Box::new(rd), Box::new(wr)));
    };
    let refused = |why: String| Error::Io(io::Error::new(io::ErrorKind::InvalidInput, why));
    let rustls = tls.rustls().map_err(refused)?;
    let name = crate::tls::server_name(addr).map_err(refused)?;
    let stream = tokio_rustls::TlsConnector::from(rustls).connect(name, stream).await?;
    let (rd, wr) = tokio::io::split(stream);
    Ok((Box::new(rd), Box::new(wr)))
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

/// Milliseconds of a duration, rounded up (a lease, wait or timeout is never shorter than
/// asked).
pub(crate) fn millis(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn protocol(e: FrameError) -> Error {
    match e {
        FrameError::Fatal(why) | FrameError::Invalid { reason: why, .. } => Error::Protocol(why.to_owned()),
    }
}

/// The client's driver: serves each connection in turn until every handle of the client is
/// gone (or, with version 1, its one connection ends); then fails what is left.
async fn drive(
    shared: Arc<Shared>,
    config: Config,
    mut queue: mpsc::UnboundedReceiver<Call>,
    calls: mpsc::WeakUnboundedSender<Call>,
    mut opened: Opened,
) {
    // Calls taken from the queue and not yet on a connection: they wait here for the next one.
    let mut batch = Vec::with_capacity(BATCH);
    let mut first = true;
    loop {
        let generation = shared.install(&opened, first);
        let opened_member = opened.member;
        first = false;
        let served = serve(&shared, opened, generation, &mut queue, &mut batch, &calls).await;
        if matches!(served, Served::Closed) || config.protocol == Protocol::Version1 {
            break;
        }
        let member = opened_member;
        opened = match reconnect(&shared, &config, member, &mut queue, &mut batch).await {
            Some(opened) => opened,
            None => break,
        };
    }
    queue.close();
    while let Ok(call) = queue.try_recv() {
        batch.push(call);
    }
    for call in batch {
        if let Some(reply) = call.reply {
            let _ = reply.send(Err(Error::Closed));
        }
    }
    shared.done.send_replace(true);
}

/// Serves connection `generation` until it fails, or, once every handle of the client is
/// gone, closes it after its last words.
async fn serve(
    shared: &Arc<Shared>,
    opened: Opened,
    generation: u64,
    queue: &mut mpsc::UnboundedReceiver<Call>,
    batch: &mut Vec<Call>,
    calls: &mpsc::WeakUnboundedSender<Call>,
) -> Served {
    let Opened { rd, mut wr, buf, .. } = opened;
    let reader = tokio::spawn(read_loop(rd, buf, shared.clone(), generation, calls.clone()));
    let served = write_loop(&mut wr, shared, generation, queue, batch).await;
    if let Served::Closed = served {
        close(&mut wr, shared, generation).await;
    }
    // The reader stops on its own once the connection is given up; after a close it reads
    // the last answers until the server closes too, or the call timeout.
    let _ = tokio::time::timeout(shared.call_timeout, reader).await;
    shared.fail(generation, &Error::Closed);
    served
}

/// Writes queued requests, as many per write as are queued; pings an idle version 2
/// connection. Returns when the connection is given up, or when every handle is gone.
async fn write_loop(
    wr: &mut WriteHalf,
    shared: &Shared,
    generation: u64,
    queue: &mut mpsc::UnboundedReceiver<Call>,
    batch: &mut Vec<Call>,
) -> Served {
    /// What the writer woke up for, with nothing to write.
    enum Wake {
        GaveUp,
        Calls(usize),
        PingAnswered,
        PingOverdue,
        Beat,
    }
    let mut gave_up = shared.abandoned(generation);
    let heartbeat = match shared.protocol {
        Protocol::Version1 => None,
        Protocol::Version2 => {
            let timeout = shared.state().session.timeout();
            Some((timeout / HEARTBEATS_PER_TIMEOUT).max(MIN_HEARTBEAT))
        }
    };
    let mut last_write = Instant::now();
    // The heartbeat out, and when it is overdue: one at a time.
    let mut ping: Option<(oneshot::Receiver<Result<Answer, Error>>, Instant)> = None;
    let mut buf = Vec::new();
    loop {
        if batch.is_empty() {
            let beat_at = heartbeat.filter(|_| ping.is_none()).map(|every| last_write + every);
            let beat = async {
                match beat_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let ping_news = async {
                match &mut ping {
                    Some((answer, overdue)) => tokio::select! {
                        _ = answer => Wake::PingAnswered,
                        () = tokio::time::sleep_until((*overdue).into()) => Wake::PingOverdue,
                    },
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                biased;
                _ = gave_up.wait_for(|&g| g) => Wake::GaveUp,
                n = queue.recv_many(batch, BATCH) => Wake::Calls(n),
                wake = ping_news => wake,
                () = beat => Wake::Beat,
            };
            match wake {
                Wake::GaveUp => return Served::Failed,
                Wake::Calls(0) => return Served::Closed,
                Wake::Calls(_) => {}
                Wake::PingAnswered => {
                    ping = None;
                    continue;
                }
                Wake::PingOverdue => {
                    shared.fail(generation, &Error::CallTimeout(shared.call_timeout));
                    return Served::Failed;
                }
                Wake::Beat => {
                    let (reply, answer) = oneshot::channel();
                    batch.push(Call::request(shared, &WireRequest::Ping, reply));
                    ping = Some((answer, Instant::now() + shared.call_timeout));
                }
            }
        }
        let now = Instant::now();
        buf.clear();
        if !shared.put_on(generation, batch, now, &mut buf) {
            return Served::Failed;
        }
        if buf.is_empty() {
            continue;
        }
        last_write = now;
        let written = tokio::select! {
            biased;
            _ = gave_up.wait_for(|&g| g) => return Served::Failed,
            written = wr.write_all(&buf) => written,
        };
        if let Err(e) = written {
            shared.fail(generation, &Error::Io(e));
            return Served::Failed;
        }
    }
}

/// Every handle of the client is gone: with version 2, releases the session's locks (the
/// server would keep them for the session's timeout), waits for the answers to what is on the
/// connection, at most the call timeout, and closes its side.
async fn close(wr: &mut WriteHalf, shared: &Shared, generation: u64) {
    let mut last = Vec::new();
    let mut buf = Vec::new();
    if shared.protocol == Protocol::Version2 {
        let held: Vec<(u64, String)> = {
            let st = shared.state();
            st.session.locks().map(|(token, resource)| (token, resource.to_owned())).collect()
        };
        last.extend(held.iter().map(|(token, resource)| Call::release(shared, resource, *token)));
    }
    if shared.put_on(generation, &mut last, Instant::now(), &mut buf) && !buf.is_empty() {
        let _ = tokio::time::timeout(shared.call_timeout, wr.write_all(&buf)).await;
    }
    let _ = wr.shutdown().await;
    shared.done.send_replace(true);
    let drained = async {
        loop {
            {
                let mut st = shared.state();
                match st.link.as_mut().filter(|l| l.generation == generation) {
                    Some(link) if !link.pending.is_empty() => link.closing = true,
                    _ => return,
                }
            }
            shared.drained.notified().await;
        }
    };
    let _ = tokio::time::timeout(shared.call_timeout, drained).await;
}

/// Reads replies and pushes and delivers them; when the connection ends (or is given up),
/// gives it up.
async fn read_loop(
    mut rd: ReadHalf,
    mut buf: Vec<u8>,
    shared: Arc<Shared>,
    generation: u64,
    calls: mpsc::WeakUnboundedSender<Call>,
) {
    let mut gave_up = shared.abandoned(generation);
    let failure = 'conn: loop {
        let now = Instant::now();
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            let n = match frame::check(rest) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => break 'conn protocol(e),
            };
            let (id, reply) = match frame::parse_reply(&rest[..n]) {
                Ok(parsed) => parsed,
                Err(e) => break 'conn protocol(e),
            };
            if let WireReply::ProtocolError { reason } = reply {
                break 'conn Error::Protocol(reason.to_owned());
            }
            if !shared.deliver(generation, id, reply, now, &calls) {
                return;
            }
            used += n;
        }
        buf.drain(..used);
        let read = tokio::select! {
            biased;
            _ = gave_up.wait_for(|&g| g) => return,
            read = rd.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => break Error::Closed,
            Ok(_) => {}
            Err(e) => break Error::Io(e),
        }
    };
    shared.fail(generation, &failure);
}

/// Opens a new connection and resumes the session: at once, then with a growing pause,
/// taking calls meanwhile (they wait for it). Of a cluster's members, each attempt goes to
/// the next one after the member `failed` and the last one tried (the session is replicated:
/// any member resumes it through the leader). `None` once every handle of the client is gone.
async fn reconnect(
    shared: &Shared,
    config: &Config,
    failed: usize,
    queue: &mut mpsc::UnboundedReceiver<Call>,
    batch: &mut Vec<Call>,
) -> Option<Opened> {
    let mut pause = RECONNECT_FIRST_PAUSE;
    let mut attempt_at = Instant::now();
    let members = config.members().len();
    let mut member = failed;
    loop {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(attempt_at.into()) => break,
                n = queue.recv_many(batch, BATCH) => {
                    if n == 0 {
                        return None;
                    }
                }
            }
            // Calls whose callers gave up are not carried out; do not keep them.
            batch.retain(|call| !call.reply.as_ref().is_some_and(|r| r.is_closed()));
        }
        let session = shared.state().session.id();
        let limit = config.call_timeout;
        member = (member + 1) % members;
        let failure = match tokio::time::timeout(limit, handshake(config, member, session)).await {
            Ok(Ok(opened)) => return Some(opened),
            Ok(Err(e)) => e,
            Err(_) => Error::CallTimeout(limit),
        };
        shared.state().last_failure = failure.to_string();
        attempt_at = Instant::now() + jitter(pause);
        pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
    }
}

/// A pause drawn between half of `pause` and all of it.
fn jitter(pause: Duration) -> Duration {
    // One draw of the process's random hash keys: enough to spread clients apart.
    let draw = RandomState::new().hash_one(Instant::now());
    pause / 2 + pause.mul_f64((draw % 1024) as f64 / 2048.0)
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Granted(token, _) => write!(f, "Granted({token})"),
            Answer::Done => f.write_str("Done"),
            Answer::Pong => f.write_str("Pong"),
            Answer::Lock(info) => write!(f, "Lock({info:?})"),
        }
    }
}

fn answer(reply: WireReply<'_>, standing: Option<Arc<Watch>>) -> Result<Answer, Error> {
    match reply {
        WireReply::Granted { token } => Ok(Answer::Granted(token, standing)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_between_attempts_are_drawn_from_the_upper_half() {
        for pause in [RECONNECT_FIRST_PAUSE, RECONNECT_MAX_PAUSE] {
            for _ in 0..100 {
                let drawn = jitter(pause);
                assert!(pause / 2 <= drawn && drawn <= pause, "{drawn:?} for {pause:?}");
            }
        }
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::from_millis(5)), 5);
        assert_eq!(millis(Duration::from_micros(5_001)), 6);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
