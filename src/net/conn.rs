//! One client connection: owns its socket's read and write loops, its read buffer, its
//! queue of answer bytes and its protocol [`Session`]. Buffers go to the kernel and come back
//! (`tokio-uring` takes them by value); nothing parsed is held across an `.await`.
//!
//! Two tasks share the socket: the reader parses whatever arrived and hands it to the session,
//! the writer sends whatever answers are ready, so a slow answer (a wait, another core) never
//! stops reading and one write carries every answer that is ready. The reader stops reading
//! while the client has too many requests in flight or too many answer bytes unread, gives a
//! started request [`Limits::header_timeout`](crate::config::Limits) to finish and an idle
//! connection [`Limits::idle_timeout`](crate::config::Limits) before closing it, and stops at a
//! graceful shutdown. A panic in a connection's code (a bug) ends that connection only.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::api::Reply;
use crate::log::Level;
use crate::proto::Session;
use crate::runtime::core::Core;

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
pub struct Conn {
    pub id: u32,
    state: RefCell<ConnState>,
    /// Wakes the writer: answers are ready, or the connection is ending.
    writer: Notify,
    /// Wakes the reader: answers went out, so it may read again.
    reader: Notify,
}

struct ConnState {
    out: Vec<u8>,
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
    pub fn new(id: u32, protected: bool) -> Conn {
        Conn {
            id,
            state: RefCell::new(ConnState {
                out: Vec::new(),
                session: Session::new(protected),
                close: false,
                eof: false,
                broken: false,
            }),
            writer: Notify::new(),
            reader: Notify::new(),
        }
    }

    /// A reply for the request in `slot` has come.
    pub fn on_reply(&self, core: &Core, slot: usize, reply: Reply) {
        let mut st = self.state.borrow_mut();
        let ConnState { out, session, close, .. } = &mut *st;
        session.on_reply(core, slot, reply, out, close);
        self.writer.notify_one();
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(core: Rc<Core>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let protected = core.secret.is_default() && !peer.ip().to_canonical().is_loopback();
    let stream = Rc::new(stream);
    let conn = core.add_conn(protected);
    let served = CatchUnwind::new(run(core.clone(), conn.clone(), stream.clone())).await;
    if let Err(panic) = served {
        crate::log!(
            Level::Error,
            "a connection's task panicked ({}); closing that connection",
            message(&*panic)
        );
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    // Whatever happened, withdraw its waits and release its session locks.
    core.tick();
    if let Ok(mut st) = conn.state.try_borrow_mut() {
        st.session.teardown(&core, conn.id);
    }
    core.remove_conn(conn.id);
    core.flush();
}

async fn run(core: Rc<Core>, conn: Rc<Conn>, stream: Rc<TcpStream>) {
    let writer = tokio_uring::spawn(write_loop(conn.clone(), stream.clone()));
    let stopped = read_loop(&core, &conn, &stream).await;
    if stopped != Stopped::ByUs {
        core.tick();
        let mut st = conn.state.borrow_mut();
        st.eof = true;
        let ConnState { out, session, close, .. } = &mut *st;
        match stopped {
            Stopped::Shutdown => session.on_shutdown(&core, conn.id, out, close),
            _ => session.on_eof(&core, conn.id, out, close),
        }
    }
    core.flush();
    conn.writer.notify_one();
    let _ = writer.await;
}

/// Why the reader stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stopped {
    /// The client closed its side (or the socket failed).
    PeerClosed,
    /// We stopped: the session asked to close, a write failed, or a timeout hit.
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

async fn read_loop(core: &Core, conn: &Conn, stream: &TcpStream) -> Stopped {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF_BYTES);
    // When the incomplete request at the front of `buf` began to arrive.
    let mut started: Option<Instant> = None;
    loop {
        let idle = loop {
            let ready = {
                let st = conn.state.borrow();
                if st.close || st.broken {
                    return Stopped::ByUs;
                }
                let room = st.out.len() < core.limits.max_unsent_bytes
                    && st.session.in_flight() < core.limits.max_in_flight;
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
        let deadline = match started {
            Some(t) => Some(t + core.limits.header_timeout),
            None if idle => Some(Instant::now() + core.limits.idle_timeout),
            // We owe the client answers, or it holds session locks: it may well be silent.
            None => None,
        };
        if buf.len() == buf.capacity() {
            buf.reserve(READ_BUF_BYTES);
        }
        let at = buf.len();
        let stop = core.stop.notified();
        if core.stopping.get() {
            return Stopped::Shutdown;
        }
        let read = async {
            let (res, slice) = stream.read(buf.slice(at..)).await;
            Wake::Read(res, slice.into_inner())
        };
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // Dropping a read in flight leaves its buffer to the runtime until the kernel lets
        // go of it; that only happens as the connection ends.
        let wake = tokio::select! {
            wake = read => wake,
            () = timeout => Wake::Timeout,
            () = stop => Wake::Shutdown,
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
                    session.on_timeout(core, out, close);
                    conn.writer.notify_one();
                }
                conn.state.borrow_mut().close = true;
                return Stopped::ByUs;
            }
        };
        core.tick();
        let used = {
            let mut st = conn.state.borrow_mut();
            let ConnState { out, session, close, .. } = &mut *st;
            session.on_bytes(core, conn.id, &buf, out, close)
        };
        buf.drain(..used);
        started = match (buf.is_empty(), started) {
            (true, _) => None,
            (false, Some(t)) if used == 0 => Some(t),
            (false, _) => Some(Instant::now()),
        };
        if buf.capacity() > 4 * READ_BUF_BYTES && buf.len() < READ_BUF_BYTES {
            // A large request is done; do not keep its buffer for the life of the connection.
            buf.shrink_to(READ_BUF_BYTES);
        }
        core.flush();
        conn.writer.notify_one();
    }
}

async fn write_loop(conn: Rc<Conn>, stream: Rc<TcpStream>) {
    let mut sending: Vec<u8> = Vec::new();
    loop {
        // `None`: nothing to send yet; `Some(done)` with nothing to send: the connection ends.
        let idle = {
            let mut st = conn.state.borrow_mut();
            if st.out.is_empty() {
                Some(st.broken || ((st.close || st.eof) && st.session.in_flight() == 0))
            } else {
                std::mem::swap(&mut st.out, &mut sending);
                None
            }
        };
        match idle {
            Some(true) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                conn.reader.notify_one();
                return;
            }
            Some(false) => {
                conn.writer.notified().await;
                continue;
            }
            None => {}
        }
        let (res, buf) = stream.write_all(sending).await;
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
    let wire = matches!(&first, Ok((Ok(1), b)) if b[0] == crate::proto::wire::frame::PREFACE[0]);
    let _ = stream.write_all(crate::proto::busy_answer(wire)).await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A future that turns a panic inside it into an `Err`, so that one connection's bug does
/// not unwind through the core's event loop.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    fn new(f: F) -> Self {
        CatchUnwind(Box::pin(f))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A panic's message, if it has one.
fn message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_connection_is_caught_and_the_loop_goes_on() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let caught = rt.block_on(CatchUnwind::new(async {
            tokio::task::yield_now().await;
            panic!("a bug");
        }));
        assert_eq!(caught.map_err(|p| message(&*p).to_owned()), Err("a bug".to_owned()));
        assert_eq!(rt.block_on(CatchUnwind::new(async { 7 })).ok(), Some(7));
    }
}
