//! HTTP responses: the status lines, the few headers ringlock sends, the bodies, and how each
//! lock [`Reply`] reads on each endpoint (byte for byte as the reference server for the legacy
//! ones). Encoding appends to the connection's output buffer; nothing here does I/O.

use serde::Serialize;

use crate::api::{Reply, merge_lists};
use crate::metrics::{self, CoreStats};
use crate::shard::Listed;

use super::route::Endpoint;

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Bodies the reference server sends, and ours in its style.
pub const OK: &str = "OK";
pub const LOCKED: &str = "ERR Resource is already locked";
pub const NOT_LOCKED: &str = "ERR Resource not found";
pub const TOKEN_MISMATCH: &str = "ERR Token mismatch";
pub const QUEUE_FULL: &str = "ERR Too many waiters";
pub const UNAUTHORIZED: &str = "Missing or invalid secret";

/// The statuses ringlock answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    LengthRequired,
    PayloadTooLarge,
    UriTooLong,
    HeaderFieldsTooLarge,
    InternalServerError,
    ServiceUnavailable,
    VersionNotSupported,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::Conflict => 409,
            Status::LengthRequired => 411,
            Status::PayloadTooLarge => 413,
            Status::UriTooLong => 414,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::Unauthorized => b"HTTP/1.1 401 Unauthorized\r\n",
            Status::Forbidden => b"HTTP/1.1 403 Forbidden\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::Conflict => b"HTTP/1.1 409 Conflict\r\n",
            Status::LengthRequired => b"HTTP/1.1 411 Length Required\r\n",
            Status::PayloadTooLarge => b"HTTP/1.1 413 Payload Too Large\r\n",
            Status::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\n",
            Status::HeaderFieldsTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::InternalServerError => b"HTTP/1.1 500 Internal Server Error\r\n",
            Status::ServiceUnavailable => b"HTTP/1.1 503 Service Unavailable\r\n",
            Status::VersionNotSupported => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        }
    }
}

/// A response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Text(&'static str),
    /// Plain text made for this response (an error's reason).
    Owned(String),
    Json(Vec<u8>),
    /// Prometheus text exposition.
    Metrics(String),
}

/// A response, before encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub body: Body,
    /// Sent as `X-Lockserver-Token` (grants and renewals).
    pub token: Option<u64>,
    /// Sent as `Allow` (405s).
    pub allow: Option<&'static str>,
    /// Close the connection after this response whatever the request asked.
    pub close: bool,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: Status, body: &'static str) -> Response {
        Response { status, body: Body::Text(body), token: None, allow: None, close: false }
    }

    /// A plain-text error with a reason made at run time, e.g. `ERR Bad request: ...`.
    pub fn error(status: Status, reason: String) -> Response {
        Response { status, body: Body::Owned(reason), token: None, allow: None, close: false }
    }

    /// A JSON response.
    pub fn json(status: Status, value: &impl Serialize) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Response { status, body: Body::Json(body), token: None, allow: None, close: false }
    }

    /// The same response, closing the connection after it.
    pub fn closing(self) -> Response {
        Response { close: true, ..self }
    }

    /// Whether the connection stays open after this response to a request that asked for
    /// `keep_alive`.
    pub fn keeps_alive(&self, keep_alive: bool) -> bool {
        keep_alive && !self.close
    }

    /// Appends the response to `out`. `date` is the `Date` header's value; `head_only` leaves
    /// the body out (answers to HEAD).
    pub fn encode(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool, date: &[u8]) {
        let (body, content_type): (&[u8], &[u8]) = match &self.body {
            Body::Text(t) => (t.as_bytes(), b"text/plain; charset=utf-8"),
            Body::Owned(t) => (t.as_bytes(), b"text/plain; charset=utf-8"),
            Body::Json(j) => (j, b"application/json"),
            Body::Metrics(m) => (m.as_bytes(), b"text/plain; version=0.0.4; charset=utf-8"),
        };
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(self.status.line());
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\ncontent-type: ");
        out.extend_from_slice(content_type);
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(n.format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(token) = self.token {
            out.extend_from_slice(b"X-Lockserver-Token: ");
            out.extend_from_slice(n.format(token).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(allow) = self.allow {
            out.extend_from_slice(b"allow: ");
            out.extend_from_slice(allow.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.keeps_alive(keep_alive) {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(body);
        }
    }
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
        (Endpoint::Extend, Reply::Done { token }) => granted(*token),
        (_, Reply::Busy | Reply::TimedOut | Reply::NotHolder) => Response::text(Conflict, LOCKED),
        (_, Reply::QueueFull) => Response::text(Conflict, QUEUE_FULL),
        (_, Reply::NotFound) => Response::text(Conflict, NOT_LOCKED),
        (_, Reply::TokenMismatch) => Response::text(Conflict, TOKEN_MISMATCH),
        (Endpoint::Inspect, Reply::Info(Some(lock))) => Response::json(Ok, &LockView::from(&**lock)),
        (Endpoint::Inspect, Reply::Info(None)) => {
            Response::json(NotFound, &ErrorView { error: "Resource not found" })
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
    fn closing_head_and_allow() {
        let r = Response {
            allow: Some("POST"),
            ..Response::text(Status::MethodNotAllowed, "Method Not Allowed")
        };
        assert_eq!(
            bytes(&r, false),
            "HTTP/1.1 405 Method Not Allowed\r\ndate: Sun, 22 Nov 2026 15:05:00 GMT\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 18\r\nallow: POST\r\nconnection: close\r\n\r\nMethod Not Allowed"
        );
        let mut out = Vec::new();
        Response::text(Status::Ok, OK).encode(&mut out, true, true, DATE);
        assert!(out.ends_with(b"content-length: 2\r\n\r\n"), "HEAD: length of the body, no body");
        assert!(bytes(&Response::text(Status::Ok, OK).closing(), true).contains("connection: close\r\n"));
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
