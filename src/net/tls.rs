//! A connection's transport: the socket itself, or a TLS session over it. tokio-uring's
//! sockets take owned buffers and are no `AsyncRead`/`AsyncWrite`, so TLS runs sans-io:
//! ciphertext read from the socket goes into the rustls session (`read_tls`,
//! `process_new_packets`) and comes out as plaintext, and plaintext going out is encrypted
//! into ciphertext (`write_tls`) that the socket writes. The sessions of `proto` see only
//! plaintext either way; a plaintext connection pays one `match` per read and per write. The
//! TLS branches' futures are boxed (one allocation per TLS read or write), so that a plaintext
//! read's future stays the size of the socket's own: the reader moves it into a `select!` at
//! every read, and at its unboxed size that move wrote about 0.3 cold cache lines more a reply
//! at wire 64 x 16 (callgrind's cache model; BENCHMARKS.md, "In memory, before and after").
//!
//! Also here: the opening of a connection to a server with a certificate ([`open`]): a first
//! byte of a TLS handshake starts TLS (`proto::opening::layer`), anything else is plaintext,
//! refused in its own protocol unless the operator allows plaintext.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::proto::opening::{self, Layer};

/// Ciphertext read from the socket at a time: one whole TLS record (16 KiB of plaintext and
/// its overhead), so a full record never takes two reads.
const CIPHER_BUF_BYTES: usize = 16 * 1024 + 512;
/// Plaintext encrypted and written at a time: one TLS record's worth. An answer counts as
/// sent once the record that carries it is in the kernel's hands, as on a plaintext socket.
const RECORD_BYTES: usize = 16 * 1024;
/// The opening read's buffer: enough for a ClientHello or a plaintext request line.
const OPENING_BUF_BYTES: usize = 2 * 1024;

pub use crate::tls::TlsConfigs;

/// A server's TLS settings, as each core holds them.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// The configs in force, read at every accept (a reload sends new ones).
    pub configs: watch::Receiver<TlsConfigs>,
    /// Serve plaintext clients too.
    pub allow_plaintext: bool,
}

/// How a connection's bytes travel.
pub(super) enum Transport {
    Plain,
    Tls(Box<Tls>),
}

impl Transport {
    /// Reads what comes next, appended to `buf`; returns how many bytes (0: the peer closed).
    pub async fn read(&self, stream: &TcpStream, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Transport::Plain => {
                let at = buf.len();
                let (res, slice) = stream.read(buf.slice(at..)).await;
                (res, slice.into_inner())
            }
            Transport::Tls(tls) => Box::pin(tls.read(stream, buf)).await,
        }
    }

    /// Writes all of `buf`, calling `sent` with each part's length as the kernel takes it.
    pub async fn write_all(
        &self,
        stream: &TcpStream,
        buf: Vec<u8>,
        mut sent: impl FnMut(usize),
    ) -> (io::Result<()>, Vec<u8>) {
        match self {
            Transport::Plain => {
                let mut buf = buf;
                let mut done = 0;
                while done < buf.len() {
                    let (res, slice) = stream.write(buf.slice(done..)).submit().await;
                    buf = slice.into_inner();
                    match res {
                        Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                        Ok(n) => {
                            done += n;
                            sent(n);
                        }
                        Err(e) => return (Err(e), buf),
                    }
                }
                (Ok(()), buf)
            }
            Transport::Tls(tls) => {
                let res = Box::pin(tls.write_all(stream, &buf, sent)).await;
                (res, buf)
            }
        }
    }

    /// Says the end (a TLS `close_notify`; nothing in plaintext) before the socket is shut.
    pub async fn close(&self, stream: &TcpStream) {
        if let Transport::Tls(tls) = self {
            tls.session.borrow_mut().send_close_notify();
            let _ = Box::pin(tls.flush(stream)).await;
        }
    }
}

/// A TLS session over a socket (client or server side).
pub(super) struct Tls {
    session: RefCell<rustls::Connection>,
    /// One writer at a time takes ciphertext out of the session and writes it, so records
    /// reach the socket in the order they were made (the reader too may have some: an alert,
    /// a key update's answer).
    writing: tokio::sync::Mutex<()>,
    /// The ciphertext read buffer, kept between reads.
    spare: Cell<Vec<u8>>,
    /// The peer ended the session (`close_notify` or end of stream) after plaintext that was
    /// returned with it; the next read says so.
    closed: Cell<bool>,
}

impl Tls {
    /// Runs the handshake of `session` on `stream`, `first` being ciphertext already read.
    /// Returns the session and whatever plaintext came with the handshake's end.
    pub async fn handshake(
        session: impl Into<rustls::Connection>,
        stream: &TcpStream,
        first: &[u8],
    ) -> io::Result<(Tls, Vec<u8>)> {
        let tls = Tls {
            session: RefCell::new(session.into()),
            writing: tokio::sync::Mutex::new(()),
            spare: Cell::new(Vec::new()),
            closed: Cell::new(false),
        };
        let mut plain = Vec::new();
        let mut absorbed = tls.absorb(first, &mut plain);
        loop {
            // An alert that says why the handshake failed goes out too.
            tls.flush(stream).await?;
            if absorbed? {
                tls.closed.set(true);
            }
            if !tls.session.borrow().is_handshaking() {
                return Ok((tls, plain));
            }
            if tls.closed.get() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let cipher = tls.spare.take();
            let (res, cipher) = read_cipher(stream, cipher).await;
            absorbed = match res {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => tls.absorb(&cipher, &mut plain),
                Err(e) => return Err(e),
            };
            tls.spare.set(cipher);
        }
    }

    /// Feeds ciphertext into the session, appending the plaintext that comes out to `plain`;
    /// returns whether the peer closed the session.
    fn absorb(&self, mut cipher: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
        let mut session = self.session.borrow_mut();
        let mut closed = false;
        loop {
            let state =
                session.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = plain.len();
                plain.resize(at + n, 0);
                session.reader().read_exact(&mut plain[at..])?;
            }
            closed |= state.peer_has_closed();
            if cipher.is_empty() {
                return Ok(closed);
            }
            // Takes what fits in the session's buffer; the plaintext taken above makes room.
            if session.read_tls(&mut cipher)? == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the TLS session took no bytes"));
            }
        }
    }

    /// Reads until some plaintext comes, appended to `buf`; 0: the peer closed.
    async fn read(&self, stream: &TcpStream, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let before = buf.len();
        loop {
            if self.closed.get() {
                return (Ok(0), buf);
            }
            let cipher = self.spare.take();
            let (res, cipher) = read_cipher(stream, cipher).await;
            let absorbed = match res {
                Ok(0) => Ok(true),
                Ok(_) => self.absorb(&cipher, &mut buf),
                Err(e) => Err(e),
            };
            self.spare.set(cipher);
            let wants_write = self.session.borrow().wants_write();
            if wants_write && let Err(e) = self.flush(stream).await {
                return (Err(e), buf);
            }
            match absorbed {
                Ok(closed) => self.closed.set(closed),
                Err(e) => return (Err(e), buf),
            }
            if buf.len() > before {
                return (Ok(buf.len() - before), buf);
            }
        }
    }

    /// Encrypts and writes `plain`, one record at a time.
    async fn write_all(
        &self,
        stream: &TcpStream,
        plain: &[u8],
        mut sent: impl FnMut(usize),
    ) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        for record in plain.chunks(RECORD_BYTES) {
            self.session.borrow_mut().writer().write_all(record)?;
            self.flush_locked(stream).await?;
            sent(record.len());
        }
        Ok(())
    }

    /// Writes whatever ciphertext the session has.
    async fn flush(&self, stream: &TcpStream) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        self.flush_locked(stream).await
    }

    async fn flush_locked(&self, stream: &TcpStream) -> io::Result<()> {
        loop {
            let mut out = Vec::new();
            {
                let mut session = self.session.borrow_mut();
                while session.wants_write() {
                    session.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            stream.write_all(out).await.0?;
        }
    }
}

/// Reads ciphertext into `cipher` (cleared first; its allocation is kept).
async fn read_cipher(stream: &TcpStream, mut cipher: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    cipher.clear();
    cipher.reserve(CIPHER_BUF_BYTES);
    stream.read(cipher).await
}

/// Opens a connection to a server with a certificate (see the module documentation): the
/// transport and the plaintext read already, or `None` if the connection is over (refused,
/// silent until `deadline`, or a failed handshake).
pub(super) async fn open(
    stream: &TcpStream,
    tls: &TlsSettings,
    deadline: Instant,
) -> Option<(Transport, Vec<u8>)> {
    let first = Vec::with_capacity(OPENING_BUF_BYTES);
    let (read, first) = match tokio::time::timeout_at(deadline, stream.read(first)).await {
        Ok(read) => read,
        Err(_) => return None,
    };
    if !matches!(read, Ok(n) if n > 0) {
        return None;
    }
    match opening::layer(&first) {
        Layer::Tls => {
            let config = tls.configs.borrow().server.clone();
            let session = rustls::ServerConnection::new(config).ok()?;
            let handshake = Tls::handshake(session, stream, &first);
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok((tls, plain))) => Some((Transport::Tls(Box::new(tls)), plain)),
                // The client did not trust us, or we not it: rustls's alert has told it why.
                _ => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    None
                }
            }
        }
        _ if tls.allow_plaintext => Some((Transport::Plain, first)),
        layer => {
            let answer = crate::proto::tls_required_answer(layer == Layer::Wire);
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown(std::net::Shutdown::Both);
            None
        }
    }
}

/// Dials the TLS side of a member at `addr` over `stream` (already connected), checking its
/// certificate against `name`.
pub(super) async fn connect(
    stream: &TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> io::Result<Transport> {
    let session = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let (tls, plain) = Tls::handshake(session, stream, &[]).await?;
    // A member's port says nothing before its client's first request: bytes here are not
    // ringlock's.
    if !plain.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the server spoke before it was asked"));
    }
    Ok(Transport::Tls(Box::new(tls)))
}
