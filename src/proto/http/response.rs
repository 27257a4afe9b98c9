//! HTTP responses and their encoding: the status lines, the few headers ringlock sends, the
//! bodies. What each answer says is [`super::endpoint`]'s business; this module only writes
//! it, appending to the connection's output buffer. Nothing here does I/O.

use serde::Serialize;

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

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
    #[cfg(test)]
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
        Response::text(Status::Ok, "OK").encode(&mut out, true, true, DATE);
        assert!(out.ends_with(b"content-length: 2\r\n\r\n"), "HEAD: length of the body, no body");
        assert!(bytes(&Response::text(Status::Ok, "OK").closing(), true).contains("connection: close\r\n"));
    }
}
