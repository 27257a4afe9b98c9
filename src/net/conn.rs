//! One client connection: owns its socket's read and write loops, its read buffer, its
//! queue of answer bytes and its protocol [`Session`]. Buffers go to the kernel and come back
//! (`tokio-uring` takes them by value); nothing parsed is held across an `.await`.
//!
//! Two tasks share the socket: the reader parses whatever arrived and hands it to the session,
//! the writer sends whatever answers are ready, so a slow answer (a wait, another core) never
//! stops reading and one write carries every answer that is ready. The reader stops reading
//! while the client has too many requests in flight or too many answer bytes unread
//! ([`crate::config::Limits`]).

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::api::Reply;
use crate::proto::Session;
use crate::runtime::core::Core;

/// Bytes a connection's read buffer starts with, and grows by when a request needs more.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes the write buffers start with.
const WRITE_CHUNK_BYTES: usize = 16 * 1024;

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
    /// The peer closed (or reset) its side.
    eof: bool,
    /// A write failed; nothing more can be sent.
    broken: bool,
}

impl Conn {
    pub fn new(id: u32) -> Conn {
        Conn {
            id,
            state: RefCell::new(ConnState {
                out: Vec::with_capacity(WRITE_CHUNK_BYTES),
                session: Session::default(),
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
pub async fn serve(core: Rc<Core>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let conn = core.add_conn();
    let writer = tokio_uring::spawn(write_loop(conn.clone(), stream.clone()));
    if read_loop(&core, &conn, &stream).await == Stopped::PeerClosed {
        let mut st = conn.state.borrow_mut();
        st.eof = true;
        let ConnState { out, session, close, .. } = &mut *st;
        session.on_eof(&core, conn.id, out, close);
    }
    core.flush();
    conn.writer.notify_one();
    let _ = writer.await;
    conn.state.borrow_mut().session.teardown(&core, conn.id);
    core.remove_conn(conn.id);
    core.flush();
}

/// Why the reader stopped.
#[derive(PartialEq, Eq)]
enum Stopped {
    /// The client closed its side (or the socket failed).
    PeerClosed,
    /// We stopped: the session asked to close, or a write failed.
    ByUs,
}

async fn read_loop(core: &Core, conn: &Conn, stream: &TcpStream) -> Stopped {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        loop {
            let st = conn.state.borrow();
            if st.close || st.broken {
                return Stopped::ByUs;
            }
            if st.out.len() < core.limits.max_unsent_bytes
                && st.session.in_flight() < core.limits.max_in_flight
            {
                break;
            }
            drop(st);
            conn.reader.notified().await;
        }
        if buf.len() == buf.capacity() {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let at = buf.len();
        let (res, slice) = stream.read(buf.slice(at..)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => {
                let st = conn.state.borrow();
                return if st.close || st.broken { Stopped::ByUs } else { Stopped::PeerClosed };
            }
            Ok(_) => {}
        }
        let used = {
            let mut st = conn.state.borrow_mut();
            let ConnState { out, session, close, .. } = &mut *st;
            session.on_bytes(core, conn.id, &buf, out, close)
        };
        buf.drain(..used);
        if buf.capacity() > 4 * READ_CHUNK_BYTES && buf.len() < READ_CHUNK_BYTES {
            // A large request is done; do not keep its buffer for the life of the connection.
            buf.shrink_to(READ_CHUNK_BYTES);
        }
        core.flush();
        conn.writer.notify_one();
    }
}

async fn write_loop(conn: Rc<Conn>, stream: Rc<TcpStream>) {
    let mut sending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK_BYTES);
    loop {
        {
            let mut st = conn.state.borrow_mut();
            if st.out.is_empty() {
                let done = st.broken || ((st.close || st.eof) && st.session.in_flight() == 0);
                drop(st);
                if done {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    conn.reader.notify_one();
                    return;
                }
                conn.writer.notified().await;
                continue;
            }
            std::mem::swap(&mut st.out, &mut sending);
        }
        let (res, buf) = stream.write_all(sending).await;
        sending = buf;
        sending.clear();
        if sending.capacity() > 4 * WRITE_CHUNK_BYTES {
            sending.shrink_to(WRITE_CHUNK_BYTES);
        }
        if res.is_err() {
            let mut st = conn.state.borrow_mut();
            st.broken = true;
            st.out.clear();
            drop(st);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            conn.reader.notify_one();
            return;
        }
        conn.reader.notify_one();
    }
}
