//! ringlock's binary wire protocol (`docs/PROTOCOL.md`), spoken with ringlock's own codec
//! (`ringlock_client::frame`), so the generator encodes exactly what the Rust client
//! does. The connection opens with the preface and `HELLO` ([`handshake`], the client's
//! [`Handshake`]); acquire and release are frames, the health probe is `PING`.
//!
//! The wire protocol may answer out of order (a request for a resource of another core, or a
//! waiting acquire, answers when it is done): each request carries the connection's next
//! sequence number as its id, and a reply is matched to the request in flight with its id.

use ringlock_client::frame::{self, FrameError, WireReply, WireRequest};

use super::{Handshake, Name, ParseError, Parsed, Protocol, Reply};
use crate::op::{Op, OpKind, Outcome};

/// One connection's wire client (its `Debug` leaves the secret out).
#[derive(Clone)]
pub struct WireClient {
    /// The shared secret `HELLO` presents.
    secret: String,
    owner: String,
    ttl_ms: Option<u64>,
    wait_ms: u64,
    /// Id of the next request to send.
    next_sent: u32,
}

impl std::fmt::Debug for WireClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireClient")
            .field("owner", &self.owner)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// The preface and `HELLO`; the server answers `HELLO_OK` ([`hello_answered`]).
pub fn handshake(secret: &str) -> Vec<u8> {
    let mut out = frame::PREFACE.to_vec();
    frame::encode_request(&mut out, 0, &WireRequest::Hello { secret: secret.as_bytes() });
    out
}

/// Whether `buf` starts with the answer to [`handshake`]: `Ok(Some(len))` for `HELLO_OK`,
/// `Ok(None)` until it is all there.
pub fn hello_answered(buf: &[u8]) -> Result<Option<usize>, String> {
    match frame::check(buf).map_err(describe)? {
        None => Ok(None),
        Some(n) => match frame::parse_reply(&buf[..n]).map_err(describe)?.1 {
            WireReply::HelloOk { .. } => Ok(Some(n)),
            other => Err(format!("HELLO answered {other:?}")),
        },
    }
}

/// [`hello_answered`], with nothing after the answer: the server says no more until asked.
fn hello_answered_alone(buf: &[u8]) -> Result<Option<usize>, String> {
    match hello_answered(buf)? {
        Some(n) if buf.len() > n => Err("bytes after HELLO_OK".to_owned()),
        answered => Ok(answered),
    }
}

fn describe(e: FrameError) -> String {
    match e {
        FrameError::Fatal(why) | FrameError::Invalid { reason: why, .. } => why.to_owned(),
    }
}

impl WireClient {
    /// The client of connection `conn`: `HELLO` with the shared `secret`, owner `lt-<conn>`, a
    /// lease of `ttl_ms` on every acquire if given, and a server-side wait of `wait_ms` (0:
    /// none).
    pub fn new(secret: &str, ttl_ms: Option<u64>, wait_ms: u64, conn: usize) -> WireClient {
        WireClient {
            secret: secret.to_owned(),
            owner: Name::new(conn as u64).as_str().to_owned(),
            ttl_ms,
            wait_ms,
            // Id 0 is the server's, for pushes; the handshake used it too.
            next_sent: 1,
        }
    }
}

impl Protocol for WireClient {
    fn handshake(&self) -> Option<Handshake> {
        Some(Handshake { name: "HELLO", request: handshake(&self.secret), answered: hello_answered_alone })
    }

    fn encode(&mut self, op: &Op, out: &mut Vec<u8>) -> u32 {
        let id = self.next_sent;
        self.next_sent = self.next_sent.checked_add(1).unwrap_or(1);
        let name;
        let req = match *op {
            Op::Acquire { key } | Op::Release { key } => {
                name = Name::new(key);
                let resource = name.as_str();
                let owner = self.owner.as_str();
                match op {
                    Op::Acquire { .. } => {
                        let (ttl, wait) = (self.ttl_ms, self.wait_ms);
                        WireRequest::Acquire { resource, owner, ttl, wait, session: false }
                    }
                    _ => WireRequest::Release { resource, owner, token: None },
                }
            }
            Op::Health => WireRequest::Ping,
        };
        frame::encode_request(out, id, &req);
        id
    }

    fn parse(&self, buf: &[u8], kind_of: impl Fn(u32) -> Option<OpKind>) -> Parsed {
        let Some(n) = frame::check(buf).map_err(|_| ParseError::BadFrame)? else {
            return Ok(None);
        };
        let (id, reply) = frame::parse_reply(&buf[..n]).map_err(|_| ParseError::BadFrame)?;
        // Id 0 (a push, or the handshake's) is never a request's here.
        let kind = (id != 0).then(|| kind_of(id)).flatten().ok_or(ParseError::NoRequest)?;
        let outcome = match (kind, reply) {
            (OpKind::Acquire, WireReply::Granted { .. }) => Outcome::Granted,
            (OpKind::Acquire, WireReply::Busy | WireReply::TimedOut | WireReply::QueueFull) => {
                Outcome::Conflict
            }
            (OpKind::Release, WireReply::Released { .. }) | (OpKind::Health, WireReply::Pong) => {
                Outcome::Done
            }
            (OpKind::Release, WireReply::NotHolder | WireReply::NotFound | WireReply::TokenMismatch) => {
                Outcome::Conflict
            }
            _ => Outcome::Error,
        };
        Ok(Some(Reply { outcome, len: n, id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u32, r: &WireReply<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_reply(&mut out, id, r);
        out
    }

    #[test]
    fn requests_are_the_clients_frames_numbered_from_one() {
        let mut c = WireClient::new("s", Some(30_000), 0, 7);
        let mut out = Vec::new();
        assert_eq!(c.encode(&Op::Acquire { key: 42 }, &mut out), 1);
        assert_eq!(c.encode(&Op::Release { key: 42 }, &mut out), 2);
        assert_eq!(c.encode(&Op::Health, &mut out), 3);
        let n = frame::check(&out).unwrap().unwrap();
        assert_eq!(
            frame::parse_request(&out[..n]),
            Ok((
                1,
                WireRequest::Acquire {
                    resource: "lt-42",
                    owner: "lt-7",
                    ttl: Some(30_000),
                    wait: 0,
                    session: false
                }
            ))
        );
        let m = frame::check(&out[n..]).unwrap().unwrap();
        assert_eq!(
            frame::parse_request(&out[n..n + m]),
            Ok((2, WireRequest::Release { resource: "lt-42", owner: "lt-7", token: None }))
        );
        assert_eq!(frame::parse_request(&out[n + m..]), Ok((3, WireRequest::Ping)));
    }

    #[test]
    fn replies_classify_by_the_request_their_id_names_and_partial_frames_wait() {
        let c = WireClient::new("s", None, 0, 0);
        // In flight: 1 an acquire, 2 a release, 3 a ping; 7 was never sent.
        let kind_of = |id| match id {
            1 => Some(OpKind::Acquire),
            2 => Some(OpKind::Release),
            3 => Some(OpKind::Health),
            _ => None,
        };
        let outcome = |buf: &[u8]| c.parse(buf, kind_of).unwrap().unwrap().outcome;
        let granted = reply(1, &WireReply::Granted { token: 9 });
        for cut in 0..granted.len() {
            assert_eq!(c.parse(&granted[..cut], kind_of), Ok(None));
        }
        assert_eq!(
            c.parse(&granted, kind_of),
            Ok(Some(Reply { outcome: Outcome::Granted, len: granted.len(), id: 1 }))
        );
        // Any order: the ping's answer before the release's.
        assert_eq!(c.parse(&reply(3, &WireReply::Pong), kind_of).unwrap().unwrap().id, 3);
        assert_eq!(outcome(&reply(1, &WireReply::Busy)), Outcome::Conflict);
        assert_eq!(outcome(&reply(1, &WireReply::TimedOut)), Outcome::Conflict);
        assert_eq!(outcome(&reply(2, &WireReply::NotHolder)), Outcome::Conflict);
        assert_eq!(outcome(&reply(2, &WireReply::Released { token: 9 })), Outcome::Done);
        assert_eq!(outcome(&reply(3, &WireReply::Pong)), Outcome::Done);
        // A reply of the wrong kind for its request.
        assert_eq!(outcome(&reply(2, &WireReply::Granted { token: 9 })), Outcome::Error);
        assert_eq!(outcome(&reply(1, &WireReply::Invalid { reason: "x" })), Outcome::Error);
        assert_eq!(c.parse(&reply(7, &WireReply::Pong), kind_of), Err(ParseError::NoRequest));
        assert_eq!(
            c.parse(&reply(0, &WireReply::Pong), |_| Some(OpKind::Health)),
            Err(ParseError::NoRequest)
        );
        assert_eq!(c.parse(&[1, 0, 0, 0, 0], kind_of), Err(ParseError::BadFrame));
    }

    #[test]
    fn the_handshake() {
        let h = handshake("s");
        assert!(h.starts_with(&frame::PREFACE));
        assert_eq!(hello_answered(&reply(0, &WireReply::HelloOk { version: 1 })[..3]), Ok(None));
        assert_eq!(hello_answered(&reply(0, &WireReply::HelloOk { version: 1 })), Ok(Some(10)));
        assert!(hello_answered(&reply(0, &WireReply::Unauthorized)).unwrap_err().contains("Unauthorized"));
    }

    #[test]
    fn every_client_opens_with_hello_answered_by_hello_ok_alone() {
        let h = WireClient::new("s3cret", None, 0, 4).handshake().unwrap();
        assert_eq!(h.name, "HELLO");
        assert_eq!(h.request, handshake("s3cret"));
        let ok = reply(0, &WireReply::HelloOk { version: 1 });
        assert_eq!((h.answered)(&ok[..3]), Ok(None));
        assert_eq!((h.answered)(&ok), Ok(Some(10)));
        let mut more = ok.clone();
        more.push(0);
        assert_eq!((h.answered)(&more), Err("bytes after HELLO_OK".to_owned()));
        assert!((h.answered)(&reply(0, &WireReply::Unauthorized)).unwrap_err().contains("Unauthorized"));
    }
}
