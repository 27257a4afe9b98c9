//! Requests to bytes and bytes to replies, one implementation of [`Protocol`] per target:
//! [`http`] (the JSON API of ringlock and the reference server, and its health probe),
//! [`wire`] (ringlock's binary protocol) and [`redis`] (the standard Redis lock over RESP).
//!
//! Parsers are pure and incremental: given the bytes read so far they return the first reply
//! and its length, `Ok(None)` when it is not all there yet, or a [`ParseError`] when the bytes
//! cannot be a reply (which ends the connection: nothing after it can be trusted).

pub mod http;
pub mod redis;
pub mod wire;

use std::fmt;

use crate::workload::{Op, OpKind};

/// How a server answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An acquire that got the lock.
    Granted,
    /// A lock request refused because of another owner (or no owner): 409, Redis nil or `:0`.
    Conflict,
    /// A release or health probe that succeeded.
    Done,
    /// Anything else: a 4xx other than 409, a 5xx, a Redis error, a reply of the wrong type.
    Error,
}

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

/// One connection's view of a target: it knows the connection's owner name and the lease to
/// ask for, writes requests and reads replies.
pub trait Protocol {
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

/// Appends the decimal digits of `n`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
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
}
