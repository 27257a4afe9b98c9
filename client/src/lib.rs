//! The Rust client of [ringlock](https://crates.io/crates/ringlock), a distributed lock server
//! with fencing tokens, server-side waiting and session locks.
//!
//! It speaks ringlock's binary wire protocol: an async [`Client`] (tokio) with any number of
//! requests in flight on one connection, a [`blocking::Client`], a [`Guard`] (and
//! [`blocking::Guard`]) that releases its lock when dropped, and the protocol's codec itself
//! ([`frame`]), which the server and ringlock's load generator use too. It depends on no
//! server code, so a worker on any OS can use it. Configured like the reference `lockserver`
//! SDKs: `LOCKSERVER_ADDR`, `LOCKSERVER_OWNER`, `LOCKSERVER_SECRET`, from the environment or
//! `.env` ([`Config::from_env`]).
//!
//! The client keeps its own time. Every call has a timeout ([`Config::call_timeout`]); one
//! that runs out closes the connection. A guard counts its lease on this process's clock from
//! the moment its last acquire or renewal was *sent*, and its [`LostSignal`] fires when the
//! lock can no longer be counted on: the server's `LOST` push, a renewal refused or failed,
//! the connection's end, or, whatever the server does (a server that stopped answering
//! included), a [`safety_margin`] before the lease could end there.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use ringlock_client::blocking::Client;
//! use ringlock_client::{AcquireOptions, Config};
//!
//! # fn write_with_fence(_token: u64) {}
//! # fn main() -> Result<(), ringlock_client::Error> {
//! let client = Client::connect(&Config::from_env())?;
//! let opts = AcquireOptions {
//!     ttl: Some(Duration::from_secs(30)),   // the lease: the server frees the lock after it
//!     wait: Some(Duration::from_secs(5)),   // wait server-side if someone holds it
//!     session: true,                        // and free it if this connection drops
//! };
//! let guard = client.lock("s3://bucket/key", opts)?;
//! let lost = guard.lost();
//! write_with_fence(guard.token());          // the storage refuses writes with lower tokens
//! guard.extend(Some(Duration::from_secs(30)))?;
//! if let Some(why) = lost.check() {         // or lost.wait(), or wait_timeout(..)
//!     eprintln!("stop writing: {why}");
//! }
//! // released when `guard` is dropped
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`config`]: where to connect and who we are;
//! - [`frame`]: the wire protocol's bytes (pure: check, parse, encode);
//! - [`Client`] (in `conn`): the async connection, its timeouts and socket options;
//! - [`guard`]: a held lock on this process's clock, and the signal that it is lost;
//! - [`blocking`]: the same without async;
//! - [`Error`]: what a call can fail with.

pub mod blocking;
pub mod config;
mod conn;
mod error;
pub mod frame;
pub mod guard;

pub use config::{Config, DEFAULT_ADDR, DEFAULT_CALL_TIMEOUT, DEFAULT_SECRET};
pub use conn::{AcquireOptions, Client, Lease, LockInfo, Lost};
pub use error::Error;
pub use guard::{Guard, LostReason, LostSignal, safety_margin};
