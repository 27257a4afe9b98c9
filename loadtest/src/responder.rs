//! The trivial responder: a single-threaded server that answers every complete request at
//! once with a fixed minimal reply and does nothing else. Against it the generator's own cost
//! is all there is, which is how "the generator is not the bottleneck" is measured.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use clap::ValueEnum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::LocalSet;

use crate::proto::{ParseError, http, redis};

/// Bytes each connection reads at a time.
pub const READ_BUF_BYTES: usize = 64 * 1024;

/// The reply to every HTTP request.
pub const HTTP_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK";

/// The reply to every Redis command.
pub const REDIS_REPLY: &[u8] = b"+OK\r\n";

/// Which protocol the responder frames requests in, and so which reply it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// HTTP/1.1 requests (head plus `content-length` body); replies `200 OK` with body `OK`.
    Http,
    /// RESP commands; replies `+OK`.
    Redis,
}

impl Kind {
    /// The fixed reply.
    pub fn reply(self) -> &'static [u8] {
        match self {
            Kind::Http => HTTP_REPLY,
            Kind::Redis => REDIS_REPLY,
        }
    }
}

/// Counts the complete requests at the front of `buf`: how many, and how many bytes they
/// take. Partial input after them is left for the next read.
pub fn complete_requests(kind: Kind, buf: &[u8]) -> Result<(usize, usize), ParseError> {
    let (mut count, mut used) = (0, 0);
    loop {
        let rest = &buf[used..];
        if rest.is_empty() {
            return Ok((count, used));
        }
        let len = match kind {
            Kind::Http => http::parse_request(rest)?,
            Kind::Redis => redis::parse(rest)?.map(|f| f.len),
        };
        match len {
            Some(len) => {
                count += 1;
                used += len;
            }
            None => return Ok((count, used)),
        }
    }
}

/// Serves `listener` on the calling thread (a current-thread runtime) until `duration` has
/// passed, or forever.
pub fn serve(listener: StdListener, kind: Kind, duration: Option<Duration>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    LocalSet::new().block_on(&runtime, async move {
        let listener = TcpListener::from_std(listener)?;
        let accept = async {
            loop {
                let (stream, _) = listener.accept().await?;
                tokio::task::spawn_local(connection(stream, kind));
            }
        };
        match duration {
            Some(d) => tokio::time::timeout(d, accept).await.unwrap_or(Ok(())),
            None => accept.await,
        }
    })
}

/// Binds `addr` and serves it; prints the address it listens on once it does.
pub fn bind_and_serve(addr: SocketAddr, kind: Kind, duration: Option<Duration>) -> io::Result<()> {
    let listener = StdListener::bind(addr)?;
    println!("responder listening on {}", listener.local_addr()?);
    serve(listener, kind, duration)
}

/// One connection: read, answer every complete request in one write, repeat until the
/// client closes or sends something that is not a request.
async fn connection(mut stream: TcpStream, kind: Kind) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        if filled == buf.len() {
            eprintln!("responder: a request larger than {READ_BUF_BYTES} bytes; closing");
            return;
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let (count, used) = match complete_requests(kind, &buf[..filled]) {
            Ok(done) => done,
            Err(e) => {
                eprintln!("responder: bad request ({e}); closing");
                return;
            }
        };
        for _ in 0..count {
            out.extend_from_slice(kind.reply());
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pipelined_http_requests_and_leaves_a_partial_one() {
        let get = b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n";
        let post = b"POST /acquire HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let mut buf = get.to_vec();
        buf.extend_from_slice(post);
        buf.extend_from_slice(&post[..10]);
        assert_eq!(complete_requests(Kind::Http, &buf), Ok((2, get.len() + post.len())));
        assert_eq!(complete_requests(Kind::Http, &post[..post.len() - 1]), Ok((0, 0)));
        assert_eq!(complete_requests(Kind::Http, b""), Ok((0, 0)));
    }

    #[test]
    fn counts_pipelined_redis_commands() {
        let cmd = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let mut buf = cmd.to_vec();
        buf.extend_from_slice(crate::proto::redis::PING);
        buf.extend_from_slice(&cmd[..7]);
        assert_eq!(complete_requests(Kind::Redis, &buf), Ok((2, cmd.len() + 14)));
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(complete_requests(Kind::Redis, b"GET / HTTP/1.1\r\n"), Err(ParseError::BadType(b'G')));
        assert_eq!(complete_requests(Kind::Http, b"\r\n"), Err(ParseError::BadStatusLine));
    }

    #[test]
    fn replies_are_the_minimal_fixed_ones_and_parse_as_successes() {
        assert_eq!(
            http::parse_response(HTTP_REPLY),
            Ok(Some(http::Response { status: 200, len: HTTP_REPLY.len() }))
        );
        assert_eq!(redis::parse(REDIS_REPLY).unwrap().unwrap().len, REDIS_REPLY.len());
        assert_eq!(Kind::Http.reply(), HTTP_REPLY);
        assert_eq!(Kind::Redis.reply(), REDIS_REPLY);
    }
}
