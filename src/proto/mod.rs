//! The protocols ringlock speaks, each turning bytes into [`crate::api::Request`]s and
//! [`crate::api::Reply`]s into bytes, and [`Session`]: a connection's protocol state.

pub mod http;

use crate::api::Reply;
use crate::runtime::core::Core;

/// A connection's protocol state. See [`http::session::Session`] for what each call means.
pub enum Session {
    Http(http::session::Session),
}

impl Default for Session {
    fn default() -> Self {
        Session::Http(http::session::Session::default())
    }
}

impl Session {
    /// Requests parsed and not yet answered.
    pub fn in_flight(&self) -> usize {
        match self {
            Session::Http(s) => s.in_flight(),
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
        match self {
            Session::Http(s) => s.on_bytes(core, conn, buf, out, close),
        }
    }

    /// A reply (or later news) for the request in `slot`.
    pub fn on_reply(
        &mut self,
        core: &Core,
        _conn: u32,
        slot: usize,
        reply: Reply,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        match self {
            Session::Http(s) => s.on_reply(core, slot, reply, out, close),
        }
    }

    /// The client closed its side.
    pub fn on_eof(&mut self, core: &Core, conn: u32, out: &mut Vec<u8>, close: &mut bool) {
        match self {
            Session::Http(s) => s.on_eof(core, conn, out, close),
        }
    }

    /// The connection is gone.
    pub fn teardown(&mut self, core: &Core, conn: u32) {
        match self {
            Session::Http(s) => s.teardown(core, conn),
        }
    }
}
