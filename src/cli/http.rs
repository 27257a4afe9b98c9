//! A small blocking HTTP/1.1 client for the admin subcommands: listing locks, forced releases
//! and the cluster's membership are HTTP only (the wire protocol has none of them). One
//! keep-alive connection, the secret on every request, `Content-Length` framing (all ringlock
//! sends), and the client's call timeout on connecting and on every call. Heads are read with
//! `httparse`, as the server reads them.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use ringlock_client::Config;

/// Largest answer head read; ringlock's are a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest answer body read: a page of 1000 locks with names and owners at their limits
/// (1 KiB and 256 B, JSON-escaped at worst six bytes a byte) stays below it.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Header fields an answer may have; ringlock sends at most six.
const MAX_HEADERS: usize = 32;
/// Bytes read at a time.
const READ_BYTES: usize = 16 * 1024;

/// An answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `X-Lockserver-Token`, if sent.
    pub token: Option<u64>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text (ringlock's lock answers are text).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection: plaintext, or TLS when the client config has it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One connection to a server.
pub struct Http {
    /// `None` once the server said it closes the connection: the next call reconnects.
    stream: Option<Stream>,
    config: Config,
    /// Bytes read past the last answer.
    buf: Vec<u8>,
}

impl Http {
    /// Connects to `config.addr` (`host:port`; of a cluster's members, comma-separated, the
    /// first that takes the connection) within `config.call_timeout` for each.
    pub fn connect(config: &Config) -> io::Result<Http> {
        let mut http = Http { stream: None, config: config.clone(), buf: Vec::new() };
        http.stream = Some(http.open()?);
        Ok(http)
    }

    fn open(&self) -> io::Result<Stream> {
        let timeout = self.config.call_timeout;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
        for member in self.config.members() {
            let addrs = match member.to_socket_addrs() {
                Ok(addrs) => addrs,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(stream) => {
                        stream.set_read_timeout(Some(timeout))?;
                        stream.set_write_timeout(Some(timeout))?;
                        stream.set_nodelay(true)?;
                        return self.secure(stream, member);
                    }
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// TLS over `stream` if the config has it (the handshake done, so that a server that is
    /// not trusted fails here), or the stream itself.
    fn secure(&self, stream: TcpStream, member: &str) -> io::Result<Stream> {
        let Some(tls) = &self.config.tls else { return Ok(Stream::Plain(stream)) };
        let refused = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let config = tls.rustls().map_err(refused)?;
        let name = ringlock_client::tls::server_name(member).map_err(refused)?;
        let session = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(session, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(timed_out)?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// `GET target`.
    pub fn get(&mut self, target: &str) -> io::Result<Answer> {
        self.call("GET", target, None)
    }

    /// `DELETE target`.
    pub fn delete(&mut self, target: &str) -> io::Result<Answer> {
        self.call("DELETE", target, None)
    }

    /// `POST target` with a JSON body.
    pub fn post(&mut self, target: &str, json: &[u8]) -> io::Result<Answer> {
        self.call("POST", target, Some(json))
    }

    fn call(&mut self, method: &str, target: &str, json: Option<&[u8]>) -> io::Result<Answer> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                self.buf.clear();
                self.open()?
            }
        };
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nX-LOCKSERVER-SECRET: {}\r\n",
            self.config.addr.split(',').next().unwrap_or_default().trim(),
            self.config.secret
        );
        if let Some(json) = json {
            request
                .push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", json.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(json.unwrap_or_default());
        stream.write_all(&bytes).map_err(timed_out)?;
        let (answer, keep_alive) = self.read_answer(&mut stream)?;
        if keep_alive {
            self.stream = Some(stream);
        }
        Ok(answer)
    }

    /// Reads one answer: it, and whether the connection stays open after it.
    fn read_answer(&mut self, stream: &mut Stream) -> io::Result<(Answer, bool)> {
        loop {
            if let Some((head_len, answer, length, keep_alive)) = parse_head(&self.buf)? {
                if length > MAX_BODY_BYTES {
                    return Err(invalid(format!("an answer of {length} bytes is over the limit")));
                }
                while self.buf.len() < head_len + length {
                    self.fill(stream)?;
                }
                let body = self.buf[head_len..head_len + length].to_vec();
                self.buf.drain(..head_len + length);
                return Ok((Answer { body, ..answer }, keep_alive));
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(invalid("an answer head over 16 KiB".into()));
            }
            self.fill(stream)?;
        }
    }

    fn fill(&mut self, stream: &mut Stream) -> io::Result<()> {
        let mut chunk = [0; READ_BYTES];
        match stream.read(&mut chunk).map_err(timed_out)? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}

/// The head at the start of `buf`, if it is all there: its length, the answer without its body,
/// the body's length and whether the connection stays open.
fn parse_head(buf: &[u8]) -> io::Result<Option<(usize, Answer, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("an answer that is not HTTP ({e})"))),
    };
    let mut answer = Answer { status: head.code.unwrap_or_default(), token: None, body: Vec::new() };
    let (mut length, mut keep_alive) = (None, head.version == Some(1));
    for h in head.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if h.name.eq_ignore_ascii_case("x-lockserver-token") {
            answer.token = value.parse().ok();
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let length = length.ok_or_else(|| invalid("an answer without Content-Length".into()))?;
    Ok(Some((head_len, answer, length, keep_alive)))
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// A read or write that ran out of time says so in words.
fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "the server did not answer in time")
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_once_whole() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\
                       X-Lockserver-Token: 42\r\n\r\nOKHTTP/1.1";
        assert_eq!(parse_head(&answer[..20]).unwrap(), None, "partial: not yet");
        let (head_len, got, length, keep_alive) = parse_head(answer).unwrap().unwrap();
        assert_eq!(&answer[head_len..head_len + length], b"OK");
        assert_eq!((got.status, got.token, keep_alive), (200, Some(42), true));
        let closing = b"HTTP/1.1 409 Conflict\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert!(!parse_head(closing).unwrap().unwrap().3, "the server closes");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err(), "no length");
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
