//! Sockets: the per-core listeners and the connection loops, where bytes come in and go out.

pub mod conn;
pub mod listener;
