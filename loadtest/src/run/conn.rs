//! One connection's plumbing, the same in both loops: connecting, the protocol's opening
//! [`Handshake`], the read buffer and reading into it, and finding the request in flight that
//! a reply answers ([`Pending`], by order or by id); and one request on a connection of its
//! own, for a failover's attempts.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::RunError;
use crate::op::{Op, OpKind, Outcome};
use crate::proto::{Handshake, IN_ORDER, Protocol, describe_reply};

/// Bytes each connection reads into; at least one whole reply of the largest kind accepted
/// (an HTTP head of 8 KiB plus a body of 64 KiB).
pub const READ_BUF_BYTES: usize = 128 * 1024;

/// Below this much free space at the end of the read buffer, unparsed bytes move to its front
/// before the next read, so reads stay large.
pub const MIN_READ_BYTES: usize = 16 * 1024;

/// Longest wait for one connection to be accepted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request in flight: what it was, when it was sent (closed loop) or due (open loop), and
/// the id its reply will carry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub(super) kind: OpKind,
    pub(super) at: Instant,
    pub(super) id: u32,
}

/// Where in `pending` (oldest first) the request a reply with `id` answers is.
pub(super) fn answered(pending: &VecDeque<Pending>, id: u32) -> Option<usize> {
    if id == IN_ORDER {
        (!pending.is_empty()).then_some(0)
    } else {
        // Out-of-order answers are few: the one sought is nearly always at the front.
        pending.iter().position(|p| p.id == id)
    }
}

/// A connection's read buffer: bytes `start..end` are read and not yet parsed.
pub(super) struct InBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub(super) fn new() -> InBuf {
        InBuf { buf: vec![0; READ_BUF_BYTES].into_boxed_slice(), start: 0, end: 0 }
    }

    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into, or `None` if one unparsed reply fills the whole buffer.
    fn spare(&mut self) -> Option<&mut [u8]> {
        if self.buf.len() - self.end < MIN_READ_BYTES && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return None;
        }
        Some(&mut self.buf[self.end..])
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

/// Reads once into `input`; `Err` describes why the connection is over.
pub(super) async fn read_some<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    input: &mut InBuf,
    in_flight: usize,
) -> Result<(), String> {
    let Some(spare) = input.spare() else {
        return Err(format!("a reply larger than {READ_BUF_BYTES} bytes"));
    };
    match reader.read(spare).await {
        Ok(0) => Err(format!("server closed the connection with {in_flight} requests in flight")),
        Ok(n) => {
            input.filled(n);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A connection: the socket, or TLS over it. One `match` per read and write; the socket's
/// own halves are used where the loop splits it (the open loop, plaintext only).
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens a connection to `addr`, over TLS with `tls` (the certificate checked against
/// `addr`'s IP address).
pub(super) async fn connect(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Stream, RunError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| RunError::Connect(addr, io::ErrorKind::TimedOut.into()))?
        .map_err(|e| RunError::Connect(addr, e))?;
    // Requests must leave when written, not when Nagle's algorithm decides.
    stream.set_nodelay(true).map_err(|e| RunError::Connect(addr, e))?;
    let Some(tls) = tls else { return Ok(Stream::Plain(stream)) };
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let connect = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, stream);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| RunError::Connect(addr, io::ErrorKind::TimedOut.into()))?
        .map_err(|e| RunError::Connect(addr, e))?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Sends `handshake` on a new connection and reads until its answer is all there.
pub(super) async fn handshake(stream: &mut Stream, handshake: &Handshake) -> Result<(), RunError> {
    let setup = |e: String| RunError::Setup(format!("{}: {e}", handshake.name));
    stream.write_all(&handshake.request).await.map_err(|e| setup(e.to_string()))?;
    let mut input = InBuf::new();
    loop {
        read_some(stream, &mut input, 1).await.map_err(setup)?;
        if (handshake.answered)(input.data()).map_err(setup)?.is_some() {
            return Ok(());
        }
    }
}

/// Sends `op` alone on a new connection to `addr` (opened with `proto`'s handshake) and reads
/// its reply: its outcome, or why there is none.
pub(super) async fn one_request<P: Protocol>(
    mut proto: P,
    addr: SocketAddr,
    op: Op,
) -> Result<Outcome, String> {
    let mut stream = connect(addr, None).await.map_err(|e| e.to_string())?;
    if let Some(handshake) = proto.handshake() {
        self::handshake(&mut stream, &handshake).await.map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    let id = proto.encode(&op, &mut out);
    stream.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
    let mut input = InBuf::new();
    let kind = op.kind();
    loop {
        read_some(&mut stream, &mut input, 1).await?;
        match proto.parse(input.data(), |i| (i == id).then_some(kind)) {
            Ok(Some(reply)) => return Ok(reply.outcome),
            Ok(None) => {}
            Err(e) => return Err(format!("unparsable reply ({e}): {}", describe_reply(input.data()))),
        }
    }
}
