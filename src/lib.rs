//! ringlock: a distributed lock server.
//!
//! # Layout
//! In the order a request meets them:
//! - [`config`]: command line, environment, `.env`, defaults, limits;
//! - [`runtime`]: one thread per core, each an io_uring event loop; the cross-core mesh;
//! - [`net`]: each core's listener and connection loops (bytes in, bytes out);
//! - [`proto`]: bytes to requests and replies to bytes: [`proto::http`] and the binary
//!   [`proto::wire`], sharing one port;
//! - [`auth`]: the shared secret;
//! - [`api`]: the protocol-neutral [`api::Request`] and [`api::Reply`], and what a request may
//!   ask for;
//! - [`route`]: the resource hash, and which shard owns a name;
//! - [`shard`]: one core's lock table, waiters and fencing tokens (no I/O, no clock);
//! - [`timer`]: the timer wheel that ends leases and waits on time.
//!
//! Beside the path: [`metrics`] (counts for `/metrics`) and [`log`]. For clients: [`client`],
//! the Rust client of the wire protocol, and the `lock` and `status` commands.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod log;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod route;
pub mod runtime;
pub mod shard;
pub mod timer;
