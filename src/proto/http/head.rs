//! The HTTP/1.x request head: the only place that calls `httparse`. Pure: bytes in, a [`Head`]
//! of offsets out (nothing borrowed, so the read buffer can go back to the kernel), `Ok(None)`
//! while the head is incomplete.

use std::ops::Range;

/// Most header fields in one request (the parser's array is sized at compile time; the SDKs
/// send 7 to 9).
pub const MAX_HEADERS: usize = 32;
/// Longest request target (path and query), in bytes: a resource name fits three times over
/// even percent-encoded.
pub const MAX_TARGET_BYTES: usize = 4 * 1024;

/// The request methods ringlock tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Delete,
    Other,
}

/// A parsed request head; ranges index the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// Path and query, origin-form (an absolute-form target is cut down to its path).
    pub target: Range<usize>,
    pub http10: bool,
    /// Whether the connection stays open after the response (the version's default, or what
    /// `Connection:` says).
    pub keep_alive: bool,
    pub content_length: usize,
    pub expect_continue: bool,
    /// The value of `X-LOCKSERVER-SECRET`, if present.
    pub secret: Option<Range<usize>>,
    /// Bytes of the head, final blank line included; the body starts here.
    pub len: usize,
}

/// Why a head was refused; each maps to a status, after which the connection closes (the
/// stream can no longer be trusted to be framed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not HTTP/1.x as we read it.
    Malformed(&'static str),
    /// 400: `Content-Length` repeated, conflicting, or not a number.
    BadLength,
    /// 411: a `Transfer-Encoding` body (chunked is not supported; send `Content-Length`).
    Chunked,
    /// 414: the target is longer than [`MAX_TARGET_BYTES`].
    TargetTooLong,
    /// 431: the head is over its limit or has more than [`MAX_HEADERS`] fields.
    TooLarge,
    /// 505: not HTTP/1.0 or 1.1.
    Version,
}

/// Parses the head at the start of `buf`; a head over `max_bytes` is refused.
pub fn parse(buf: &[u8], max_bytes: usize) -> Result<Option<Head>, HeadError> {
    // Left uninitialised: httparse writes the ones it fills, and this runs for every request.
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(e) => return Err(HeadError::Malformed(describe(e))),
    };
    if len > max_bytes {
        return Err(HeadError::TooLarge);
    }
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("DELETE") => Method::Delete,
        _ => Method::Other,
    };
    let raw_target = req.path.unwrap_or("/");
    if raw_target.len() > MAX_TARGET_BYTES {
        return Err(HeadError::TargetTooLong);
    }
    let target = at(origin_form(raw_target).as_bytes());
    let http10 = req.version == Some(0);

    let mut keep_alive = !http10;
    let mut content_length: Option<usize> = None;
    let mut expect_continue = false;
    let mut secret = None;
    for field in req.headers.iter() {
        let name = field.name;
        // Most headers are none of these; their lengths differ, so compare those first.
        if !matches!(name.len(), 6 | 10 | 14 | 17 | 19) {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HeadError::BadLength);
            }
            content_length = Some(parse_length(field.value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Chunked);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = field.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("x-lockserver-secret") {
            secret = Some(at(field.value));
        }
    }
    Ok(Some(Head {
        method,
        target,
        http10,
        keep_alive,
        content_length: content_length.unwrap_or(0),
        expect_continue: expect_continue && !http10,
        secret,
        len,
    }))
}

/// `http://host:port/path?q` -> `/path?q` (and `http://host` -> the empty path); origin-form
/// targets are returned as they are. Always a slice of `target`.
fn origin_form(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => &rest[rest.find('/').unwrap_or(rest.len())..],
        _ => target,
    }
}

/// A `Content-Length` value: digits only (no sign, no list), that fit a `usize`.
fn parse_length(value: &[u8]) -> Result<usize, HeadError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadLength);
    }
    Ok(digits.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or token",
        _ => "malformed request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8 * 1024;

    fn ok(raw: &str) -> Head {
        parse(raw.as_bytes(), MAX).expect("valid").expect("complete")
    }

    fn text<'a>(raw: &'a str, r: &Range<usize>) -> &'a str {
        &raw[r.clone()]
    }

    #[test]
    fn parses_what_the_python_sdk_sends() {
        let raw = "POST /acquire HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: python-requests/2.32.3\r\n\
                   Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\
                   X-LOCKSERVER-SECRET: changeme\r\nContent-Length: 37\r\nContent-Type: application/json\r\n\r\n\
                   {\"resource\": \"r\", \"owner\": \"worker\"}";
        let h = ok(raw);
        assert_eq!(h.method, Method::Post);
        assert_eq!(text(raw, &h.target), "/acquire");
        assert!(h.keep_alive && !h.http10 && !h.expect_continue);
        assert_eq!(h.content_length, 37);
        assert_eq!(text(raw, h.secret.as_ref().unwrap()), "changeme");
        assert_eq!(&raw[h.len..], "{\"resource\": \"r\", \"owner\": \"worker\"}");
    }

    #[test]
    fn partial_heads_are_incomplete_not_errors() {
        let raw = b"POST /acquire HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        for end in 0..raw.len() {
            assert_eq!(parse(&raw[..end], MAX), Ok(None), "prefix of {end} bytes");
        }
        assert!(parse(raw, MAX).unwrap().is_some());
    }

    #[test]
    fn connection_semantics_by_version() {
        assert!(!ok("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let h = ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive && h.http10);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n").keep_alive);
        assert!(ok("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert!(!ok("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn refuses_ambiguous_or_unsupported_framing() {
        let e = |raw: &str| parse(raw.as_bytes(), MAX).unwrap_err();
        assert_eq!(
            e("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            HeadError::BadLength
        );
        assert_eq!(
            e("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n"),
            HeadError::BadLength
        );
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), HeadError::BadLength);
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), HeadError::BadLength);
        assert_eq!(
            e("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            HeadError::BadLength
        );
        assert_eq!(e("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), HeadError::Chunked);
        assert_eq!(e("GET / HTTP/2.0\r\n\r\n"), HeadError::Version);
        assert_eq!(e("GET /\0 HTTP/1.1\r\n\r\n"), HeadError::Malformed("invalid method or token"));
        assert_eq!(e("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), HeadError::Malformed("invalid header name"));
        assert_eq!(e("GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n"), HeadError::Malformed("invalid header value"));
    }

    #[test]
    fn size_limits() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), MAX), Err(HeadError::TooLarge));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "v".repeat(MAX));
        assert_eq!(parse(big.as_bytes(), MAX), Err(HeadError::TooLarge), "over the limit before it ends");
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(parse(long.as_bytes(), MAX), Err(HeadError::TargetTooLong));
    }

    #[test]
    fn absolute_form_targets_become_paths() {
        let raw = "GET http://localhost:8080/health?x=1 HTTP/1.1\r\n\r\n";
        assert_eq!(text(raw, &ok(raw).target), "/health?x=1");
        let raw = "GET http://localhost:8080 HTTP/1.1\r\n\r\n";
        assert_eq!(text(raw, &ok(raw).target), "", "an empty path");
    }
}
