//! Forwarding: a cluster member that does not lead passes its clients' connections to the
//! leader, so that a client may be pointed at any member (the SDKs know one address). Owns the
//! opening read of a member's connection and the tunnels; what an opening means is
//! [`crate::proto::opening`]'s business.
//!
//! A connection is passed whole, in either protocol, as bytes: the leader serves it as its own
//! (secret, sessions, waits), and this member never parses what goes through. A tunnel ends
//! when either side closes, when the server shuts down, and when this member's view of the
//! leader changes (the client reconnects, and goes to the new leader); a client sees that as
//! any lost connection. A tunnel that cannot reach the leader leaves the connection to this
//! member, which answers its lock requests "no leader" (503, or `UNAVAILABLE` on the wire):
//! nothing was done, try again.

use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use tokio_uring::net::TcpStream;

use crate::log::Level;
use crate::proto::opening::{self, Opening, TUNNEL_PREFACE};
use crate::runtime::{Core, Serving};

use super::Settings;
use super::tls::{self, Transport};

/// How long a member waits for the leader to take a tunnel: on a LAN a connect takes well
/// under a millisecond, and a leader that does not answer in this long is as good as gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes a tunnel moves at a time, each way: a burst of pipelined requests or answers.
const TUNNEL_BUF_BYTES: usize = 16 * 1024;
/// The opening read's first buffer: any request line of an SDK.
const OPENING_BUF_BYTES: usize = 1024;

/// Reads a cluster member's connection far enough to know who serves it, and passes it to the
/// leader if the leader does; `first`: what was read of it already. `None`: the connection
/// was the leader's and is over; `Some`: this member serves it, starting with the bytes read.
/// With TLS, the tunnel to the leader is TLS too, and what goes through it is plaintext
/// inside TLS both ways.
pub(super) async fn open(
    core: &Core,
    settings: &Settings,
    stream: &TcpStream,
    transport: &Transport,
    first: Vec<u8>,
) -> Option<Vec<u8>> {
    let mut buf = first;
    buf.reserve(OPENING_BUF_BYTES);
    let deadline = tokio::time::Instant::now() + settings.limits.header_timeout;
    let opening = loop {
        match opening::classify(&buf) {
            Opening::Incomplete => {}
            done => break done,
        }
        if buf.len() == buf.capacity() {
            buf.reserve(OPENING_BUF_BYTES);
        }
        let read = tokio::time::timeout_at(deadline, transport.read(stream, buf)).await;
        match read {
            Ok((Ok(n), b)) if n > 0 => buf = b,
            // Closed or failed: the connection's own loop sees to it.
            Ok((_, b)) => return Some(b),
            // Too slow to say what it wants (its bytes went with the read): closed, as a
            // client too slow to send its request head is.
            Err(_) => return None,
        }
    };
    match (opening, core.serving()) {
        (Opening::Tunnelled, _) => {
            buf.drain(..TUNNEL_PREFACE.len());
            Some(buf)
        }
        (Opening::Leader, Serving::ForwardTo(leader)) => match connect(settings, leader).await {
            Some((upstream, up)) => {
                tunnel(core, (stream, transport), (&upstream, &up), buf, leader).await;
                None
            }
            None => Some(buf),
        },
        _ => Some(buf),
    }
}

/// Connects to the leader, over TLS if this server has a certificate (the leader has the
/// same settings).
async fn connect(settings: &Settings, leader: SocketAddr) -> Option<(TcpStream, Transport)> {
    let dial = async {
        let upstream = TcpStream::connect(leader).await?;
        let _ = upstream.set_nodelay(true);
        let transport = match &settings.tls {
            None => Transport::Plain,
            Some(t) => {
                let config = t.configs.borrow().peer.clone();
                let name = rustls::pki_types::ServerName::IpAddress(leader.ip().into());
                tls::connect(&upstream, config, name).await?
            }
        };
        std::io::Result::Ok((upstream, transport))
    };
    let failed = match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
        Ok(Ok(upstream)) => return Some(upstream),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("it did not take the connection in {CONNECT_TIMEOUT:?}"),
    };
    // Every client retries while the leader is down: one line a second says it.
    let now = std::time::Instant::now();
    let (last, missed) = WARNED.get();
    if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
        let also =
            if missed > 0 { format!(" ({missed} more since the last such line)") } else { String::new() };
        crate::log!(
            Level::Warn,
            "cannot reach the leader at {leader} to forward a connection: {failed}{also}"
        );
        WARNED.set((Some(now), 0));
    } else {
        WARNED.set((last, missed + 1));
    }
    None
}

/// At most one line a second about a leader that cannot be reached, per core.
const WARN_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// When this core last said it could not reach the leader, and how many failures it has
    /// not said since.
    static WARNED: std::cell::Cell<(Option<std::time::Instant>, u64)> = const { std::cell::Cell::new((None, 0)) };
}

/// Moves bytes between the client and the leader until the tunnel ends (see the module
/// documentation).
async fn tunnel(
    core: &Core,
    client: (&TcpStream, &Transport),
    upstream: (&TcpStream, &Transport),
    first: Vec<u8>,
    leader: SocketAddr,
) {
    let mut opening = Vec::with_capacity(TUNNEL_PREFACE.len() + first.len());
    opening.extend_from_slice(&TUNNEL_PREFACE);
    opening.extend_from_slice(&first);
    let (sent, _) = upstream.1.write_all(upstream.0, opening, |_| {}).await;
    if sent.is_ok() {
        let up = async {
            // The client is done sending: so is the tunnel, and the leader's answers still
            // come back.
            if pump(client, upstream).await {
                upstream.1.close(upstream.0).await;
                let _ = upstream.0.shutdown(Shutdown::Write);
                std::future::pending::<()>().await;
            }
        };
        let moved = async {
            loop {
                let changed = core.serving_changed();
                if core.serving() != Serving::ForwardTo(leader) {
                    return;
                }
                changed.await;
            }
        };
        tokio::select! {
            () = up => {}
            _ = pump(upstream, client) => {}
            () = moved => {}
            () = core.stopped() => {}
        }
    }
    let _ = upstream.0.shutdown(Shutdown::Both);
    let _ = client.0.shutdown(Shutdown::Both);
}

/// Copies `from` to `to` until `from` ends; `true` if it ended cleanly (end of stream),
/// `false` on a failure either side.
async fn pump(from: (&TcpStream, &Transport), to: (&TcpStream, &Transport)) -> bool {
    let mut buf = Vec::with_capacity(TUNNEL_BUF_BYTES);
    loop {
        buf.clear();
        let (read, b) = from.1.read(from.0, buf).await;
        buf = b;
        match read {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        };
        let (written, b) = to.1.write_all(to.0, buf, |_| {}).await;
        buf = b;
        if written.is_err() {
            return false;
        }
    }
}
