//! Entry points for the fuzz targets (`fuzz/`) and their regression test, built only with the
//! `fuzzing` feature (the fuzz crate and the test suite turn it on): each feeds arbitrary
//! bytes through one protocol's parsers the way a connection would, and checks what must hold
//! for any input: no panic, and what parses, once encoded, parses to the same thing.

use ringlock_client::frame::{self, FrameError};

use crate::config::Limits;
use crate::proto::http::{endpoint, head, route};

/// HTTP: frames requests out of `data` one after another, as a connection's buffer is read,
/// routes each (secret check, JSON body, names) and encodes an answer.
pub fn http(data: &[u8]) {
    let limits = Limits::default();
    let date = [b'D'; 29];
    let mut rest = data;
    while let Ok(Some(h)) = head::parse(rest, limits.max_head_bytes) {
        let end = h.len.saturating_add(h.content_length);
        if h.content_length > limits.max_body_bytes || rest.len() < end {
            return;
        }
        let target = std::str::from_utf8(&rest[h.target.clone()]).expect("httparse targets are UTF-8");
        let authorized = || h.secret.clone().is_some_and(|s| rest[s].first() == Some(&b'k'));
        let mut out = Vec::new();
        match route::route(h.method, target, &rest[h.len..end], &limits, authorized) {
            route::Routed::Health => endpoint::health().encode(&mut out, h.keep_alive, false, &date),
            route::Routed::Refused(r) => endpoint::refused(r).encode(&mut out, h.keep_alive, false, &date),
            route::Routed::Lock(e, _) => {
                endpoint::lock_reply(e, &crate::api::Reply::Busy).encode(&mut out, h.keep_alive, false, &date)
            }
            route::Routed::Cluster(_) => endpoint::lock_reply(
                route::Endpoint::Cluster,
                &crate::api::Reply::Cluster(None),
            )
            .encode(&mut out, h.keep_alive, false, &date),
        }
        assert!(out.starts_with(b"HTTP/1.1 "));
        rest = &rest[end..];
    }
}

/// The wire protocol: a preface, then frames read as the server reads requests and as the
/// client reads replies; whatever parses must survive an encode and a parse unchanged.
pub fn wire(data: &[u8]) {
    let Ok(true) = frame::check_preface(data) else { return };
    let mut rest = &data[frame::PREFACE.len()..];
    while let Ok(Some(n)) = frame::check(rest) {
        let f = &rest[..n];
        match frame::parse_request(f) {
            Ok((id, req)) => {
                let mut again = Vec::new();
                frame::encode_request(&mut again, id, &req);
                assert_eq!(frame::parse_request(&again), Ok((id, req)), "a request survives a round trip");
            }
            Err(FrameError::Invalid { .. }) | Err(FrameError::Fatal(_)) => {}
        }
        if let Ok((id, reply)) = frame::parse_reply(f) {
            let mut again = Vec::new();
            frame::encode_reply(&mut again, id, &reply);
            assert_eq!(frame::parse_reply(&again), Ok((id, reply)), "a reply survives a round trip");
        }
        rest = &rest[n..];
    }
}

/// What a connection's first bytes must be for [`panic_if_asked`] to make its reader panic.
pub const PANIC_READER: &[u8] = b"\xffringlock-test: panic the reader\r\n";
/// What a connection's first bytes must be for [`panic_if_asked`] to make its writer panic.
pub const PANIC_WRITER: &[u8] = b"\xffringlock-test: panic the writer\r\n";
/// The environment variable that arms the hook (set to `1` when the server starts), so that a
/// binary built with this feature (as `cargo test` builds it) never panics on request unless
/// the test suite asked for that too.
pub const PANIC_HOOK_VAR: &str = "RINGLOCK_TEST_PANIC_HOOK";

/// A test hook, for the suite to prove that a panic in a connection's task ends the process:
/// a connection whose read buffer starts with [`PANIC_READER`] panics in its reader; one that
/// starts with [`PANIC_WRITER`] calls `panic_writer` (its writer then panics). Only while
/// [`PANIC_HOOK_VAR`] is `1`.
pub fn panic_if_asked(buf: &[u8], panic_writer: impl FnOnce()) {
    static ARMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if buf.first() != Some(&0xff)
        || !*ARMED.get_or_init(|| std::env::var(PANIC_HOOK_VAR).as_deref() == Ok("1"))
    {
        return;
    }
    if buf.starts_with(PANIC_READER) {
        panic!("a connection's reader panics, as the test suite asked");
    }
    if buf.starts_with(PANIC_WRITER) {
        panic_writer();
    }
}
