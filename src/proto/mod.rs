//! The protocols ringlock speaks, each turning bytes into [`crate::api::Request`]s and
//! [`crate::api::Reply`]s into bytes, and [`Session`]: a connection's protocol state. A
//! session asks for lock work only through [`LockService`] (one turn of its core at a time),
//! and reads the rest of what it needs from a [`Context`]; it never sees the core itself.
//!
//! Both protocols share one port: a wire-protocol client opens with a NUL byte
//! ([`wire::frame::PREFACE`]), which no HTTP request can start with, so the first byte a
//! connection sends decides its protocol for good. Here too is **protected mode**: while the
//! server has the well-known default secret, a client from another machine is refused (in
//! its protocol) and the connection closed.

pub mod context;
pub mod http;
pub mod opening;
pub mod unsent;
pub mod wire;

use ringlock_client::frame::{self as wire_frame, WireReply};

use crate::api::{LockService, Reply};
use crate::config::Limits;

use http::response::{Response, Status};

pub use context::Context;

/// What a client refused by protected mode is told.
pub const PROTECTED: &str = "ERR Protected mode: this server still has the default secret, so it serves \
only clients on its own machine. Set LOCKSERVER_SECRET (or LOCKSERVER_SECRET_FILE) on the server and on \
its clients, and restart it.";

/// A connection's protocol state. See [`http::session::Session`] and
/// [`wire::session::Session`] for what each call means.
pub enum Session {
    /// No byte has arrived yet; `protected`: refuse the client once its protocol is known.
    Unknown {
        protected: bool,
    },
    Http(http::session::Session),
    Wire(wire::session::Session),
}

impl Session {
    pub fn new(protected: bool) -> Session {
        Session::Unknown { protected }
    }

    /// Requests parsed and not yet answered.
    pub fn in_flight(&self) -> usize {
        match self {
            Session::Unknown { .. } => 0,
            Session::Http(s) => s.in_flight(),
            Session::Wire(s) => s.in_flight(),
        }
    }

    /// Whether another request may be parsed, with `unsent` answer bytes not yet sent (see
    /// [`Limits`]): past the limits the reader stops reading, and a session stops parsing what
    /// it has read.
    pub fn has_room(&self, unsent: usize, limits: &Limits) -> bool {
        match self {
            Session::Http(s) => s.has_room(unsent, limits),
            _ => self.in_flight() < limits.max_in_flight && unsent < limits.max_unsent_bytes,
        }
    }

    /// Whether the connection may be closed for idleness: nothing in flight, and (wire) no
    /// session locks that closing it would release.
    pub fn is_idle(&self) -> bool {
        match self {
            Session::Wire(s) => s.in_flight() == 0 && !s.holds_locks(),
            _ => self.in_flight() == 0,
        }
    }

    /// Serves the complete requests at the start of `buf`; returns the bytes used.
    pub fn on_bytes(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        buf: &[u8],
        out: &mut Vec<u8>,
        close: &mut bool,
    ) -> usize {
        if let Session::Unknown { protected } = *self {
            let Some(&first) = buf.first() else { return 0 };
            let wire = first == wire_frame::PREFACE[0];
            if protected {
                if wire {
                    wire_frame::encode_reply(out, 0, &WireReply::ProtocolError { reason: PROTECTED });
                } else {
                    Response::text(Status::Forbidden, PROTECTED)
                        .closing()
                        .encode(out, false, false, &cx.date);
                }
                *close = true;
                return buf.len();
            }
            *self = if wire { Session::Wire(Default::default()) } else { Session::Http(Default::default()) };
        }
        match self {
            Session::Unknown { .. } => 0,
            Session::Http(s) => s.on_bytes(svc, cx, buf, out, close),
            Session::Wire(s) => s.on_bytes(svc, cx, buf, out, close),
        }
    }

    /// The answer (or a later word) for the request in `slot` has come.
    pub fn on_reply(
        &mut self,
        cx: &Context<'_>,
        slot: usize,
        reply: Reply,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        match self {
            Session::Unknown { .. } => {}
            Session::Http(s) => s.on_reply(cx, slot, reply, out, close),
            Session::Wire(s) => s.on_reply(cx, slot, reply, out),
        }
    }

    /// News about the connection's session locks has come.
    pub fn on_push(&mut self, _cx: &Context<'_>, news: Reply, out: &mut Vec<u8>) {
        if let Session::Wire(s) = self {
            s.on_push(news, out);
        }
    }

    /// The client closed its side.
    pub fn on_eof(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        match self {
            Session::Unknown { .. } => {}
            Session::Http(s) => s.on_eof(svc, cx, out, close),
            Session::Wire(s) => s.on_eof(svc),
        }
    }

    /// A request began to arrive and did not finish in time: say so, and close ([`Session::on_end`]
    /// follows).
    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>, close: &mut bool) {
        match self {
            Session::Wire(_) => {
                wire_frame::encode_reply(out, 0, &WireReply::ProtocolError { reason: "request timeout" })
            }
            Session::Http(s) => s.on_timeout(cx, out, close),
            Session::Unknown { .. } => Response::text(Status::RequestTimeout, "ERR Request timeout")
                .closing()
                .encode(out, false, false, &cx.date),
        }
        *close = true;
    }

    /// The reader has stopped for good, by the server's decision (the session asked to close,
    /// a timeout, a failed write) or the client's (`Connection: close`). A connection the
    /// server ends is settled at once, not when what it waits for comes: its waits are
    /// withdrawn and (wire) its session locks released, before its last answers go out.
    pub fn on_end(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        match self {
            Session::Unknown { .. } => {}
            Session::Http(s) => s.on_end(svc, cx, out, close),
            // A wire connection closes only when the server ends it.
            Session::Wire(s) => s.teardown(svc),
        }
    }

    /// The server is shutting down: answer what can be answered, withdraw the waits, close.
    pub fn on_shutdown(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        match self {
            Session::Unknown { .. } => {}
            Session::Http(s) => s.on_shutdown(svc, cx, out, close),
            Session::Wire(s) => {
                s.on_eof(svc);
                wire_frame::encode_reply(
                    out,
                    0,
                    &WireReply::ProtocolError { reason: "server shutting down" },
                );
            }
        }
        *close = true;
    }

    /// The connection is gone.
    pub fn teardown(&mut self, svc: &mut impl LockService) {
        match self {
            Session::Unknown { .. } => {}
            Session::Http(s) => s.teardown(svc),
            Session::Wire(s) => s.teardown(svc),
        }
    }
}

/// The answer to a connection over the limit, in its protocol.
pub fn busy_answer(wire: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if wire {
        wire_frame::encode_reply(&mut out, 0, &WireReply::ProtocolError { reason: "too many connections" });
    } else {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        Response::text(Status::ServiceUnavailable, "ERR Too many connections").closing().encode(
            &mut out,
            false,
            false,
            date.as_bytes(),
        );
    }
    out
}

/// What a plaintext client of a server that requires TLS is told, in its protocol, before the
/// connection is closed.
pub const TLS_REQUIRED: &str = "ERR TLS required: this server serves only TLS clients (connect with \
https://, or a client given RINGLOCK_CA)";

/// The answer to a plaintext client of a server that requires TLS ([`TLS_REQUIRED`]): a wire
/// protocol error, or an HTTP 400 in plain text.
pub fn tls_required_answer(wire: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if wire {
        wire_frame::encode_reply(&mut out, 0, &WireReply::ProtocolError { reason: TLS_REQUIRED });
    } else {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        Response::text(Status::BadRequest, TLS_REQUIRED).closing().encode(
            &mut out,
            false,
            false,
            date.as_bytes(),
        );
    }
    out
}

/// A lock service for session tests: one shard, every answer at once, the clock at 0.
#[cfg(test)]
pub(crate) mod testing {
    use crate::api::{self, LockService, Reply, Request};
    use crate::route::ResourceHasher;
    use crate::shard::{Shard, Ticket, TokenSeries};

    pub struct OneShard(pub Shard);

    impl Default for OneShard {
        fn default() -> Self {
            OneShard(Shard::new(ResourceHasher::new(), TokenSeries::after(0)))
        }
    }

    impl LockService for OneShard {
        fn submit<S: AsRef<str>>(&mut self, slot: usize, req: &Request<S>) -> Option<Reply> {
            api::apply(&mut self.0, req, Ticket(slot as u64), Ticket(u64::MAX), 0)
        }
        fn submit_all<S: AsRef<str>>(&mut self, slot: usize, req: &Request<S>) -> (Option<Reply>, usize) {
            (self.submit(slot, req), 0)
        }
        fn withdraw(&mut self, slot: usize, resource: &str, _owner: &str) {
            self.0.cancel_wait(resource, Ticket(slot as u64), 0);
        }
        fn abandon(&mut self, _slot: usize, _resource: &str, _owner: &str) {}
        fn release_for_gone(&mut self, resource: &str, owner: &str, token: u64) {
            self.0.release(resource, owner, Some(token), 0);
        }
        fn attach(&mut self, _slot: usize, session: u64, timeout_ms: u64) -> Option<Reply> {
            Some(Reply::Attached { session: session.max(1), timeout_ms, resumed: session != 0 })
        }
        fn detach(&mut self, _session: u64) {}
        fn cluster(&mut self, _slot: usize, _op: api::ClusterOp) -> Option<Reply> {
            Some(Reply::Cluster(None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;
    use crate::config::Limits;
    use crate::metrics::Histogram;

    fn feed(session: &mut Session, bytes: &[u8]) -> (Vec<u8>, bool) {
        let (limits, secret, times) = (Limits::default(), Secret::new("changeme"), Histogram::default());
        let failures = std::cell::Cell::new(0);
        let unsent = Default::default();
        let cx = Context {
            limits: &limits,
            secret: &secret,
            date: [b'D'; 29],
            service_times: &times,
            auth_failures: &failures,
            unsent: &unsent,
            peer: &"127.0.0.1:1".parse().unwrap(),
        };
        let (mut out, mut close) = (Vec::new(), false);
        session.on_bytes(&mut testing::OneShard::default(), &cx, bytes, &mut out, &mut close);
        (out, close)
    }

    #[test]
    fn protected_mode_refuses_other_machines_in_their_protocol() {
        let (out, close) = feed(&mut Session::new(true), b"GET /health HTTP/1.1\r\n\r\n");
        let text = String::from_utf8(out).unwrap();
        assert!(close);
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n") && text.ends_with(PROTECTED), "{text}");

        let mut hello = wire_frame::PREFACE.to_vec();
        wire_frame::encode_request(&mut hello, 1, &wire_frame::WireRequest::Hello { secret: b"changeme" });
        let (out, close) = feed(&mut Session::new(true), &hello);
        assert!(close);
        assert_eq!(wire_frame::parse_reply(&out), Ok((0, WireReply::ProtocolError { reason: PROTECTED })));

        let (out, close) = feed(&mut Session::new(false), b"GET /health HTTP/1.1\r\n\r\n");
        assert!(!close && out.starts_with(b"HTTP/1.1 200 OK\r\n"), "this machine is served");
    }

    #[test]
    fn the_first_byte_picks_the_protocol() {
        let mut s = Session::new(false);
        assert_eq!(feed(&mut s, b""), (Vec::new(), false));
        assert!(matches!(s, Session::Unknown { .. }));
        feed(&mut s, b"\0RL\x01");
        assert!(matches!(s, Session::Wire(_)));
        let mut s = Session::new(false);
        feed(&mut s, b"P");
        assert!(matches!(s, Session::Http(_)));
    }
}
