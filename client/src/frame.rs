//! The wire protocol's bytes: the connection preface, frames, and every request and reply
//! body (`docs/PROTOCOL.md` in ringlock's repository is the specification; this module is its
//! one implementation, used by the server, the load generator and [`crate::Client`] alike).
//! Pure: [`check`] says whether a whole frame is there before anything is built, parsers
//! borrow strings from the frame, encoders append.
//!
//! A frame: `u32` length of the rest (little-endian, like every integer here), `u8` kind,
//! `u32` id, body. Strings are a `u16` length and UTF-8 bytes.

/// What a client sends first: a NUL (which no HTTP request starts with, so one port serves
/// both protocols), `RL`, and the protocol version: here version 1, whose session locks are
/// bound to their connection.
pub const PREFACE: [u8; 4] = [0x00, b'R', b'L', VERSION];
/// Protocol version 1.
pub const VERSION: u8 = 1;
/// The preface of protocol version 2: session locks belong to a session that outlives a
/// connection for its timeout, and a client that reconnects in time resumes it
/// ([`WireRequest::HelloSession`]).
pub const PREFACE_SESSIONS: [u8; 4] = [0x00, b'R', b'L', SESSIONS_VERSION];
/// Protocol version 2.
pub const SESSIONS_VERSION: u8 = 2;
/// Longest session timeout a server grants, in ms: an hour. A session outlives its
/// connection for its timeout, holding its locks; longer would be a lease by another name.
pub const MAX_SESSION_TIMEOUT_MS: u64 = 3_600_000;
/// Largest value of a frame's length field, in bytes: a request carries at most two names
/// (1 KiB + 256 B) and a few integers, so 4 KiB refuses nonsense early.
pub const MAX_FRAME_BYTES: usize = 4096;
/// Bytes of the length field.
pub const LEN_BYTES: usize = 4;
/// Bytes of kind and id, the smallest a frame's length can be.
pub const MIN_FRAME_BYTES: usize = 5;

/// Frame kinds. Requests are below 0x80, replies at or above it.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const PING: u8 = 0x02;
    pub const ACQUIRE: u8 = 0x03;
    pub const RELEASE: u8 = 0x04;
    pub const EXTEND: u8 = 0x05;
    pub const INSPECT: u8 = 0x06;
    pub const HELLO_SESSION: u8 = 0x07;

    pub const HELLO_OK: u8 = 0x81;
    pub const PONG: u8 = 0x82;
    pub const GRANTED: u8 = 0x83;
    pub const RELEASED: u8 = 0x84;
    pub const EXTENDED: u8 = 0x85;
    pub const LOCK: u8 = 0x86;
    pub const SESSION_OK: u8 = 0x87;
    pub const LOST: u8 = 0x90;
    pub const BUSY: u8 = 0xA1;
    pub const TIMED_OUT: u8 = 0xA2;
    pub const QUEUE_FULL: u8 = 0xA3;
    pub const NOT_FOUND: u8 = 0xA4;
    pub const NOT_HOLDER: u8 = 0xA5;
    pub const TOKEN_MISMATCH: u8 = 0xA6;
    pub const INVALID: u8 = 0xA7;
    pub const UNAVAILABLE: u8 = 0xA8;
    pub const PROTOCOL_ERROR: u8 = 0xE0;
    pub const UNAUTHORIZED: u8 = 0xE1;
}

/// Flag bits of `ACQUIRE`, `RELEASE` and `EXTEND`.
pub mod flag {
    /// `ACQUIRE`, `EXTEND`: the ttl field holds a lease length (else: no expiry).
    pub const TTL: u8 = 0x01;
    /// `ACQUIRE`: a session lock, released when this connection closes.
    pub const SESSION: u8 = 0x02;
    /// `RELEASE`, `EXTEND`: the token field must match the holder's.
    pub const TOKEN: u8 = 0x04;
}

/// A request as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireRequest<'a> {
    /// Must be a version 1 connection's first frame.
    Hello {
        secret: &'a [u8],
    },
    /// Must be a version 2 connection's first frame: the secret, the session to resume (0: a
    /// new one) and how long the session may outlive a connection, in ms.
    HelloSession {
        secret: &'a [u8],
        session: u64,
        timeout_ms: u64,
    },
    Ping,
    /// Take a lock; `ttl` in ms (`None`: until released), wait up to `wait` ms if it is busy.
    /// A `session` lock is released when the connection that took it closes.
    Acquire {
        resource: &'a str,
        owner: &'a str,
        ttl: Option<u64>,
        wait: u64,
        session: bool,
    },
    /// Give a lock back (only its holder may; under `token`, if given).
    Release {
        resource: &'a str,
        owner: &'a str,
        token: Option<u64>,
    },
    /// Renew the holder's lease: it ends `ttl` ms from now (`None`: never).
    Extend {
        resource: &'a str,
        owner: &'a str,
        token: Option<u64>,
        ttl: Option<u64>,
    },
    /// Who holds a lock.
    Inspect {
        resource: &'a str,
    },
}

/// A reply (or, with id 0, a push) as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireReply<'a> {
    HelloOk {
        version: u8,
    },
    /// A version 2 connection is authorized and belongs to `session`, which outlives it for
    /// `timeout_ms`; `resumed`: it is the session asked for, with its locks (otherwise a new
    /// one, and the locks of the one asked for are gone).
    SessionOk {
        session: u64,
        timeout_ms: u64,
        resumed: bool,
    },
    Pong,
    Granted {
        token: u64,
    },
    Released {
        token: u64,
    },
    Extended {
        token: u64,
    },
    /// `expires_in`: ms left of the lease, `None` for no expiry.
    Lock {
        token: u64,
        expires_in: Option<u64>,
        waiters: u32,
        owner: &'a str,
    },
    /// Push: the session lock `resource`, granted under `token`, ran out.
    Lost {
        token: u64,
        resource: &'a str,
    },
    Busy,
    TimedOut,
    QueueFull,
    NotFound,
    NotHolder,
    TokenMismatch,
    /// The server cannot keep a change now (it cannot write its log): nothing was done; try
    /// again later.
    Unavailable,
    /// The request was well framed but asked for something not allowed (the reason says what).
    Invalid {
        reason: &'a str,
    },
    /// Fatal: the stream cannot be read further; the server closes after sending it.
    ProtocolError {
        reason: &'a str,
    },
    /// Fatal: no `HELLO` first, or a wrong secret.
    Unauthorized,
}

/// Why a frame could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The stream is not (or no longer) this protocol: answer `PROTOCOL_ERROR` and close.
    Fatal(&'static str),
    /// A well-framed request with a bad field: answer `INVALID` to `id`, keep going.
    Invalid { id: u32, reason: &'static str },
}

/// Reads the preface at the start of `buf`: the protocol version (1 or 2) once all of it is
/// there, `Ok(None)` before.
pub fn read_preface(buf: &[u8]) -> Result<Option<u8>, FrameError> {
    if buf.len() >= PREFACE.len() && buf[..3] == PREFACE[..3] && buf[3] == SESSIONS_VERSION {
        return Ok(Some(SESSIONS_VERSION));
    }
    Ok(check_preface(buf)?.then_some(VERSION))
}

/// Checks the version 1 preface at the start of `buf`: `Ok(true)` once all of it is there and
/// right.
pub fn check_preface(buf: &[u8]) -> Result<bool, FrameError> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return Err(FrameError::Fatal(if n == PREFACE.len() && buf[..3] == PREFACE[..3] {
            "unsupported protocol version"
        } else {
            "bad preface"
        }));
    }
    Ok(n == PREFACE.len())
}

/// The total size of the frame at the start of `buf` if all of it is there; `Ok(None)` if
/// more bytes are needed.
pub fn check(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(len) = buf.first_chunk::<LEN_BYTES>().map(|b| u32::from_le_bytes(*b) as usize) else {
        return Ok(None);
    };
    if len < MIN_FRAME_BYTES {
        return Err(FrameError::Fatal("frame shorter than its kind and id"));
    }
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::Fatal("frame longer than 4096 bytes"));
    }
    Ok((buf.len() >= LEN_BYTES + len).then_some(LEN_BYTES + len))
}

/// Reads a frame's fields in order; running short is fatal (the length field lied).
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Fatal("frame body too short"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        self.take(usize::from(n))
    }
    fn text(&mut self) -> Result<&'a str, FrameError> {
        utf8(self.bytes()?).ok_or(FrameError::Fatal("text is not UTF-8"))
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.rest.is_empty() { Ok(()) } else { Err(FrameError::Fatal("bytes after the frame body")) }
    }
}

/// Kind, id and body of a whole frame (as measured by [`check`]).
fn split(frame: &[u8]) -> (u8, u32, &[u8]) {
    let kind = frame[LEN_BYTES];
    let id = u32::from_le_bytes(frame[LEN_BYTES + 1..LEN_BYTES + 5].try_into().expect("4 bytes"));
    (kind, id, &frame[LEN_BYTES + 5..])
}

/// Parses a whole request frame (as measured by [`check`]) into its id and request.
pub fn parse_request(frame: &[u8]) -> Result<(u32, WireRequest<'_>), FrameError> {
    let (k, id, body) = split(frame);
    let mut r = Reader { rest: body };
    let names = |resource, owner| names(id, resource, owner);
    // Flag bits this version does not know are refused, so that a newer client learns at once
    // that it speaks to an older server.
    let flags_in = |flags: u8, known: u8| {
        if flags & !known == 0 {
            Ok(flags)
        } else {
            Err(FrameError::Invalid { id, reason: "unknown flag bits" })
        }
    };
    let req = match k {
        kind::HELLO => WireRequest::Hello { secret: r.bytes()? },
        kind::HELLO_SESSION => {
            WireRequest::HelloSession { secret: r.bytes()?, session: r.u64()?, timeout_ms: r.u64()? }
        }
        kind::PING => WireRequest::Ping,
        kind::ACQUIRE => {
            let (flags, ttl, wait) = (r.u8()?, r.u64()?, r.u64()?);
            let (resource, owner) = (r.bytes()?, r.bytes()?);
            r.end()?;
            let flags = flags_in(flags, flag::TTL | flag::SESSION)?;
            let (resource, owner) = names(resource, owner)?;
            let (ttl, session) = ((flags & flag::TTL != 0).then_some(ttl), flags & flag::SESSION != 0);
            WireRequest::Acquire { resource, owner, ttl, wait, session }
        }
        kind::RELEASE => {
            let (flags, token) = (r.u8()?, r.u64()?);
            let (resource, owner) = (r.bytes()?, r.bytes()?);
            r.end()?;
            let flags = flags_in(flags, flag::TOKEN)?;
            let (resource, owner) = names(resource, owner)?;
            WireRequest::Release { resource, owner, token: (flags & flag::TOKEN != 0).then_some(token) }
        }
        kind::EXTEND => {
            let (flags, token, ttl) = (r.u8()?, r.u64()?, r.u64()?);
            let (resource, owner) = (r.bytes()?, r.bytes()?);
            r.end()?;
            let flags = flags_in(flags, flag::TOKEN | flag::TTL)?;
            let (resource, owner) = names(resource, owner)?;
            let (token, ttl) =
                ((flags & flag::TOKEN != 0).then_some(token), (flags & flag::TTL != 0).then_some(ttl));
            WireRequest::Extend { resource, owner, token, ttl }
        }
        kind::INSPECT => {
            let resource = r.bytes()?;
            r.end()?;
            WireRequest::Inspect { resource: names(resource, b"")?.0 }
        }
        _ => return Err(FrameError::Fatal("unknown request kind")),
    };
    r.end()?;
    Ok((id, req))
}

/// Resource and owner as text. Names that are not UTF-8 spoil one request, not the stream.
fn names<'a>(id: u32, resource: &'a [u8], owner: &'a [u8]) -> Result<(&'a str, &'a str), FrameError> {
    match (utf8(resource), utf8(owner)) {
        (Some(resource), Some(owner)) => Ok((resource, owner)),
        _ => Err(FrameError::Invalid { id, reason: "names must be UTF-8" }),
    }
}

/// `bytes` as text, if they are UTF-8 (`std::str::from_utf8`, faster on ASCII). Names are
/// nearly always ASCII, which is told a word at a time; the general check costs some 80
/// instructions on a name of a few bytes, and every request has two (the server's
/// BENCHMARKS.md, "In memory, before and after"). The server reads HTTP bodies with it too.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// Appends a frame: reserves the length, lets `body` write, then fills the length in.
fn frame(out: &mut Vec<u8>, kind: u8, id: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    body(out);
    let len = (out.len() - start - LEN_BYTES) as u32;
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Names are checked against their limits (well under 64 KiB) before they are encoded;
    // clamping keeps a frame well formed even if one is not.
    let s = &s[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

/// Appends the frame of request `req` with id `id` (the client's encoder).
pub fn encode_request(out: &mut Vec<u8>, id: u32, req: &WireRequest<'_>) {
    match req {
        WireRequest::Hello { secret } => frame(out, kind::HELLO, id, |o| put_str(o, secret)),
        WireRequest::HelloSession { secret, session, timeout_ms } => {
            frame(out, kind::HELLO_SESSION, id, |o| {
                put_str(o, secret);
                o.extend_from_slice(&session.to_le_bytes());
                o.extend_from_slice(&timeout_ms.to_le_bytes());
            })
        }
        WireRequest::Ping => frame(out, kind::PING, id, |_| {}),
        WireRequest::Acquire { resource, owner, ttl, wait, session } => frame(out, kind::ACQUIRE, id, |o| {
            let flags = if ttl.is_some() { flag::TTL } else { 0 } | if *session { flag::SESSION } else { 0 };
            o.push(flags);
            o.extend_from_slice(&ttl.unwrap_or(0).to_le_bytes());
            o.extend_from_slice(&wait.to_le_bytes());
            put_str(o, resource.as_bytes());
            put_str(o, owner.as_bytes());
        }),
        WireRequest::Release { resource, owner, token } => frame(out, kind::RELEASE, id, |o| {
            o.push(if token.is_some() { flag::TOKEN } else { 0 });
            o.extend_from_slice(&token.unwrap_or(0).to_le_bytes());
            put_str(o, resource.as_bytes());
            put_str(o, owner.as_bytes());
        }),
        WireRequest::Extend { resource, owner, token, ttl } => frame(out, kind::EXTEND, id, |o| {
            o.push(if token.is_some() { flag::TOKEN } else { 0 } | if ttl.is_some() { flag::TTL } else { 0 });
            o.extend_from_slice(&token.unwrap_or(0).to_le_bytes());
            o.extend_from_slice(&ttl.unwrap_or(0).to_le_bytes());
            put_str(o, resource.as_bytes());
            put_str(o, owner.as_bytes());
        }),
        WireRequest::Inspect { resource } => {
            frame(out, kind::INSPECT, id, |o| put_str(o, resource.as_bytes()))
        }
    }
}

/// Appends the frame of reply `reply` to request `id` (the server's encoder).
pub fn encode_reply(out: &mut Vec<u8>, id: u32, reply: &WireReply<'_>) {
    let token = |t: u64| move |o: &mut Vec<u8>| o.extend_from_slice(&t.to_le_bytes());
    let text = |s: &str| {
        let s = s.as_bytes().to_vec();
        move |o: &mut Vec<u8>| put_str(o, &s)
    };
    match reply {
        WireReply::HelloOk { version } => frame(out, kind::HELLO_OK, id, |o| o.push(*version)),
        WireReply::SessionOk { session, timeout_ms, resumed } => frame(out, kind::SESSION_OK, id, |o| {
            o.extend_from_slice(&session.to_le_bytes());
            o.extend_from_slice(&timeout_ms.to_le_bytes());
            o.push(u8::from(*resumed));
        }),
        WireReply::Pong => frame(out, kind::PONG, id, |_| {}),
        WireReply::Granted { token: t } => frame(out, kind::GRANTED, id, token(*t)),
        WireReply::Released { token: t } => frame(out, kind::RELEASED, id, token(*t)),
        WireReply::Extended { token: t } => frame(out, kind::EXTENDED, id, token(*t)),
        WireReply::Lock { token, expires_in, waiters, owner } => frame(out, kind::LOCK, id, |o| {
            o.extend_from_slice(&token.to_le_bytes());
            o.extend_from_slice(&expires_in.unwrap_or(u64::MAX).to_le_bytes());
            o.extend_from_slice(&waiters.to_le_bytes());
            put_str(o, owner.as_bytes());
        }),
        WireReply::Lost { token, resource } => frame(out, kind::LOST, id, |o| {
            o.extend_from_slice(&token.to_le_bytes());
            put_str(o, resource.as_bytes());
        }),
        WireReply::Busy => frame(out, kind::BUSY, id, |_| {}),
        WireReply::TimedOut => frame(out, kind::TIMED_OUT, id, |_| {}),
        WireReply::QueueFull => frame(out, kind::QUEUE_FULL, id, |_| {}),
        WireReply::NotFound => frame(out, kind::NOT_FOUND, id, |_| {}),
        WireReply::NotHolder => frame(out, kind::NOT_HOLDER, id, |_| {}),
        WireReply::TokenMismatch => frame(out, kind::TOKEN_MISMATCH, id, |_| {}),
        WireReply::Unavailable => frame(out, kind::UNAVAILABLE, id, |_| {}),
        WireReply::Invalid { reason } => frame(out, kind::INVALID, id, text(reason)),
        WireReply::ProtocolError { reason } => frame(out, kind::PROTOCOL_ERROR, id, text(reason)),
        WireReply::Unauthorized => frame(out, kind::UNAUTHORIZED, id, |_| {}),
    }
}

/// Parses a whole reply frame (as measured by [`check`]) into its id and reply (the
/// client's parser).
pub fn parse_reply(frame: &[u8]) -> Result<(u32, WireReply<'_>), FrameError> {
    let (k, id, body) = split(frame);
    let mut r = Reader { rest: body };
    let reply = match k {
        kind::HELLO_OK => WireReply::HelloOk { version: r.u8()? },
        kind::SESSION_OK => {
            let (session, timeout_ms) = (r.u64()?, r.u64()?);
            let resumed = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(FrameError::Fatal("resumed is neither 0 nor 1")),
            };
            WireReply::SessionOk { session, timeout_ms, resumed }
        }
        kind::PONG => WireReply::Pong,
        kind::GRANTED => WireReply::Granted { token: r.u64()? },
        kind::RELEASED => WireReply::Released { token: r.u64()? },
        kind::EXTENDED => WireReply::Extended { token: r.u64()? },
        kind::LOCK => {
            let (token, expires, waiters) = (r.u64()?, r.u64()?, r.u32()?);
            WireReply::Lock {
                token,
                expires_in: (expires != u64::MAX).then_some(expires),
                waiters,
                owner: r.text()?,
            }
        }
        kind::LOST => WireReply::Lost { token: r.u64()?, resource: r.text()? },
        kind::BUSY => WireReply::Busy,
        kind::TIMED_OUT => WireReply::TimedOut,
        kind::QUEUE_FULL => WireReply::QueueFull,
        kind::NOT_FOUND => WireReply::NotFound,
        kind::NOT_HOLDER => WireReply::NotHolder,
        kind::TOKEN_MISMATCH => WireReply::TokenMismatch,
        kind::UNAVAILABLE => WireReply::Unavailable,
        kind::INVALID => WireReply::Invalid { reason: r.text()? },
        kind::PROTOCOL_ERROR => WireReply::ProtocolError { reason: r.text()? },
        kind::UNAUTHORIZED => WireReply::Unauthorized,
        _ => return Err(FrameError::Fatal("unknown reply kind")),
    };
    r.end()?;
    Ok((id, reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_request(bytes: &[u8]) -> Result<(u32, WireRequest<'_>), FrameError> {
        let n = check(bytes)?.expect("whole frame");
        assert_eq!(n, bytes.len());
        parse_request(bytes)
    }

    #[test]
    fn preface() {
        assert_eq!(check_preface(b""), Ok(false));
        assert_eq!(check_preface(b"\0R"), Ok(false));
        assert_eq!(check_preface(b"\0RL\x01rest"), Ok(true));
        assert_eq!(check_preface(b"\0RL\x02"), Err(FrameError::Fatal("unsupported protocol version")));
        assert_eq!(check_preface(b"\0X"), Err(FrameError::Fatal("bad preface")));
        assert_eq!(read_preface(b"\0RL"), Ok(None));
        assert_eq!(read_preface(b"\0RL\x01"), Ok(Some(1)));
        assert_eq!(read_preface(b"\0RL\x02rest"), Ok(Some(2)));
        assert_eq!(read_preface(b"\0RL\x03"), Err(FrameError::Fatal("unsupported protocol version")));
    }

    #[test]
    fn acquire_layout_byte_for_byte() {
        let req =
            WireRequest::Acquire { resource: "r1", owner: "w", ttl: Some(30_000), wait: 5, session: true };
        let mut out = Vec::new();
        encode_request(&mut out, 7, &req);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            29, 0, 0, 0,                    // length of the rest
            0x03,                           // ACQUIRE
            7, 0, 0, 0,                     // id
            0x03,                           // flags: TTL | SESSION
            0x30, 0x75, 0, 0, 0, 0, 0, 0,   // ttl 30000 ms
            5, 0, 0, 0, 0, 0, 0, 0,         // wait 5 ms
            2, 0, b'r', b'1',               // resource
            1, 0, b'w',                     // owner
        ];
        assert_eq!(out, expected);
        assert_eq!(one_request(&out), Ok((7, req)));
    }

    #[test]
    fn every_request_round_trips() {
        let reqs = [
            WireRequest::Hello { secret: b"s3cret" },
            WireRequest::HelloSession { secret: b"s3cret", session: 0, timeout_ms: 10_000 },
            WireRequest::HelloSession { secret: b"", session: u64::MAX, timeout_ms: 1 },
            WireRequest::Ping,
            WireRequest::Acquire { resource: "a", owner: "", ttl: None, wait: 0, session: false },
            WireRequest::Release { resource: "a", owner: "o", token: Some(u64::MAX) },
            WireRequest::Release { resource: "a", owner: "o", token: None },
            WireRequest::Extend { resource: "a", owner: "o", token: Some(9), ttl: Some(0) },
            WireRequest::Extend { resource: "ä", owner: "ö", token: None, ttl: None },
            WireRequest::Inspect { resource: "a/b" },
        ];
        for (id, req) in reqs.into_iter().enumerate() {
            let mut out = Vec::new();
            encode_request(&mut out, id as u32, &req);
            assert_eq!(one_request(&out), Ok((id as u32, req)));
        }
    }

    #[test]
    fn every_reply_round_trips() {
        let replies = [
            WireReply::HelloOk { version: 1 },
            WireReply::SessionOk { session: 0x1234_5678_9abc_def0, timeout_ms: 30_000, resumed: true },
            WireReply::SessionOk { session: 7, timeout_ms: 1, resumed: false },
            WireReply::Pong,
            WireReply::Granted { token: 1 },
            WireReply::Released { token: 2 },
            WireReply::Extended { token: 3 },
            WireReply::Lock { token: 4, expires_in: Some(10), waiters: 2, owner: "o" },
            WireReply::Lock { token: 4, expires_in: None, waiters: 0, owner: "" },
            WireReply::Lost { token: 5, resource: "r" },
            WireReply::Busy,
            WireReply::TimedOut,
            WireReply::QueueFull,
            WireReply::NotFound,
            WireReply::NotHolder,
            WireReply::TokenMismatch,
            WireReply::Unavailable,
            WireReply::Invalid { reason: "why" },
            WireReply::ProtocolError { reason: "bad" },
            WireReply::Unauthorized,
        ];
        for (id, reply) in replies.into_iter().enumerate() {
            let mut out = Vec::new();
            encode_reply(&mut out, id as u32, &reply);
            assert_eq!(check(&out), Ok(Some(out.len())));
            assert_eq!(parse_reply(&out), Ok((id as u32, reply)));
        }
    }

    #[test]
    fn partial_frames_are_incomplete_at_every_byte() {
        let mut out = Vec::new();
        encode_request(&mut out, 1, &WireRequest::Inspect { resource: "abc" });
        for end in 0..out.len() {
            assert_eq!(check(&out[..end]), Ok(None), "prefix of {end}");
        }
        assert_eq!(check(&out), Ok(Some(out.len())));
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(check(&[4, 0, 0, 0]), Err(FrameError::Fatal("frame shorter than its kind and id")));
        assert_eq!(check(&[1, 16, 0, 0]), Err(FrameError::Fatal("frame longer than 4096 bytes")));
        assert_eq!(
            one_request(&[5, 0, 0, 0, 0x77, 1, 0, 0, 0]),
            Err(FrameError::Fatal("unknown request kind"))
        );
        assert_eq!(
            one_request(&[6, 0, 0, 0, 0x02, 1, 0, 0, 0, 9]),
            Err(FrameError::Fatal("bytes after the frame body"))
        );
        assert_eq!(
            one_request(&[7, 0, 0, 0, 0x06, 1, 0, 0, 0, 5, 0]),
            Err(FrameError::Fatal("frame body too short"))
        );
        assert_eq!(
            one_request(&[8, 0, 0, 0, 0x06, 9, 0, 0, 0, 1, 0, 0xFF]),
            Err(FrameError::Invalid { id: 9, reason: "names must be UTF-8" })
        );
    }

    #[test]
    fn text_is_read_as_std_reads_it_ascii_or_not() {
        let cases: [&[u8]; 8] = [
            b"",
            b"lt-42",
            b"a name longer than one word",
            "caf\u{e9}".as_bytes(),
            "\u{1f512}".as_bytes(),
            &[0xFF],
            &[b'a', 0xC3],
            &[0xE2, 0x82],
        ];
        for bytes in cases {
            assert_eq!(utf8(bytes), std::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
        assert_eq!(utf8("caf\u{e9}".as_bytes()), Some("caf\u{e9}"));
        assert_eq!(utf8(&[b'a', 0xC3]), None);
    }
}
