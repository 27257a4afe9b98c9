//! The standard Redis lock over RESP2: acquire is `SET key owner NX PX ttl`, release is a
//! compare-and-delete script run by `EVALSHA`, which one connection loads (`SCRIPT LOAD`, its
//! [`Handshake`]) before a run that releases. Encoding requests, and a pure incremental
//! parser of RESP frames (replies for the generator, commands for the responder) that returns
//! offsets into the buffer, never borrows.

use memchr::memchr;

use super::{Handshake, IN_ORDER, Name, ParseError, Parsed, Protocol, describe_reply, in_order, push_u64};
use crate::op::{Op, OpKind, Outcome};

/// Longest line (a simple string, an error, a length or an integer) accepted: Redis's own
/// error messages are under 200 bytes.
pub const MAX_LINE_BYTES: usize = 4 * 1024;

/// Largest bulk string accepted: lock names, owners and script digests are tens of bytes.
pub const MAX_BULK_BYTES: usize = 64 * 1024;

/// Deepest nesting of arrays accepted; the lock commands never nest.
pub const MAX_DEPTH: usize = 4;

/// Most elements accepted in one array.
pub const MAX_ARRAY_LEN: usize = 1024;

/// The release: delete the key only if it still holds our owner name. Its SHA-1 is
/// [`RELEASE_SHA1`]; `SCRIPT LOAD` returns it, which the run checks before it starts.
pub const RELEASE_SCRIPT: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/// The SHA-1 of [`RELEASE_SCRIPT`] (`printf '%s' "$script" | sha1sum`).
pub const RELEASE_SHA1: &str = "b998f9dfb154cdbea8cda65ad5177aadf0e945a2";

/// A lease when the run gives none: a Redis lock without expiry is not the standard pattern.
pub const DEFAULT_TTL_MS: u64 = 30_000;

/// One RESP value, with offsets into the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+text`.
    Simple {
        /// Where the text starts in the buffer.
        start: usize,
        /// Where it ends (before CRLF).
        end: usize,
    },
    /// `-message`.
    Error {
        /// Where the message starts in the buffer.
        start: usize,
        /// Where it ends (before CRLF).
        end: usize,
    },
    /// `:n`.
    Integer(i64),
    /// `$-1` or `*-1`.
    Nil,
    /// `$n` followed by n bytes.
    Bulk {
        /// Where the data starts in the buffer.
        start: usize,
        /// Where it ends (before CRLF).
        end: usize,
    },
    /// `*n` followed by n values (skipped).
    Array(usize),
}

/// A complete RESP frame at the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The top-level value.
    pub value: Value,
    /// Bytes of the whole frame, nested values included.
    pub len: usize,
}

/// Parses the first frame in `buf`: `Ok(None)` until all of it is there.
pub fn parse(buf: &[u8]) -> Result<Option<Frame>, ParseError> {
    Ok(value_at(buf, 0, 0)?.map(|(value, len)| Frame { value, len }))
}

/// The line that starts at `start`: the end of its text (before CRLF) and where the next
/// line begins.
fn line(buf: &[u8], start: usize) -> Result<Option<(usize, usize)>, ParseError> {
    let window = &buf[start..buf.len().min(start + MAX_LINE_BYTES)];
    match memchr(b'\n', window) {
        Some(i) if i > 0 && window[i - 1] == b'\r' => Ok(Some((start + i - 1, start + i + 1))),
        Some(_) => Err(ParseError::BadLineEnd),
        None if window.len() == MAX_LINE_BYTES => Err(ParseError::TooLong),
        None => Ok(None),
    }
}

/// A decimal integer with an optional minus sign.
fn number(text: &[u8]) -> Result<i64, ParseError> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadNumber);
    }
    let n = digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Ok(if negative { -n } else { n })
}

/// The value that starts at `start`, and where it ends.
fn value_at(buf: &[u8], start: usize, depth: usize) -> Result<Option<(Value, usize)>, ParseError> {
    let Some(&kind) = buf.get(start) else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(ParseError::BadType(kind));
    }
    let Some((end, next)) = line(buf, start + 1)? else {
        return Ok(None);
    };
    let text = start + 1..end;
    match kind {
        b'+' => Ok(Some((Value::Simple { start: text.start, end: text.end }, next))),
        b'-' => Ok(Some((Value::Error { start: text.start, end: text.end }, next))),
        b':' => Ok(Some((Value::Integer(number(&buf[text])?), next))),
        b'$' => match number(&buf[text])? {
            -1 => Ok(Some((Value::Nil, next))),
            n if n < 0 || n as usize > MAX_BULK_BYTES => Err(ParseError::BadNumber),
            n => {
                let data_end = next + n as usize;
                let Some(crlf) = buf.get(data_end..data_end + 2) else {
                    return Ok(None);
                };
                if crlf != b"\r\n" {
                    return Err(ParseError::BadLineEnd);
                }
                Ok(Some((Value::Bulk { start: next, end: data_end }, data_end + 2)))
            }
        },
        _ => match number(&buf[text])? {
            -1 => Ok(Some((Value::Nil, next))),
            n if n < 0 || n as usize > MAX_ARRAY_LEN => Err(ParseError::BadNumber),
            n => {
                if depth + 1 > MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                let mut at = next;
                for _ in 0..n {
                    match value_at(buf, at, depth + 1)? {
                        Some((_, after)) => at = after,
                        None => return Ok(None),
                    }
                }
                Ok(Some((Value::Array(n as usize), at)))
            }
        },
    }
}

/// What reply `value` (parsed from `buf`) means for a request of kind `kind`.
pub fn classify(buf: &[u8], value: Value, kind: OpKind) -> Outcome {
    match (kind, value) {
        (OpKind::Acquire, Value::Simple { start, end }) if &buf[start..end] == b"OK" => Outcome::Granted,
        (OpKind::Acquire, Value::Nil) => Outcome::Conflict,
        (OpKind::Release, Value::Integer(1)) => Outcome::Done,
        (OpKind::Release, Value::Integer(0)) => Outcome::Conflict,
        (OpKind::Health, Value::Simple { .. }) => Outcome::Done,
        _ => Outcome::Error,
    }
}

/// Appends a bulk string.
fn push_bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    push_u64(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the bulk string `lt-<n>`.
fn push_name_bulk(out: &mut Vec<u8>, n: u64) {
    push_bulk(out, Name::new(n).as_bytes());
}

/// `SCRIPT LOAD` of [`RELEASE_SCRIPT`]: its reply is the bulk string [`RELEASE_SHA1`].
pub fn script_load_request() -> Vec<u8> {
    let mut out = b"*3\r\n".to_vec();
    push_bulk(&mut out, b"SCRIPT");
    push_bulk(&mut out, b"LOAD");
    push_bulk(&mut out, RELEASE_SCRIPT.as_bytes());
    out
}

/// Whether `buf` starts with the answer to [`script_load_request`]: `Ok(Some(len))` for the
/// bulk string [`RELEASE_SHA1`], the digest the `EVALSHA` requests name; `Ok(None)` until it
/// is all there.
pub fn script_loaded(buf: &[u8]) -> Result<Option<usize>, String> {
    let sha = RELEASE_SHA1.as_bytes();
    match parse(buf).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(Frame { value: Value::Bulk { start, end }, len }) if &buf[start..end] == sha => Ok(Some(len)),
        Some(_) => Err(format!("unexpected reply {}", describe_reply(buf))),
    }
}

/// `PING`, the health probe of a Redis target.
pub const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// One connection's Redis client: commands pre-built around the key.
#[derive(Clone, Debug)]
pub struct RedisClient {
    /// `$len\r\nlt-<conn>\r\n$2\r\nNX\r\n$2\r\nPX\r\n$len\r\n<ttl>\r\n`: SET after the key.
    set_tail: Vec<u8>,
    /// `$len\r\nlt-<conn>\r\n`: EVALSHA after the key.
    owner: Vec<u8>,
    /// Whether this connection loads the release script before the run.
    loads_script: bool,
}

/// `SET` with four arguments, up to the key.
const SET_HEAD: &[u8] = b"*6\r\n$3\r\nSET\r\n";

impl RedisClient {
    /// The client of connection `conn`, asking for leases of `ttl_ms` milliseconds.
    pub fn new(ttl_ms: u64, conn: usize) -> RedisClient {
        let mut owner = Vec::new();
        push_name_bulk(&mut owner, conn as u64);
        let mut set_tail = owner.clone();
        set_tail.extend_from_slice(b"$2\r\nNX\r\n$2\r\nPX\r\n");
        push_bulk(&mut set_tail, itoa::Buffer::new().format(ttl_ms).as_bytes());
        RedisClient { set_tail, owner, loads_script: false }
    }

    /// This client, loading the release script before the run if `load`. One connection of a
    /// run that releases needs to (Redis keeps a script for all its connections); a run that
    /// never releases needs none, and may be against a server that has no scripts at all.
    pub fn loading_release_script(self, load: bool) -> RedisClient {
        RedisClient { loads_script: load, ..self }
    }
}

/// `EVALSHA <sha> 1`, up to the key.
const EVALSHA_HEAD: &[u8] =
    b"*5\r\n$7\r\nEVALSHA\r\n$40\r\nb998f9dfb154cdbea8cda65ad5177aadf0e945a2\r\n$1\r\n1\r\n";

impl Protocol for RedisClient {
    fn handshake(&self) -> Option<Handshake> {
        self.loads_script.then(|| Handshake {
            name: "SCRIPT LOAD",
            request: script_load_request(),
            answered: script_loaded,
        })
    }

    fn encode(&mut self, op: &Op, out: &mut Vec<u8>) -> u32 {
        match *op {
            Op::Acquire { key } => {
                out.extend_from_slice(SET_HEAD);
                push_name_bulk(out, key);
                out.extend_from_slice(&self.set_tail);
            }
            Op::Release { key } => {
                out.extend_from_slice(EVALSHA_HEAD);
                push_name_bulk(out, key);
                out.extend_from_slice(&self.owner);
            }
            Op::Health => out.extend_from_slice(PING),
        }
        IN_ORDER
    }

    fn parse(&self, buf: &[u8], kind_of: impl Fn(u32) -> Option<OpKind>) -> Parsed {
        in_order(parse(buf)?.map(|f| (f.len, f.value)), kind_of, |v, kind| classify(buf, v, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(value: Value, len: usize) -> Result<Option<Frame>, ParseError> {
        Ok(Some(Frame { value, len }))
    }

    #[test]
    fn the_evalsha_head_names_the_release_script() {
        let sha = format!("$40\r\n{RELEASE_SHA1}\r\n");
        assert!(std::str::from_utf8(EVALSHA_HEAD).unwrap().contains(&sha));
    }

    #[test]
    fn replies_of_every_type_parse_exactly() {
        assert_eq!(parse(b"+OK\r\n"), frame(Value::Simple { start: 1, end: 3 }, 5));
        assert_eq!(parse(b"-ERR wrong\r\n"), frame(Value::Error { start: 1, end: 10 }, 12));
        assert_eq!(parse(b":1\r\n"), frame(Value::Integer(1), 4));
        assert_eq!(parse(b":0\r\n"), frame(Value::Integer(0), 4));
        assert_eq!(parse(b":-42\r\n"), frame(Value::Integer(-42), 6));
        assert_eq!(parse(b"$-1\r\n"), frame(Value::Nil, 5));
        assert_eq!(parse(b"*-1\r\n"), frame(Value::Nil, 5));
        assert_eq!(parse(b"$0\r\n\r\n"), frame(Value::Bulk { start: 4, end: 4 }, 6));
        assert_eq!(parse(b"$3\r\nabc\r\n"), frame(Value::Bulk { start: 4, end: 7 }, 9));
        assert_eq!(parse(b"*0\r\n"), frame(Value::Array(0), 4));
        assert_eq!(parse(b"*2\r\n$3\r\nabc\r\n:7\r\n"), frame(Value::Array(2), 17));
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let replies: [&[u8]; 7] = [
            b"+OK\r\n",
            b"-ERR unknown command 'X'\r\n",
            b":1\r\n",
            b"$-1\r\n",
            b"$40\r\nb998f9dfb154cdbea8cda65ad5177aadf0e945a2\r\n",
            b"*2\r\n*1\r\n+a\r\n$2\r\nbc\r\n",
            PING,
        ];
        for r in replies {
            for cut in 0..r.len() {
                assert_eq!(parse(&r[..cut]), Ok(None), "{r:?} cut at {cut}");
            }
            assert_eq!(parse(r).unwrap().unwrap().len, r.len());
        }
    }

    #[test]
    fn pipelined_replies_are_taken_one_at_a_time() {
        let buf = b"+OK\r\n:1\r\n$-1\r\n:0\r\n-NOSCRIPT No matching script\r\n+O";
        let mut at = 0;
        let mut got = Vec::new();
        while let Some(f) = parse(&buf[at..]).unwrap() {
            got.push((f.value, f.len));
            at += f.len;
        }
        assert_eq!(
            got,
            [
                (Value::Simple { start: 1, end: 3 }, 5),
                (Value::Integer(1), 4),
                (Value::Nil, 5),
                (Value::Integer(0), 4),
                (Value::Error { start: 1, end: 28 }, 30),
            ]
        );
        assert_eq!(&buf[at..], b"+O");
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), Err(ParseError::BadType(b'H')));
        assert_eq!(parse(b":1\n"), Err(ParseError::BadLineEnd));
        assert_eq!(parse(b":x\r\n"), Err(ParseError::BadNumber));
        assert_eq!(parse(b":\r\n"), Err(ParseError::BadNumber));
        assert_eq!(parse(b"$-2\r\n"), Err(ParseError::BadNumber));
        assert_eq!(parse(b"$3\r\nabcd\r\n"), Err(ParseError::BadLineEnd));
        assert_eq!(parse(b"$65537\r\n"), Err(ParseError::BadNumber));
        assert_eq!(parse(b"*1025\r\n"), Err(ParseError::BadNumber));
        assert_eq!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"), Err(ParseError::TooDeep));
        assert_eq!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").unwrap().unwrap().len, 20);
    }

    #[test]
    fn a_line_without_end_is_too_long_only_at_the_limit() {
        let mut buf = b"+".to_vec();
        buf.resize(MAX_LINE_BYTES, b'a');
        assert_eq!(parse(&buf), Ok(None));
        buf.push(b'a');
        assert_eq!(parse(&buf), Err(ParseError::TooLong));
    }

    #[test]
    fn replies_classify_by_request_kind() {
        let c = RedisClient::new(1000, 0);
        let outcome = |buf: &[u8], kind| c.parse(buf, |_| Some(kind)).unwrap().unwrap().outcome;
        assert_eq!(outcome(b"+OK\r\n", OpKind::Acquire), Outcome::Granted);
        assert_eq!(outcome(b"$-1\r\n", OpKind::Acquire), Outcome::Conflict);
        assert_eq!(outcome(b"+QUEUED\r\n", OpKind::Acquire), Outcome::Error);
        assert_eq!(outcome(b"-ERR x\r\n", OpKind::Acquire), Outcome::Error);
        assert_eq!(outcome(b":1\r\n", OpKind::Release), Outcome::Done);
        assert_eq!(outcome(b":0\r\n", OpKind::Release), Outcome::Conflict);
        assert_eq!(outcome(b":2\r\n", OpKind::Release), Outcome::Error);
        assert_eq!(outcome(b"-NOSCRIPT No matching script\r\n", OpKind::Release), Outcome::Error);
        assert_eq!(outcome(b"+PONG\r\n", OpKind::Health), Outcome::Done);
        assert_eq!(outcome(b"+OK\r\n", OpKind::Release), Outcome::Error);
    }

    #[test]
    fn set_evalsha_and_ping_encode_exactly() {
        let mut c = RedisClient::new(30_000, 7);
        let mut out = Vec::new();
        c.encode(&Op::Acquire { key: 42 }, &mut out);
        assert_eq!(
            out,
            b"*6\r\n$3\r\nSET\r\n$5\r\nlt-42\r\n$4\r\nlt-7\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n30000\r\n"
        );
        out.clear();
        c.encode(&Op::Release { key: 42 }, &mut out);
        assert_eq!(
            out,
            b"*5\r\n$7\r\nEVALSHA\r\n$40\r\nb998f9dfb154cdbea8cda65ad5177aadf0e945a2\r\n\
              $1\r\n1\r\n$5\r\nlt-42\r\n$4\r\nlt-7\r\n"
        );
        out.clear();
        c.encode(&Op::Health, &mut out);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn encoded_commands_parse_as_arrays() {
        let mut c = RedisClient::new(5, 123);
        let mut out = Vec::new();
        c.encode(&Op::Acquire { key: 0 }, &mut out);
        let set = out.len();
        c.encode(&Op::Release { key: 0 }, &mut out);
        assert_eq!(parse(&out), frame(Value::Array(6), set));
        assert_eq!(parse(&out[set..]).unwrap().unwrap().value, Value::Array(5));
        let load = script_load_request();
        assert_eq!(parse(&load), frame(Value::Array(3), load.len()));
        assert!(load.starts_with(b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$93\r\nif redis.call"));
    }

    #[test]
    fn the_script_load_is_the_handshake_of_the_one_client_asked_to_load_it() {
        assert!(RedisClient::new(1000, 0).handshake().is_none());
        assert!(RedisClient::new(1000, 0).loading_release_script(false).handshake().is_none());
        let h = RedisClient::new(1000, 0).loading_release_script(true).handshake().unwrap();
        assert_eq!(h.name, "SCRIPT LOAD");
        assert_eq!(h.request, script_load_request());
        // The request bytes are unchanged by loading: the handshake is all that differs.
        let (mut plain, mut loading) =
            (RedisClient::new(5, 3), RedisClient::new(5, 3).loading_release_script(true));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for op in [Op::Acquire { key: 1 }, Op::Release { key: 1 }, Op::Health] {
            plain.encode(&op, &mut a);
            loading.encode(&op, &mut b);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn the_script_load_is_answered_by_the_release_scripts_digest() {
        let sha = format!("$40\r\n{RELEASE_SHA1}\r\n");
        for cut in 0..sha.len() {
            assert_eq!(script_loaded(&sha.as_bytes()[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(script_loaded(sha.as_bytes()), Ok(Some(47)));
        let other = b"$40\r\n0000000000000000000000000000000000000000\r\n";
        assert_eq!(
            script_loaded(other),
            Err("unexpected reply $40\\r\\n0000000000000000000000000000000000000000\\r\\n".to_string())
        );
        assert_eq!(script_loaded(b"+OK\r\n"), Err("unexpected reply +OK\\r\\n".to_string()));
        assert_eq!(script_loaded(b"HTTP/1.1"), Err("bad RESP type byte 0x48".to_string()));
    }
}
