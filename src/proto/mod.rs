//! The protocols ringlock speaks, each turning bytes into [`crate::api::Request`]s and
//! [`crate::api::Reply`]s into bytes, and [`Session`]: a connection's protocol state.
//!
//! Both protocols share one port: a wire-protocol client opens with a NUL byte
//! ([`wire::frame::PREFACE`]), which no HTTP request can start with, so the first byte a
//! connection sends decides its protocol for good.

pub mod http;
pub mod wire;

use crate::api::Reply;
use crate::runtime::core::Core;

/// A connection's protocol state. See [`http::session::Session`] and
/// [`wire::session::Session`] for what each call means.
#[derive(Default)]
pub enum Session {
    /// No byte has arrived yet.
    #[default]
    Unknown,
    Http(http::session::Session),
    Wire(wire::session::Session),
}

impl Session {
    /// Requests parsed and not yet answered.
    pub fn in_flight(&self) -> usize {
        match self {
            Session::Unknown => 0,
            Session::Http(s) => s.in_flight(),
            Session::Wire(s) => s.in_flight(),
        }
    }

    /// Serves the complete requests at the start of `buf`; returns the bytes used.
    pub fn on_bytes(
        &mut self,
        core: &Core,
        conn: u32,
        buf: &[u8],
        out: &mut Vec<u8>,
        close: &mut bool,
    ) -> usize {
        if let Session::Unknown = self {
            match buf.first() {
                None => return 0,
                Some(&first) if first == wire::frame::PREFACE[0] => *self = Session::Wire(Default::default()),
                Some(_) => *self = Session::Http(Default::default()),
            }
        }
        match self {
            Session::Unknown => 0,
            Session::Http(s) => s.on_bytes(core, conn, buf, out, close),
            Session::Wire(s) => s.on_bytes(core, conn, buf, out, close),
        }
    }

    /// A reply (or later news) for the request in `slot`.
    pub fn on_reply(&mut self, core: &Core, slot: usize, reply: Reply, out: &mut Vec<u8>, close: &mut bool) {
        match self {
            Session::Unknown => {}
            Session::Http(s) => s.on_reply(core, slot, reply, out, close),
            Session::Wire(s) => s.on_reply(slot, reply, out),
        }
    }

    /// The client closed its side.
    pub fn on_eof(&mut self, core: &Core, conn: u32, out: &mut Vec<u8>, close: &mut bool) {
        match self {
            Session::Unknown => {}
            Session::Http(s) => s.on_eof(core, conn, out, close),
            Session::Wire(s) => s.on_eof(core, conn),
        }
    }

    /// The connection is gone.
    pub fn teardown(&mut self, core: &Core, conn: u32) {
        match self {
            Session::Unknown => {}
            Session::Http(s) => s.teardown(core, conn),
            Session::Wire(s) => s.teardown(core, conn),
        }
    }
}
