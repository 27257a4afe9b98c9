//! ringlock: a distributed lock server.
//!
//! # Layout
//! In the order a request meets them:
//! - [`server`]: the composition root, wiring listeners, cores and connections together;
//! - [`config`]: command line, environment, `.env`, the config file, defaults, limits;
//! - `net`: each core's listener and connection loops (bytes in, bytes out, mailboxes), and
//!   their transport: the socket, or TLS over it (`net::tls`, rustls sans-io);
//! - `proto`: bytes to requests and replies to bytes: `proto::http` and the binary
//!   `proto::wire` (its codec is [`ringlock_client::frame`]), sharing one port; a session
//!   asks for lock work only through `api::LockService`;
//! - `auth`: the shared secret, the wrong tries a connection gets, the count of refusals;
//! - `api`: the protocol-neutral `api::Request` and `api::Reply`, what a request may ask
//!   for, and `api::LockService`, all a protocol may ask of the server;
//! - `runtime`: one thread per core, each an io_uring event loop with its `runtime::Core`:
//!   turns of work, the cross-core mesh, mailboxes, the timer task;
//! - [`route`]: the resource hash, and which core owns a name;
//! - [`shard`]: one core's lock table, the order of its names, waiters, fencing tokens and
//!   caps (no I/O, no clock); every change it makes is also a log record in its journal;
//! - [`timer`]: the timer wheel that ends leases and waits on time;
//! - `store`: the log's record format and recovery (pure), the data directory and the log
//!   writer (the only file I/O), used by the runtime's journal task;
//! - `cluster`: replication on openraft: the replicated log and its state machine (recovery's
//!   fold), the members' network, the leader's start, and the handle the cores use.
//!
//! Beside the path: [`tls`] (the TLS files and the rustls configs read from them), `metrics`
//! (counts for `/metrics`), [`log`](mod@log) (text or JSON lines),
//! and [`systemd`] (readiness, watchdog, socket activation). For clients: [`cli`], the `lock`
//! and `status` subcommands, built on the `ringlock-client` crate, and the operator's `locks`
//! and `release` (over HTTP).

// Public: what the binary, the benchmarks and the integration tests use. The rest is the
// server's inside.
mod api;
mod auth;
pub mod cli;
// Replication (issue 12): built and tested on its own; the server wires it in next, and the
// allowance for unused items goes with that.
#[cfg_attr(not(test), allow(dead_code, unused_imports))]
mod cluster;
pub mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod log;
mod metrics;
mod net;
mod proto;
pub mod route;
mod runtime;
pub mod server;
pub mod shard;
mod store;
pub mod systemd;
pub mod timer;
pub mod tls;
