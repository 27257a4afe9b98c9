//! The Rust client of [ringlock](https://crates.io/crates/ringlock), a distributed lock server
//! with fencing tokens, server-side waiting and session locks.
//!
//! It speaks ringlock's binary wire protocol: an async [`Client`] (tokio) with any number of
//! requests in flight on one connection, a [`blocking::Client`] with a [`blocking::Guard`]
//! that releases its lock when dropped, and the protocol's codec itself ([`frame`]), which
//! the server and ringlock's load generator use too. It depends on no server code, so a
//! worker on any OS can use it. Configured like the reference `lockserver` SDKs:
//! `LOCKSERVER_ADDR`, `LOCKSERVER_OWNER`, `LOCKSERVER_SECRET`, from the environment or `.env`
//! ([`Config::from_env`]).
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
//! write_with_fence(guard.token());          // the storage refuses writes with lower tokens
//! guard.extend(Some(Duration::from_secs(30)))?;
//! // released when `guard` is dropped
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`config`]: where to connect and who we are;
//! - [`frame`]: the wire protocol's bytes (pure: check, parse, encode);
//! - [`Client`] (in `conn`): the async connection;
//! - [`blocking`]: the same without async, and the guard;
//! - [`Error`]: what a call can fail with.

pub mod blocking;
pub mod config;
mod conn;
mod error;
pub mod frame;

pub use config::{Config, DEFAULT_ADDR, DEFAULT_SECRET};
pub use conn::{AcquireOptions, Client, Lease, LockInfo, Lost};
pub use error::Error;
