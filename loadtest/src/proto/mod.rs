//! Requests to bytes and bytes to replies, one implementation of [`Protocol`] per target:
//! [`http`] (the JSON API of ringlock and the reference server, and its health probe),
//! [`wire`] (ringlock's binary protocol) and [`redis`] (the standard Redis lock over RESP).
//! Each also owns its connection's opening exchange, if it has one (a [`Handshake`]: the wire
//! protocol's `HELLO`, Redis's `SCRIPT LOAD` of the release script), so that the runner never
//! asks which target it drives.
//!
//! [`etcd`] is the exception: gRPC is no byte protocol the runner could frame, so its module
//! holds only the pure part (which transaction each request is, what its answer means), and
//! the run drives it through `etcd-client` with a connection driver of its own.
//!
//! Parsers are pure and incremental: given the bytes read so far they return the first reply
//! and its length, `Ok(None)` when it is not all there yet, or a [`ParseError`] when the bytes
//! cannot be a reply (which ends the connection: nothing after it can be trusted). Requests
//! are appended to the caller's buffer with numbers spelled by `itoa` on the stack, so that
//! encoding one allocates nothing.

pub mod etcd;
pub mod http;
pub mod redis;
pub mod wire;

use std::fmt;

use crate::op::{Op, OpKind, Outcome};

/// One parsed reply: its outcome, how many bytes of the buffer it took, and which request it
/// answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What the reply means for the request it answers.
    pub outcome: Outcome,
    /// Bytes consumed, head and body.
    pub len: usize,
    /// The id of the request it answers ([`IN_ORDER`]: the oldest in flight).
    pub id: u32,
}

/// What parsing the first reply in a buffer gives: the reply, `None` until it is all there, or
/// bytes that cannot be one.
pub type Parsed = Result<Option<Reply>, ParseError>;

/// The id of every request of a protocol that answers in request order (HTTP/1.1, RESP): its
/// reply answers the oldest request in flight. The wire protocol numbers its requests from 1.
pub const IN_ORDER: u32 = 0;

/// Bytes that cannot be a reply (or, for the responder, a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// An HTTP head longer than [`http::MAX_HEAD_BYTES`], or a RESP line longer than
    /// [`redis::MAX_LINE_BYTES`].
    TooLong,
    /// The first line is not `HTTP/1.x NNN ...`.
    BadStatusLine,
    /// A header line without a colon.
    BadHeader,
    /// A `content-length` that is not a number, is too large, or is given twice differently.
    BadContentLength,
    /// A response with a body but no `content-length` (the servers here always send one).
    MissingContentLength,
    /// `transfer-encoding`, which none of the servers here use.
    Chunked,
    /// A RESP frame starting with a byte that is no RESP type.
    BadType(u8),
    /// A RESP length or integer that is not a number, or out of range.
    BadNumber,
    /// A RESP line, or bulk string data, not ended by CRLF.
    BadLineEnd,
    /// RESP arrays nested deeper than [`redis::MAX_DEPTH`].
    TooDeep,
    /// Bytes that are no wire-protocol reply frame.
    BadFrame,
    /// A reply to no request in flight (a wire reply whose id was never sent, or is answered).
    NoRequest,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooLong => f.write_str("reply head or line too long"),
            ParseError::BadStatusLine => f.write_str("bad HTTP status line"),
            ParseError::BadHeader => f.write_str("bad HTTP header line"),
            ParseError::BadContentLength => f.write_str("bad content-length"),
            ParseError::MissingContentLength => f.write_str("HTTP reply without content-length"),
            ParseError::Chunked => f.write_str("transfer-encoding is not supported"),
            ParseError::BadType(b) => write!(f, "bad RESP type byte 0x{b:02x}"),
            ParseError::BadNumber => f.write_str("bad RESP number"),
            ParseError::BadLineEnd => f.write_str("RESP line or bulk string not ended by CRLF"),
            ParseError::TooDeep => f.write_str("RESP arrays nested too deep"),
            ParseError::BadFrame => f.write_str("bad wire-protocol frame"),
            ParseError::NoRequest => f.write_str("a reply to no request in flight"),
        }
    }
}

/// A connection's opening exchange, before its first request: the bytes to send and a pure,
/// incremental check of the answer. The runner does the I/O, once per connection before the
/// run starts; a failed exchange stops the run before it begins.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// What errors call the exchange: `HELLO`, `SCRIPT LOAD`.
    pub name: &'static str,
    /// The bytes to send.
    pub request: Vec<u8>,
    /// Checks the bytes read so far: `Ok(Some(len))` once the expected answer is all there,
    /// `Ok(None)` until then, and why not if they are anything else.
    pub answered: fn(&[u8]) -> Result<Option<usize>, String>,
}

/// One connection's view of a target: it knows the connection's owner name and the lease to
/// ask for, opens the connection, writes requests and reads replies.
pub trait Protocol {
    /// What this connection sends once, before any request, and waits for the answer to;
    /// `None` if it starts with its first request.
    fn handshake(&self) -> Option<Handshake>;

    /// Appends the bytes of `op` to `out`; returns the id its reply will carry ([`IN_ORDER`]
    /// for a protocol that answers in order).
    fn encode(&mut self, op: &Op, out: &mut Vec<u8>) -> u32;

    /// Parses the first reply in `buf`. `kind_of(id)` is the kind of the request in flight
    /// with that id (for [`IN_ORDER`], the oldest), or `None` if there is none.
    fn parse(&self, buf: &[u8], kind_of: impl Fn(u32) -> Option<OpKind>) -> Parsed;
}

/// The reply of a protocol that answers in order, from the first reply's length and what
/// classifies it (`None` until it is all there): it answers the oldest request in flight.
pub fn in_order<T>(
    framed: Option<(usize, T)>,
    kind_of: impl Fn(u32) -> Option<OpKind>,
    classify: impl FnOnce(T, OpKind) -> Outcome,
) -> Parsed {
    let Some((len, what)) = framed else { return Ok(None) };
    let kind = kind_of(IN_ORDER).ok_or(ParseError::NoRequest)?;
    Ok(Some(Reply { outcome: classify(what, kind), len, id: IN_ORDER }))
}

/// The prefix of every key and owner name the generator uses: `lt-<n>`.
pub const NAME_PREFIX: &[u8] = b"lt-";

/// The longest name: the prefix and the 20 digits of `u64::MAX`.
pub const MAX_NAME_BYTES: usize = NAME_PREFIX.len() + 20;

/// The name `lt-<n>`, spelled on the stack (the digits by `itoa`): a protocol that writes a
/// name's length before the name formats the number once, and allocates nothing.
#[derive(Clone, Copy)]
pub struct Name {
    bytes: [u8; MAX_NAME_BYTES],
    len: usize,
}

impl Name {
    /// The name `lt-<n>`.
    pub fn new(n: u64) -> Name {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        let len = NAME_PREFIX.len() + digits.len();
        let mut bytes = [0; MAX_NAME_BYTES];
        bytes[..NAME_PREFIX.len()].copy_from_slice(NAME_PREFIX);
        bytes[NAME_PREFIX.len()..len].copy_from_slice(digits);
        Name { bytes, len }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("names are ASCII")
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Name").field(&self.as_str()).finish()
    }
}

/// Appends the decimal digits of `n`.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// How many decimal digits `n` has.
pub fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Appends the name `lt-<n>`.
pub fn push_name(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(NAME_PREFIX);
    push_u64(out, n);
}

/// The length of the name `lt-<n>`.
pub fn name_len(n: u64) -> usize {
    NAME_PREFIX.len() + digits(n)
}

/// Most bytes of a reply [`describe_reply`] shows: as many as a report keeps of an error's
/// text, and never a whole read buffer turned into text.
pub const MAX_DESCRIBED_BYTES: usize = 160;

/// Describes a reply from its raw bytes, for an error message: CR and LF and other control
/// bytes (a binary frame's) made visible.
pub fn describe_reply(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(MAX_DESCRIBED_BYTES)];
    let mut out = String::with_capacity(shown.len());
    for c in String::from_utf8_lossy(shown).chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_u64_writes_decimal() {
        for (n, s) in
            [(0, "0"), (7, "7"), (10, "10"), (1234567890, "1234567890"), (u64::MAX, "18446744073709551615")]
        {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{s}").as_bytes());
            assert_eq!(digits(n), s.len());
        }
    }

    #[test]
    fn names_are_lt_dash_number() {
        let mut out = Vec::new();
        push_name(&mut out, 42);
        assert_eq!(out, b"lt-42");
        assert_eq!(name_len(42), 5);
        assert_eq!(name_len(0), 4);
    }

    #[test]
    fn names_spelled_on_the_stack_match_the_appended_ones() {
        for n in [0, 9, 10, 42, 1234567, u64::MAX] {
            let mut out = Vec::new();
            push_name(&mut out, n);
            let name = Name::new(n);
            assert_eq!(name.as_bytes(), out, "{n}");
            assert_eq!(name.as_str().len(), name_len(n));
        }
        assert_eq!(Name::new(u64::MAX).as_str(), "lt-18446744073709551615");
        assert_eq!(Name::new(u64::MAX).as_bytes().len(), MAX_NAME_BYTES);
        assert_eq!(format!("{:?}", Name::new(7)), "Name(\"lt-7\")");
    }

    #[test]
    fn error_replies_are_described_with_visible_line_ends() {
        assert_eq!(
            describe_reply(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"),
            "HTTP/1.1 401 Unauthorized\\r\\ncontent-length: 0\\r\\n\\r\\n"
        );
        assert_eq!(describe_reply(b"\x0d\0\0\0\x83ok\xff"), "\\r\\x00\\x00\\x00\u{fffd}ok\u{fffd}");
    }
}
