//! The HTTP endpoints' answers: the one place that says how a protocol-neutral [`Reply`], a
//! routing [`Refusal`] or a head that cannot be served reads as HTTP, byte for byte as the
//! reference server for its endpoints. Builds [`Response`]s; [`super::response`] encodes them.

use serde::Serialize;

use crate::api::{Reply, merge_lists};
use crate::cluster::MembershipError;
use crate::metrics::{self, CoreStats};
use crate::shard::{Cap, Listed};

use super::head::HeadError;
use super::response::{Body, Response, Status};
use super::route::{Endpoint, Refusal};

/// Bodies the reference server sends, and ours in its style.
pub const OK: &str = "OK";
pub const LOCKED: &str = "ERR Resource is already locked";
pub const NOT_LOCKED: &str = "ERR Resource not found";
pub const TOKEN_MISMATCH: &str = "ERR Token mismatch";
pub const QUEUE_FULL: &str = "ERR Too many waiters";
pub const NO_LEADER: &str = "ERR No leader: the cluster is electing one; try again";
pub const UNAVAILABLE: &str = "ERR Storage unavailable: the server cannot write its log now; try again later";
pub const UNAUTHORIZED: &str = "Missing or invalid secret";
pub const NOT_CLUSTERED: &str = "ERR Not a cluster member: this server runs alone";
pub const TOO_MANY_LOCKS: &str =
    "ERR Too many locks: the server holds its limit (--max-locks); try again later";
pub const TOO_MANY_WAITERS: &str =
    "ERR Too many waiters: the server queues its limit (--max-waiters); try again later";

/// `GET /health`.
pub fn health() -> Response {
    Response::text(Status::Ok, OK)
}

/// A request routing refused.
pub fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::NotFound => Response::text(Status::NotFound, "Not Found"),
        Refusal::MethodNotAllowed { allow } => {
            Response { allow: Some(allow), ..Response::text(Status::MethodNotAllowed, "Method Not Allowed") }
        }
        Refusal::Unauthorized => Response::text(Status::Unauthorized, UNAUTHORIZED),
        Refusal::BadRequest(reason) => {
            Response::error(Status::BadRequest, format!("ERR Bad request: {reason}"))
        }
    }
}

/// A request whose body is over the limit; the connection closes after it.
pub fn too_large() -> Response {
    Response::text(Status::PayloadTooLarge, "ERR Request body too large").closing()
}

/// A request begun and not finished within the header timeout; the connection closes after it.
pub fn timed_out() -> Response {
    Response::text(Status::RequestTimeout, "ERR Request timeout").closing()
}

/// A head that cannot be served; the connection closes after it.
pub fn bad_head(e: HeadError) -> Response {
    let (status, reason) = match e {
        HeadError::Malformed(why) => (Status::BadRequest, format!("ERR Bad request: {why}")),
        HeadError::BadLength => (Status::BadRequest, "ERR Bad request: invalid Content-Length".into()),
        HeadError::Chunked => {
            (Status::LengthRequired, "ERR Transfer-Encoding is not supported; send Content-Length".into())
        }
        HeadError::TargetTooLong => (Status::UriTooLong, "ERR Request target too long".into()),
        HeadError::TooLarge => (Status::HeaderFieldsTooLarge, "ERR Request head too large".into()),
        HeadError::Version => {
            (Status::VersionNotSupported, "ERR Only HTTP/1.0 and HTTP/1.1 are served".into())
        }
    };
    Response::error(status, reason).closing()
}

/// A waiting acquire withdrawn because the server is shutting down.
pub fn shutting_down() -> Response {
    Response::text(Status::ServiceUnavailable, "ERR Server shutting down")
}

/// The JSON form of a lock (`GET /locks/...`).
#[derive(Serialize)]
struct LockView<'a> {
    resource: &'a str,
    owner: &'a str,
    token: u64,
    /// Ms left of the lease; `null` for a lease without expiry.
    expires_in_ms: Option<u64>,
    waiters: usize,
}

impl<'a> From<&'a Listed> for LockView<'a> {
    fn from(l: &'a Listed) -> Self {
        LockView {
            resource: &l.resource,
            owner: &l.owner,
            token: l.token,
            expires_in_ms: l.expires_in,
            waiters: l.waiters,
        }
    }
}

#[derive(Serialize)]
struct ListView<'a> {
    locks: Vec<LockView<'a>>,
    /// Pass as `after` to get the next page; `null` on the last page.
    next: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorView<'a> {
    error: &'a str,
}

/// How `reply` reads as the answer to a request on `endpoint`.
pub fn lock_reply(endpoint: Endpoint, reply: &Reply) -> Response {
    use Status::{Conflict, NotFound, Ok};
    let granted = |token: u64| Response { token: Some(token), ..Response::text(Ok, OK) };
    match (endpoint, reply) {
        (Endpoint::Acquire, Reply::Granted { token }) => granted(*token),
        (Endpoint::Release, Reply::Done { .. }) => Response::text(Ok, OK),
        // The token of the lease it ended, so the operator knows which one went.
        (Endpoint::ForceRelease, Reply::Done { token }) => granted(*token),
        (Endpoint::Extend, Reply::Done { token }) => granted(*token),
        (_, Reply::Busy | Reply::TimedOut | Reply::NotHolder) => Response::text(Conflict, LOCKED),
        (_, Reply::QueueFull) => Response::text(Conflict, QUEUE_FULL),
        (_, Reply::Unavailable) => Response::text(Status::ServiceUnavailable, UNAVAILABLE),
        (_, Reply::NoLeader) => Response::text(Status::ServiceUnavailable, NO_LEADER),
        // The server is full, not this lock busy: 503, so that a client does not take it for
        // "held" and poll (the reference SDK retries a 409 every 200 ms, for ever).
        (_, Reply::Refused(Cap::Locks)) => Response::text(Status::ServiceUnavailable, TOO_MANY_LOCKS),
        (_, Reply::Refused(Cap::Waiters)) => Response::text(Status::ServiceUnavailable, TOO_MANY_WAITERS),
        (_, Reply::NotFound) => Response::text(Conflict, NOT_LOCKED),
        (_, Reply::TokenMismatch) => Response::text(Conflict, TOKEN_MISMATCH),
        (Endpoint::Inspect, Reply::Info(Some(lock))) => Response::json(Ok, &LockView::from(&**lock)),
        (Endpoint::Inspect, Reply::Info(None)) => {
            Response::json(NotFound, &ErrorView { error: "Resource not found" })
        }
        (Endpoint::Cluster, Reply::Cluster(Some(status))) => Response::json(Ok, &**status),
        (Endpoint::Cluster, Reply::Cluster(None)) => Response::text(NotFound, NOT_CLUSTERED),
        (Endpoint::Cluster, Reply::Membership(Result::Ok(()))) => Response::text(Ok, OK),
        (Endpoint::Cluster, Reply::Membership(Err(e))) => {
            let status = match e {
                MembershipError::Refused(_) => Conflict,
                _ => Status::ServiceUnavailable,
            };
            Response::error(status, format!("ERR {e}"))
        }
        (_, other) => Response::error(Status::InternalServerError, format!("ERR unexpected reply {other:?}")),
    }
}

/// The answer to `GET /locks?...`.
pub fn list_reply(locks: &[Listed], next: Option<&str>) -> Response {
    Response::json(Status::Ok, &ListView { locks: locks.iter().map(LockView::from).collect(), next })
}

/// The answer to a request every core answered a share of (`GET /locks?...`, `/metrics`).
pub fn gathered_reply(endpoint: Endpoint, parts: Vec<Reply>, limit: usize) -> Response {
    match endpoint {
        Endpoint::Metrics => {
            let mut cores: Vec<CoreStats> = parts
                .into_iter()
                .filter_map(|p| if let Reply::Stats(s) = p { Some(*s) } else { None })
                .collect();
            cores.sort_by_key(|c| c.core);
            Response { body: Body::Metrics(metrics::render(&cores)), ..Response::text(Status::Ok, "") }
        }
        _ => {
            let shares =
                parts.into_iter().filter_map(|p| if let Reply::Listed(l) = p { Some(l) } else { None });
            let (locks, next) = merge_lists(shares.collect(), limit);
            list_reply(&locks, next.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 22 Nov 2026 15:05:00 GMT";

    fn bytes(r: &Response, keep_alive: bool) -> String {
        let mut out = Vec::new();
        r.encode(&mut out, keep_alive, false, DATE);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_grant_carries_its_token() {
        let r = lock_reply(Endpoint::Acquire, &Reply::Granted { token: 42 });
        assert_eq!(
            bytes(&r, true),
            "HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 15:05:00 GMT\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 2\r\nX-Lockserver-Token: 42\r\n\r\nOK"
        );
    }

    #[test]
    fn legacy_bodies_byte_for_byte() {
        let body = |e, r| match lock_reply(e, &r) {
            Response { status, body: Body::Text(t), .. } => (status.code(), t),
            other => panic!("{other:?}"),
        };
        assert_eq!(body(Endpoint::Acquire, Reply::Busy), (409, "ERR Resource is already locked"));
        assert_eq!(body(Endpoint::Acquire, Reply::TimedOut), (409, "ERR Resource is already locked"));
        assert_eq!(body(Endpoint::Release, Reply::Done { token: 1 }), (200, "OK"));
        assert_eq!(body(Endpoint::Release, Reply::NotHolder), (409, "ERR Resource is already locked"));
        assert_eq!(body(Endpoint::Release, Reply::NotFound), (409, "ERR Resource not found"));
        assert_eq!(body(Endpoint::Release, Reply::TokenMismatch), (409, "ERR Token mismatch"));
        assert_eq!(lock_reply(Endpoint::Release, &Reply::Done { token: 1 }).token, None);
    }

    #[test]
    fn a_forced_release_says_which_lease_it_ended() {
        let r = lock_reply(Endpoint::ForceRelease, &Reply::Done { token: 42 });
        assert_eq!(
            bytes(&r, true),
            "HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 15:05:00 GMT\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 2\r\nX-Lockserver-Token: 42\r\n\r\nOK"
        );
        let text = |reply| match lock_reply(Endpoint::ForceRelease, &reply) {
            Response { status, body: Body::Text(t), token: None, .. } => (status.code(), t),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(Reply::NotFound), (409, "ERR Resource not found"));
        assert_eq!(text(Reply::TokenMismatch), (409, "ERR Token mismatch"));
    }

    #[test]
    fn inspect_and_list_as_json() {
        let l =
            Listed { resource: "a".into(), owner: "o".into(), token: 7, expires_in: Some(1500), waiters: 2 };
        let r = lock_reply(Endpoint::Inspect, &Reply::Info(Some(Box::new(l.clone()))));
        assert_eq!(
            r.body,
            Body::Json(
                br#"{"resource":"a","owner":"o","token":7,"expires_in_ms":1500,"waiters":2}"#.to_vec()
            )
        );
        let r = lock_reply(Endpoint::Inspect, &Reply::Info(None));
        assert_eq!(
            (r.status, r.body),
            (Status::NotFound, Body::Json(br#"{"error":"Resource not found"}"#.to_vec()))
        );
        let r = list_reply(&[l], Some("a"));
        assert_eq!(
            r.body,
            Body::Json(br#"{"locks":[{"resource":"a","owner":"o","token":7,"expires_in_ms":1500,"waiters":2}],"next":"a"}"#.to_vec())
        );
    }
}
