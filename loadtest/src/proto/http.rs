//! The HTTP JSON API (ringlock and the reference `lockserver` server): encoding `/acquire`,
//! `/release` and `/health` requests, and framing HTTP/1.1 messages by their head and
//! `content-length`: responses for the generator (status line and headers by `httparse`),
//! requests for the responder. The framing is a pure function over the bytes read so far; it
//! returns offsets, never borrows.

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};
use memchr::memchr;

use super::{Handshake, IN_ORDER, Name, ParseError, Parsed, Protocol, in_order, push_name, push_u64};
use crate::op::{Op, OpKind, Outcome};

/// Longest head (start line and headers) accepted. Lock servers answer in about 150 bytes; a
/// head this long means the bytes are not what we think they are.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Largest body accepted. Lock replies are a few bytes; the limit keeps a corrupt
/// `content-length` from making the generator wait for megabytes that never come.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Headers a response's head is parsed into on the common path, on the stack and never
/// initialized: ringlock sends four, actix-web three.
const FEW_HEADERS: usize = 16;

/// The shortest header line: `a:` and LF.
const MIN_HEADER_LINE_BYTES: usize = 3;

/// The most headers a head within [`MAX_HEAD_BYTES`] can hold. A head with more than
/// [`FEW_HEADERS`] is parsed again into this many (off the common path), so that a head is
/// refused for its length, never for its number of headers.
const MAX_HEADERS: usize = MAX_HEAD_BYTES / MIN_HEADER_LINE_BYTES;

/// Where an HTTP message's head ends and how long its body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the start line and headers, the blank line included.
    len: usize,
    /// The `content-length`, if the head had one.
    content_length: Option<usize>,
}

/// A complete HTTP response at the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Bytes of head and body.
    pub len: usize,
}

/// Takes what header `name: value` says of the body's length: a `content-length` (given twice,
/// the same both times), or a `transfer-encoding`, which is refused.
fn frame_header(name: &[u8], value: &[u8], content_length: &mut Option<usize>) -> Result<(), ParseError> {
    if is_named(name, b"content-length") {
        let n = parse_length(value)?;
        if content_length.is_some_and(|c| c != n) {
            return Err(ParseError::BadContentLength);
        }
        *content_length = Some(n);
    } else if is_named(name, b"transfer-encoding") {
        return Err(ParseError::Chunked);
    }
    Ok(())
}

/// Whether header `name` is `lower` (lowercase) in any case: `eq_ignore_ascii_case`, without
/// its early exit, so that a name of the right length is compared in a few wide operations
/// rather than a branch per byte (this runs on every header of every reply).
fn is_named(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name.iter().zip(lower).fold(0, |diff, (&b, &l)| {
            // Bit 5 is a letter's case; every other byte must match exactly.
            let case = if l.is_ascii_lowercase() { 0x20 } else { 0 };
            diff | ((b | case) ^ l)
        }) == 0
}

/// A `content-length` value: digits only, at most [`MAX_BODY_BYTES`].
fn parse_length(value: &[u8]) -> Result<usize, ParseError> {
    if value.is_empty() || value.len() > 7 || !value.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadContentLength);
    }
    let n = value.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if n > MAX_BODY_BYTES {
        return Err(ParseError::BadContentLength);
    }
    Ok(n)
}

/// The expected start of every status line.
const STATUS_PREFIX: &[u8] = b"HTTP/1.";

/// Frames the first response in `buf`: `Ok(None)` until all of its head and body are there.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, ParseError> {
    // Refuse a wrong start as soon as its first bytes show it, not only at the line's end
    // (and before httparse, which would skip blank lines in front of it).
    let seen = buf.len().min(STATUS_PREFIX.len());
    if buf[..seen] != STATUS_PREFIX[..seen] {
        return Err(ParseError::BadStatusLine);
    }
    // The head must end within MAX_HEAD_BYTES, so that is all the parser sees of a body.
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let Some((status, head)) = response_head::<FEW_HEADERS>(window)? else {
        return Ok(None);
    };
    let body = match head.content_length {
        Some(n) => n,
        // RFC 9112 section 6.3: these never have a body.
        None if (100..200).contains(&status) || status == 204 || status == 304 => 0,
        None => return Err(ParseError::MissingContentLength),
    };
    let len = head.len + body;
    Ok((buf.len() >= len).then_some(Response { status, len }))
}

/// The status and head of the response at the front of `window` (at most [`MAX_HEAD_BYTES`]),
/// parsed by httparse into `N` headers: `Ok(None)` until the head is all there.
fn response_head<const N: usize>(window: &[u8]) -> Result<Option<(u16, Head)>, ParseError> {
    let mut headers = [const { MaybeUninit::<Header<'_>>::uninit() }; N];
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        ParserConfig::default().parse_response_with_uninit_headers(&mut response, window, &mut headers);
    let len = match parsed {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) if window.len() >= MAX_HEAD_BYTES => return Err(ParseError::TooLong),
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) if N < MAX_HEADERS => return many_headers(window),
        Err(e) => return Err(syntax_error(e)),
    };
    let status = response.code.expect("a complete head has a status code");
    let mut content_length = None;
    for header in response.headers.iter() {
        frame_header(header.name.as_bytes(), header.value, &mut content_length)?;
    }
    Ok(Some((status, Head { len, content_length })))
}

/// [`response_head`] for a head with more than [`FEW_HEADERS`] headers, which no server here
/// sends: kept out of line, so that the common path's stack frame stays small.
#[cold]
#[inline(never)]
fn many_headers(window: &[u8]) -> Result<Option<(u16, Head)>, ParseError> {
    response_head::<MAX_HEADERS>(window)
}

/// What httparse's refusal of a response head means here.
fn syntax_error(e: httparse::Error) -> ParseError {
    match e {
        httparse::Error::Version | httparse::Error::Status | httparse::Error::Token => {
            ParseError::BadStatusLine
        }
        httparse::Error::HeaderName | httparse::Error::HeaderValue | httparse::Error::NewLine => {
            ParseError::BadHeader
        }
        // More header lines than fit in MAX_HEAD_BYTES: only a head that long can have them.
        httparse::Error::TooManyHeaders => ParseError::TooLong,
    }
}

/// Frames the first request in `buf` (for the responder): its total length, or `Ok(None)`
/// until all of it is there. A request without `content-length` has no body. Framed by hand
/// and leniently (any start line but an empty one): the responder answers the generator's own
/// requests, which need no checking.
pub fn parse_request(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let Some((end, next)) = line(buf, 0) else {
        return if buf.len() >= MAX_HEAD_BYTES { Err(ParseError::TooLong) } else { Ok(None) };
    };
    if end == 0 {
        return Err(ParseError::BadStatusLine);
    }
    let Some(head) = headers(buf, next)? else {
        return Ok(None);
    };
    let len = head.len + head.content_length.unwrap_or(0);
    Ok((buf.len() >= len).then_some(len))
}

/// The next line of a request in `buf` from `start`: its end (before any CR) and where the line after it
/// begins. `None` if its LF is not there yet.
fn line(buf: &[u8], start: usize) -> Option<(usize, usize)> {
    let lf = start + memchr(b'\n', &buf[start..])?;
    let end = if lf > start && buf[lf - 1] == b'\r' { lf - 1 } else { lf };
    Some((end, lf + 1))
}

/// Reads the headers of a request that begin at `start` (just after the start line) up to the
/// blank line.
fn headers(buf: &[u8], mut start: usize) -> Result<Option<Head>, ParseError> {
    let mut content_length = None;
    loop {
        let Some((end, next)) = line(buf, start) else {
            return if buf.len() >= MAX_HEAD_BYTES { Err(ParseError::TooLong) } else { Ok(None) };
        };
        if next > MAX_HEAD_BYTES {
            return Err(ParseError::TooLong);
        }
        let header = &buf[start..end];
        if header.is_empty() {
            return Ok(Some(Head { len: next, content_length }));
        }
        let colon = memchr(b':', header).ok_or(ParseError::BadHeader)?;
        frame_header(&header[..colon], trim(&header[colon + 1..]), &mut content_length)?;
        start = next;
    }
}

/// A header `value` without the spaces and tabs around it.
fn trim(value: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let from = value.iter().position(|b| !is_space(b)).unwrap_or(value.len());
    let to = value.iter().rposition(|b| !is_space(b)).map_or(from, |i| i + 1);
    &value[from..to]
}

/// What status `status` means for a request of kind `kind`: 2xx is success, 409 a conflict on
/// a lock request, anything else an error.
pub fn classify(status: u16, kind: OpKind) -> Outcome {
    match (status, kind) {
        (200..=299, OpKind::Acquire) => Outcome::Granted,
        (200..=299, OpKind::Release | OpKind::Health) => Outcome::Done,
        (409, OpKind::Acquire | OpKind::Release) => Outcome::Conflict,
        _ => Outcome::Error,
    }
}

/// `ms` milliseconds as decimal seconds, as short as exact: `30`, `1.5`, `0.25`. The reference
/// server only accepts whole seconds; give it a multiple of 1000 ms.
pub fn push_seconds(out: &mut Vec<u8>, ms: u64) {
    push_u64(out, ms / 1000);
    let frac = ms % 1000;
    if frac != 0 {
        let digits = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
        let mut n = digits.len();
        while digits[n - 1] == b'0' {
            n -= 1;
        }
        out.push(b'.');
        out.extend_from_slice(&digits[..n]);
    }
}

/// One connection's HTTP client: requests pre-built up to the parts that change (the name and
/// the content length). Its `Debug` leaves the pre-built requests out: they carry the secret.
#[derive(Clone)]
pub struct HttpClient {
    /// `POST /acquire HTTP/1.1` and every header up to `Content-Length: `.
    acquire_head: Vec<u8>,
    /// The same for `/release`.
    release_head: Vec<u8>,
    /// The whole health probe.
    health: Vec<u8>,
    /// `","owner":"lt-<conn>","expire":<s>}`: the acquire body after the resource name.
    acquire_tail: Vec<u8>,
    /// `","owner":"lt-<conn>"}`: the release body after the resource name.
    release_tail: Vec<u8>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// The body up to the resource name.
const BODY_HEAD: &[u8] = b"{\"resource\":\"";

impl HttpClient {
    /// The client of connection `conn`, sending `Host: host`, the shared `secret`, and on
    /// every acquire a lease of `ttl_ms` milliseconds if given and a server-side wait of
    /// `wait_ms` if not 0.
    pub fn new(host: &str, secret: &str, ttl_ms: Option<u64>, wait_ms: u64, conn: usize) -> HttpClient {
        let head = |path: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nX-LOCKSERVER-SECRET: {secret}\r\n\
                 Content-Type: application/json\r\nContent-Length: "
            )
            .into_bytes()
        };
        let mut release_tail = b"\",\"owner\":\"".to_vec();
        push_name(&mut release_tail, conn as u64);
        release_tail.push(b'"');
        let mut acquire_tail = release_tail.clone();
        if let Some(ms) = ttl_ms {
            acquire_tail.extend_from_slice(b",\"expire\":");
            push_seconds(&mut acquire_tail, ms);
        }
        if wait_ms > 0 {
            acquire_tail.extend_from_slice(b",\"wait\":");
            push_seconds(&mut acquire_tail, wait_ms);
        }
        acquire_tail.push(b'}');
        release_tail.push(b'}');
        HttpClient {
            acquire_head: head("/acquire"),
            release_head: head("/release"),
            health: format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            acquire_tail,
            release_tail,
        }
    }

    fn lock_request(out: &mut Vec<u8>, head: &[u8], key: u64, tail: &[u8]) {
        let name = Name::new(key);
        out.extend_from_slice(head);
        push_u64(out, (BODY_HEAD.len() + name.as_bytes().len() + tail.len()) as u64);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(BODY_HEAD);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(tail);
    }
}

impl Protocol for HttpClient {
    /// None: the secret rides on every request.
    fn handshake(&self) -> Option<Handshake> {
        None
    }

    fn encode(&mut self, op: &Op, out: &mut Vec<u8>) -> u32 {
        match *op {
            Op::Acquire { key } => Self::lock_request(out, &self.acquire_head, key, &self.acquire_tail),
            Op::Release { key } => Self::lock_request(out, &self.release_head, key, &self.release_tail),
            Op::Health => out.extend_from_slice(&self.health),
        }
        IN_ORDER
    }

    fn parse(&self, buf: &[u8], kind_of: impl Fn(u32) -> Option<OpKind>) -> Parsed {
        in_order(parse_response(buf)?.map(|r| (r.len, r.status)), kind_of, classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Reply;

    /// A grant as ringlock sends it.
    const RINGLOCK_200: &[u8] = b"HTTP/1.1 200 OK\r\ndate: Sat, 22 Nov 2025 15:40:00 GMT\r\n\
        content-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\n\
        X-Lockserver-Token: 17\r\n\r\nOK";
    /// A conflict as ringlock sends it.
    const RINGLOCK_409: &[u8] = b"HTTP/1.1 409 Conflict\r\ndate: Sat, 22 Nov 2025 15:40:00 GMT\r\n\
        content-type: text/plain; charset=utf-8\r\ncontent-length: 30\r\n\r\n\
        ERR Resource is already locked";
    /// A grant as actix-web (the reference server) sends it.
    const ACTIX_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\
        content-type: text/plain; charset=utf-8\r\ndate: Sat, 22 Nov 2025 15:40:00 GMT\r\n\r\nOK";

    fn response(status: u16, len: usize) -> Option<Response> {
        Some(Response { status, len })
    }

    #[test]
    fn every_strict_prefix_is_incomplete_and_the_whole_is_one_response() {
        for bytes in [RINGLOCK_200, RINGLOCK_409, ACTIX_200] {
            for cut in 0..bytes.len() {
                assert_eq!(parse_response(&bytes[..cut]), Ok(None), "cut at {cut}");
            }
        }
        assert_eq!(parse_response(RINGLOCK_200), Ok(response(200, RINGLOCK_200.len())));
        assert_eq!(parse_response(RINGLOCK_409), Ok(response(409, RINGLOCK_409.len())));
        assert_eq!(parse_response(ACTIX_200), Ok(response(200, ACTIX_200.len())));
    }

    #[test]
    fn pipelined_responses_are_taken_one_at_a_time() {
        let mut buf = RINGLOCK_409.to_vec();
        buf.extend_from_slice(RINGLOCK_200);
        buf.extend_from_slice(&RINGLOCK_200[..20]);
        let first = parse_response(&buf).unwrap().unwrap();
        assert_eq!(first, Response { status: 409, len: RINGLOCK_409.len() });
        let rest = &buf[first.len..];
        let second = parse_response(rest).unwrap().unwrap();
        assert_eq!(second, Response { status: 200, len: RINGLOCK_200.len() });
        assert_eq!(parse_response(&rest[second.len..]), Ok(None));
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_trimmed() {
        let r = b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH:\t 3 \r\n\r\nabc";
        assert_eq!(parse_response(r), Ok(response(200, r.len())));
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let r = b"HTTP/1.1 200 OK\ncontent-length: 2\n\nOK";
        assert_eq!(parse_response(r), Ok(response(200, r.len())));
    }

    #[test]
    fn status_line_without_reason_is_accepted() {
        let r = b"HTTP/1.0 204\r\n\r\n";
        assert_eq!(parse_response(r), Ok(response(204, r.len())));
    }

    #[test]
    fn bodyless_statuses_need_no_content_length_but_others_do() {
        assert_eq!(parse_response(b"HTTP/1.1 304 Not Modified\r\n\r\n"), Ok(response(304, 29)));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n"), Err(ParseError::MissingContentLength));
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert_eq!(parse_response(b"HTTX"), Err(ParseError::BadStatusLine));
        assert_eq!(parse_response(b"+OK\r\n"), Err(ParseError::BadStatusLine));
        assert_eq!(parse_response(b"HTTP/1.1 2x0 OK\r\n"), Err(ParseError::BadStatusLine));
        assert_eq!(parse_response(b"HTTP/1.1 2000 OK\r\n"), Err(ParseError::BadStatusLine));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"), Err(ParseError::BadHeader));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nOK"),
            Err(ParseError::BadContentLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nOK"),
            Err(ParseError::BadContentLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 65537\r\n\r\n"),
            Err(ParseError::BadContentLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ParseError::Chunked)
        );
    }

    #[test]
    fn a_head_that_never_ends_is_too_long_only_at_the_limit() {
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        while buf.len() < MAX_HEAD_BYTES - 10 {
            buf.extend_from_slice(b"x-pad: 0123456789\r\n");
        }
        assert_eq!(parse_response(&buf), Ok(None));
        while buf.len() < MAX_HEAD_BYTES + 10 {
            buf.extend_from_slice(b"x-pad: 0123456789\r\n");
        }
        assert_eq!(parse_response(&buf), Err(ParseError::TooLong));
    }

    #[test]
    fn a_head_may_end_at_the_limit_but_not_past_it() {
        let head = |len: usize| {
            let mut r = b"HTTP/1.1 204 No Content\r\nx-pad: ".to_vec();
            r.resize(len - 4, b'p');
            r.extend_from_slice(b"\r\n\r\n");
            r
        };
        let at = head(MAX_HEAD_BYTES);
        assert_eq!(parse_response(&at), Ok(response(204, MAX_HEAD_BYTES)));
        assert_eq!(parse_response(&head(MAX_HEAD_BYTES + 1)), Err(ParseError::TooLong));
    }

    #[test]
    fn a_head_with_many_headers_frames_as_one_with_few() {
        let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            r.extend_from_slice(format!("x-{i}: {i}\r\n").as_bytes());
        }
        r.extend_from_slice(b"content-length: 2\r\n\r\nOK");
        assert_eq!(parse_response(&r), Ok(response(200, r.len())));
        assert_eq!(parse_response(&r[..r.len() - 1]), Ok(None));
        // As many of the shortest header lines as fit in the limit: still a head, not an error.
        let mut r = b"HTTP/1.1 204\n".to_vec();
        while r.len() + MIN_HEADER_LINE_BYTES < MAX_HEAD_BYTES {
            r.extend_from_slice(b"a:\n");
        }
        r.push(b'\n');
        assert!(r.len() <= MAX_HEAD_BYTES);
        assert_eq!(parse_response(&r), Ok(response(204, r.len())));
    }

    #[test]
    fn header_names_match_as_eq_ignore_ascii_case_does_for_every_byte() {
        for lower in [&b"content-length"[..], b"transfer-encoding"] {
            assert!(is_named(&lower.to_ascii_uppercase(), lower));
            assert!(!is_named(&lower[1..], lower));
            for at in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut name = lower.to_vec();
                    name[at] = b;
                    assert_eq!(is_named(&name, lower), name.eq_ignore_ascii_case(lower), "{name:?}");
                }
            }
        }
    }

    #[test]
    fn statuses_classify_by_request_kind() {
        assert_eq!(classify(200, OpKind::Acquire), Outcome::Granted);
        assert_eq!(classify(200, OpKind::Release), Outcome::Done);
        assert_eq!(classify(200, OpKind::Health), Outcome::Done);
        assert_eq!(classify(409, OpKind::Acquire), Outcome::Conflict);
        assert_eq!(classify(409, OpKind::Release), Outcome::Conflict);
        assert_eq!(classify(409, OpKind::Health), Outcome::Error);
        for status in [400, 401, 404, 405, 413, 500, 503] {
            assert_eq!(classify(status, OpKind::Acquire), Outcome::Error, "{status}");
            assert_eq!(classify(status, OpKind::Release), Outcome::Error, "{status}");
        }
    }

    #[test]
    fn client_parse_maps_status_to_outcome() {
        let c = HttpClient::new("h", "s", None, 0, 0);
        // Replies answer the oldest request in flight.
        let acquire = |id| (id == IN_ORDER).then_some(OpKind::Acquire);
        assert_eq!(
            c.parse(RINGLOCK_409, acquire),
            Ok(Some(Reply { outcome: Outcome::Conflict, len: RINGLOCK_409.len(), id: IN_ORDER }))
        );
        let unauthorized =
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 25\r\n\r\nMissing or invalid secret";
        assert_eq!(
            c.parse(unauthorized, acquire),
            Ok(Some(Reply { outcome: Outcome::Error, len: unauthorized.len(), id: IN_ORDER }))
        );
        assert_eq!(c.parse(&RINGLOCK_200[..5], acquire), Ok(None));
        assert_eq!(c.parse(RINGLOCK_200, |_| None), Err(ParseError::NoRequest));
    }

    #[test]
    fn seconds_are_as_short_as_exact() {
        for (ms, s) in [
            (30_000, "30"),
            (1_000, "1"),
            (1_500, "1.5"),
            (250, "0.25"),
            (1, "0.001"),
            (0, "0"),
            (12_340, "12.34"),
        ] {
            let mut out = Vec::new();
            push_seconds(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), s, "{ms} ms");
        }
    }

    #[test]
    fn acquire_release_and_health_encode_exactly() {
        let mut c = HttpClient::new("127.0.0.1:8080", "changeme", Some(30_000), 0, 7);
        let mut out = Vec::new();
        c.encode(&Op::Acquire { key: 42 }, &mut out);
        let body = r#"{"resource":"lt-42","owner":"lt-7","expire":30}"#;
        let expected = format!(
            "POST /acquire HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-LOCKSERVER-SECRET: changeme\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);

        out.clear();
        c.encode(&Op::Release { key: 42 }, &mut out);
        let body = r#"{"resource":"lt-42","owner":"lt-7"}"#;
        let expected = format!(
            "POST /release HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-LOCKSERVER-SECRET: changeme\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);

        out.clear();
        c.encode(&Op::Health, &mut out);
        assert_eq!(out, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
    }

    #[test]
    fn acquire_without_ttl_has_no_expire() {
        let mut c = HttpClient::new("h", "s", None, 0, 0);
        let mut out = Vec::new();
        c.encode(&Op::Acquire { key: 1234567 }, &mut out);
        assert!(out.ends_with(b"Content-Length: 40\r\n\r\n{\"resource\":\"lt-1234567\",\"owner\":\"lt-0\"}"));
    }

    #[test]
    fn encoded_requests_frame_as_requests() {
        let mut c = HttpClient::new("h", "s", Some(250), 0, 3);
        let mut out = Vec::new();
        c.encode(&Op::Acquire { key: 9 }, &mut out);
        let one = out.len();
        c.encode(&Op::Health, &mut out);
        c.encode(&Op::Release { key: 9 }, &mut out);
        for cut in 0..one {
            assert_eq!(parse_request(&out[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_request(&out), Ok(Some(one)));
        let health = parse_request(&out[one..]).unwrap().unwrap();
        assert_eq!(&out[one..one + health], b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(parse_request(&out[one + health..]), Ok(Some(out.len() - one - health)));
    }

    #[test]
    fn a_request_must_have_a_start_line() {
        assert_eq!(parse_request(b"\r\n"), Err(ParseError::BadStatusLine));
    }
}
