//! One client connection: owns its socket's read and write loops, its read buffer, its
//! queue of answer bytes and its protocol [`Session`]. Buffers go to the kernel and come back
//! (`tokio-uring` takes them by value); nothing parsed is held across an `.await`.
//!
//! Two tasks share the socket: the reader parses whatever arrived and hands it to the session,
//! the writer sends whatever answers are ready, so a slow answer (a wait, another core) never
//! stops reading and one write carries every answer that is ready. The reader stops reading,
//! and the session parsing what was read, while the client has too many requests in flight or
//! too many answer bytes unread (the session's `has_room`); it gives a started request
//! [`Limits::header_timeout`](crate::config::Limits) to finish and an idle connection
//! [`Limits::idle_timeout`](crate::config::Limits) before closing it, and stops at a graceful
//! shutdown.
//!
//! When the reader stops because the server ends the connection (the session asked to close,
//! a timeout, a failed write), the session settles what the connection owes at once (waits
//! withdrawn, session locks released), not when what it waits for comes; the last answers
//! then go out. When the connection is gone, whatever it still owes is settled: grants that
//! were written but never sent are released ([`UnsentGrants`]). A panic in either task (a bug)
//! ends the process ([`panic::spawn_vital`]): a core must not serve on half-alive.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_uring::net::TcpStream;

use crate::api::LockService;
use crate::proto::unsent::UnsentGrants;
use crate::proto::{Context, Session};
use crate::runtime::panic;
use crate::runtime::{ConnId, Core, Delivery, Mailbox};

use super::Settings;
use super::forward;
use super::gate::Gate;
use super::tls::{self, Transport};

/// Bytes a connection's read buffer starts with: a few pipelined requests. It grows (up to
/// the head and body limits) only for a connection that sends more at once, and shrinks back.
const READ_BUF_BYTES: usize = 4 * 1024;
/// Capacity an answer buffer keeps between writes; a larger one (a burst of answers) is given
/// back, so an idle connection holds little memory.
const WRITE_BUF_KEEP_BYTES: usize = 16 * 1024;
/// TCP keepalive: after this long without traffic the kernel probes the peer, so a client
/// that vanished (power loss, partition) is found and its session locks released.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection is dropped.
const KEEPALIVE_PROBES: u32 = 3;

/// A connection's shared state (see the module documentation).
struct Conn {
    id: ConnId,
    /// The client's address.
    peer: SocketAddr,
    /// Where the core leaves answers that come later, and pushes; its waking wakes the writer
    /// (mail came, answers are ready, or the connection is ending).
    mailbox: Rc<Mailbox>,
    state: RefCell<ConnState>,
    /// Its socket's plaintext or TLS. Here rather than in an allocation of its own: both tasks
    /// read it at every read and write, and a line more touched per connection counts when
    /// many pipeline at once (BENCHMARKS.md, "In memory, before and after").
    transport: Transport,
    /// The plain grants in its answers that the kernel has not taken yet.
    unsent: RefCell<UnsentGrants>,
    /// Wakes the reader: answers went out, so it may read again.
    reader: Notify,
    /// The test suite asked this connection's writer to panic (see [`crate::fuzzing`]).
    #[cfg(feature = "fuzzing")]
    panic_writer: std::cell::Cell<bool>,
}

struct ConnState {
    out: Vec<u8>,
    /// Which of `out` may go out yet (answers wait for the log).
    gate: Gate,
    session: Session,
    /// The session asked to close once `out` is sent (`Connection: close`, a framing error).
    close: bool,
    /// The peer closed its side, or the server is shutting down: nothing more will be read.
    eof: bool,
    /// A write failed; nothing more can be sent.
    broken: bool,
}

impl Conn {
    /// A connection from a peer; `protected`: the server still has the default secret and
    /// this peer is not on this machine, so it is to be refused.
    fn new(
        id: ConnId,
        peer: SocketAddr,
        mailbox: Rc<Mailbox>,
        transport: Transport,
        protected: bool,
    ) -> Conn {
        Conn {
            id,
            peer,
            mailbox,
            transport,
            state: RefCell::new(ConnState {
                out: Vec::new(),
                gate: Gate::default(),
                session: Session::new(protected),
                close: false,
                eof: false,
                broken: false,
            }),
            unsent: RefCell::default(),
            reader: Notify::new(),
            #[cfg(feature = "fuzzing")]
            panic_writer: std::cell::Cell::new(false),
        }
    }
}

impl ConnState {
    /// Hands the session every piece of mail that has come; returns whether there was any.
    fn take_mail(&mut self, core: &Core, mailbox: &Mailbox, cx: &Context<'_>) -> bool {
        let mut any = false;
        while let Some(delivery) = mailbox.pop() {
            any = true;
            let before = self.out.len();
            let ConnState { out, session, close, .. } = self;
            let after = match delivery {
                Delivery::Reply { slot, reply, after } => {
                    session.on_reply(cx, slot, reply, out, close);
                    after
                }
                Delivery::Push { news, after } => {
                    session.on_push(cx, news, out);
                    after
                }
                Delivery::Close => {
                    // Nothing more goes out: what was owed may never be true.
                    self.broken = true;
                    self.out.clear();
                    continue;
                }
            };
            self.hold_new(core, before, after);
        }
        any
    }

    /// The answers written from `before` on may go out only once log batch `batch` is
    /// durable: nothing is acknowledged that a crash could take back.
    fn hold_new(&mut self, core: &Core, before: usize, batch: u64) {
        if self.out.len() > before && batch > core.durable() {
            self.gate.hold(before, batch);
        }
    }
}

/// What a session reads of its core, settings and connection besides lock work.
fn context<'a>(core: &'a Core, settings: &'a Settings, conn: &'a Conn) -> Context<'a> {
    Context {
        limits: &settings.limits,
        secret: &settings.secret,
        date: core.date(),
        service_times: core.service_times(),
        auth_failures: core.auth_failures(),
        unsent: &conn.unsent,
        peer: &conn.peer,
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(core: Rc<Core>, settings: Rc<Settings>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let protected = settings.secret.is_default() && !peer.ip().to_canonical().is_loopback();
    // Counted from the accept, so that handshakes in progress count against the connection
    // limit too.
    let (id, mailbox) = core.open_conn();
    // With a certificate: TLS (or plaintext, if allowed) is settled first; a connection
    // refused or failing its handshake never reaches its session.
    let (transport, first) = match &settings.tls {
        None => (Transport::Plain, Vec::new()),
        Some(settings_tls) => {
            let deadline = Instant::now() + settings.limits.header_timeout;
            let opened = tokio::select! {
                opened = tls::open(&stream, settings_tls, deadline) => opened,
                () = core.stopped() => None,
            };
            match opened {
                Some(opened) => opened,
                None => {
                    core.close_conn(id);
                    return;
                }
            }
        }
    };
    let stream = Rc::new(stream);
    let conn = Rc::new(Conn::new(id, peer, mailbox, transport, protected));
    // A cluster member that does not lead passes the connection to the leader.
    let first = match core.clustered() {
        true => forward::open(&core, &settings, &stream, &conn.transport, first).await,
        false => Some(first),
    };
    if let Some(first) = first {
        run(core.clone(), settings.clone(), conn.clone(), stream, first).await;
    }
    // Whatever happened, settle what it still owes: its waits, the acquires on their way, its
    // session locks, and the grants it never sent (those still in the mailbox included: mail
    // is taken before anything is withdrawn).
    let mut st = conn.state.borrow_mut();
    let cx = context(&core, &settings, &conn);
    st.take_mail(&core, &conn.mailbox, &cx);
    let mut turn = core.turn(conn.id);
    st.session.teardown(&mut turn);
    for (resource, owner, token) in conn.unsent.borrow_mut().drain() {
        turn.release_for_gone(&resource, &owner, token);
    }
    drop(turn);
    core.close_conn(conn.id);
}

/// Serves the connection, `first` being what was read of it already.
async fn run(core: Rc<Core>, settings: Rc<Settings>, conn: Rc<Conn>, stream: Rc<TcpStream>, first: Vec<u8>) {
    let write = write_loop(core.clone(), settings.clone(), conn.clone(), stream.clone());
    let writer = panic::spawn_vital(core.id(), "a connection's writer", write);
    let stopped = read_loop(&core, &settings, &conn, &stream, first).await;
    {
        let mut st = conn.state.borrow_mut();
        let cx = context(&core, &settings, &conn);
        // Answers already in the mailbox first: a grant there must reach the session (which
        // then owns it, and releases it if it is a session lock) before its wait is withdrawn,
        // or nobody would ever release it.
        st.take_mail(&core, &conn.mailbox, &cx);
        let before = st.out.len();
        let ConnState { out, session, close, eof, .. } = &mut *st;
        let mut turn = core.turn(conn.id);
        match stopped {
            Stopped::Shutdown => {
                *eof = true;
                session.on_shutdown(&mut turn, &cx, out, close);
            }
            Stopped::PeerClosed => {
                *eof = true;
                session.on_eof(&mut turn, &cx, out, close);
            }
            Stopped::ByUs => session.on_end(&mut turn, &cx, out, close),
        }
        let batch = core.answers_wait_for();
        drop(turn);
        st.hold_new(&core, before, batch);
    }
    conn.mailbox.wake();
    let _ = writer.await;
}

/// Why the reader stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stopped {
    /// The client closed its side (or the socket failed).
    PeerClosed,
    /// We stopped: the session asked to close (the client's `Connection: close`, or the
    /// server ends it), a write failed, or a timeout hit.
    ByUs,
    /// The server is shutting down.
    Shutdown,
}

/// What a read waited for.
enum Wake {
    Read(std::io::Result<usize>, Vec<u8>),
    Timeout,
    Shutdown,
}

async fn read_loop(
    core: &Core,
    settings: &Settings,
    conn: &Conn,
    stream: &TcpStream,
    mut buf: Vec<u8>,
) -> Stopped {
    buf.reserve(READ_BUF_BYTES.saturating_sub(buf.len()));
    // When the incomplete request at the front of `buf` began to arrive.
    let mut started: Option<Instant> = (!buf.is_empty()).then(Instant::now);
    // The session has not parsed `buf` yet (bytes read before the loop), or stopped parsing
    // it for want of room, not of bytes: once there is room, what is buffered is parsed before
    // anything more is read (the client may send nothing more until it has its answers).
    let mut stalled = !buf.is_empty();
    // One timer and one shutdown watch for the connection's life, not one of each a read (a
    // timer set and cancelled at every request cost some 400 instructions a request): the
    // timer is moved earlier when a deadline comes before it, and when it fires before the
    // deadline (which only ever moved later meanwhile), it is set again.
    let mut timer = pin!(tokio::time::sleep(settings.limits.idle_timeout));
    let mut stop = pin!(core.stopped());
    loop {
        let idle = loop {
            let ready = {
                let st = conn.state.borrow();
                if st.close || st.broken {
                    return Stopped::ByUs;
                }
                let room = st.session.has_room(st.out.len(), &settings.limits);
                room.then(|| st.session.is_idle())
            };
            if let Some(idle) = ready {
                break idle;
            }
            conn.reader.notified().await;
            // While we did not read, the client could not finish its request: its time to do
            // so starts again.
            started = started.map(|_| Instant::now());
        };
        if std::mem::take(&mut stalled) {
            let used = feed(core, settings, conn, &buf);
            if used > 0 {
                (started, stalled) = consumed(conn, settings, &mut buf, used, started);
                conn.mailbox.wake();
                continue;
            }
        }
        let deadline = match started {
            Some(t) => Some(t + settings.limits.header_timeout),
            None if idle => Some(Instant::now() + settings.limits.idle_timeout),
            // We owe the client answers, or it holds session locks: it may well be silent.
            None => None,
        };
        if buf.len() == buf.capacity() {
            buf.reserve(READ_BUF_BYTES);
        }
        if let Some(d) = deadline.filter(|&d| d < timer.deadline()) {
            timer.as_mut().reset(d);
        }
        let mut read = pin!(async {
            let (res, buf) = conn.transport.read(stream, buf).await;
            Wake::Read(res, buf)
        });
        // Dropping a read in flight leaves its buffer to the runtime until the kernel lets
        // go of it; that only happens as the connection ends.
        let wake = loop {
            tokio::select! {
                wake = &mut read => break wake,
                () = &mut stop => break Wake::Shutdown,
                () = &mut timer => match deadline {
                    Some(d) if Instant::now() >= d => break Wake::Timeout,
                    // Early, or no deadline now: look again then.
                    _ => timer.as_mut().reset(deadline.unwrap_or_else(|| Instant::now() + settings.limits.idle_timeout)),
                },
            }
        };
        buf = match wake {
            Wake::Read(Ok(n), b) if n > 0 => b,
            Wake::Read(..) => {
                let st = conn.state.borrow();
                return if st.close || st.broken { Stopped::ByUs } else { Stopped::PeerClosed };
            }
            Wake::Shutdown => return Stopped::Shutdown,
            Wake::Timeout => {
                if started.is_some() {
                    let mut st = conn.state.borrow_mut();
                    let ConnState { out, session, close, .. } = &mut *st;
                    session.on_timeout(&context(core, settings, conn), out, close);
                    conn.mailbox.wake();
                }
                conn.state.borrow_mut().close = true;
                return Stopped::ByUs;
            }
        };
        #[cfg(feature = "fuzzing")]
        crate::fuzzing::panic_if_asked(&buf, || conn.panic_writer.set(true));
        let used = feed(core, settings, conn, &buf);
        (started, stalled) = consumed(conn, settings, &mut buf, used, started);
        conn.mailbox.wake();
    }
}

/// Hands the session what `buf` holds; returns the bytes it used.
fn feed(core: &Core, settings: &Settings, conn: &Conn, buf: &[u8]) -> usize {
    let mut st = conn.state.borrow_mut();
    let before = st.out.len();
    let ConnState { out, session, close, .. } = &mut *st;
    let cx = context(core, settings, conn);
    // The turn ends (delivering what it made to every connection's mailbox) before this
    // connection's state is let go; delivering never touches it.
    let mut turn = core.turn(conn.id);
    let used = session.on_bytes(&mut turn, &cx, buf, out, close);
    let batch = core.answers_wait_for();
    drop(turn);
    st.hold_new(core, before, batch);
    used
}

/// Drops the `used` bytes from the front of `buf`; returns when the incomplete request now at
/// its front began to arrive (it was `started`), and whether the session stopped parsing for
/// want of room.
fn consumed(
    conn: &Conn,
    settings: &Settings,
    buf: &mut Vec<u8>,
    used: usize,
    started: Option<Instant>,
) -> (Option<Instant>, bool) {
    buf.drain(..used);
    let started = match (buf.is_empty(), started) {
        (true, _) => None,
        (false, Some(t)) if used == 0 => Some(t),
        (false, _) => Some(Instant::now()),
    };
    if buf.capacity() > 4 * READ_BUF_BYTES && buf.len() < READ_BUF_BYTES {
        // A large request is done; do not keep its buffer for the life of the connection.
        buf.shrink_to(READ_BUF_BYTES);
    }
    let st = conn.state.borrow();
    (started, !buf.is_empty() && !st.session.has_room(st.out.len(), &settings.limits))
}

async fn write_loop(core: Rc<Core>, settings: Rc<Settings>, conn: Rc<Conn>, stream: Rc<TcpStream>) {
    let mut sending: Vec<u8> = Vec::new();
    loop {
        #[cfg(feature = "fuzzing")]
        if conn.panic_writer.get() {
            panic!("a connection's writer panics, as the test suite asked");
        }
        // `None`: nothing to send yet; `Some(done)` with nothing to send: the connection ends.
        let idle = {
            let mut st = conn.state.borrow_mut();
            if st.take_mail(&core, &conn.mailbox, &context(&core, &settings, &conn)) {
                // Answers came: the reader may have room to read again.
                conn.reader.notify_one();
            }
            let len = st.out.len();
            let ready = st.gate.sendable(len, core.durable());
            if st.out.is_empty() {
                Some(st.broken || ((st.close || st.eof) && st.session.in_flight() == 0))
            } else if ready == 0 {
                Some(false)
            } else {
                if ready == st.out.len() {
                    std::mem::swap(&mut st.out, &mut sending);
                } else {
                    sending.extend_from_slice(&st.out[..ready]);
                    st.out.drain(..ready);
                }
                st.gate.sent(ready);
                conn.unsent.borrow_mut().taken(ready);
                None
            }
        };
        match idle {
            Some(true) => {
                conn.transport.close(&stream).await;
                let _ = stream.shutdown(std::net::Shutdown::Both);
                conn.reader.notify_one();
                return;
            }
            Some(false) => {
                tokio::select! {
                    () = conn.mailbox.arrived() => {}
                    () = core.durable_advanced() => {}
                }
                continue;
            }
            None => {}
        }
        // The kernel's every part taken is told to `unsent`, so that a write that fails
        // halfway leaves exactly the grants it did not send.
        let (res, buf) =
            conn.transport.write_all(&stream, sending, |n| conn.unsent.borrow_mut().sent(n)).await;
        sending = buf;
        sending.clear();
        if sending.capacity() > WRITE_BUF_KEEP_BYTES {
            sending = Vec::new();
        }
        if res.is_err() {
            let mut st = conn.state.borrow_mut();
            st.broken = true;
            st.out = Vec::new();
            drop(st);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            conn.reader.notify_one();
            return;
        }
        conn.reader.notify_one();
    }
}

/// Refuses a connection over the limit: answers in the protocol its first byte shows (or
/// HTTP, if it sends nothing for a second) and closes.
pub async fn refuse(stream: TcpStream) {
    const FIRST_BYTE_WAIT: Duration = Duration::from_secs(1);
    let first = tokio::time::timeout(FIRST_BYTE_WAIT, stream.read(vec![0u8; 1])).await;
    let layer = match &first {
        Ok((Ok(1), b)) => crate::proto::opening::layer(b),
        _ => crate::proto::opening::Layer::Http,
    };
    // A TLS client could not read a plaintext answer: it is only closed.
    if layer == crate::proto::opening::Layer::Tls {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    let wire = layer == crate::proto::opening::Layer::Wire;
    let _ = stream.write_all(crate::proto::busy_answer(wire)).await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
