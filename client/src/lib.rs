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
//! that runs out gives the connection up. A guard counts its lease on this process's clock
//! from the moment its last acquire or renewal was *sent*, and its [`LostSignal`] fires when
//! the lock can no longer be counted on: the server's `LOST` push, a renewal refused, or,
//! whatever the server does (a server that stopped answering included), a [`safety_margin`]
//! before the lease could end there.
//!
//! It speaks protocol version 2 by default ([`Protocol`]): its session locks belong to a
//! session that the server keeps for [`Config::session_timeout`] after a connection goes.
//! When the connection fails, the client reconnects by itself and resumes the session; calls
//! in flight fail ([`Error::Interrupted`]: their outcome is unknown), calls made meanwhile
//! wait for the new connection. A guard stays held across the reconnect as long as its
//! deadlines hold (a session lock's counts the session's timeout too), and is lost at once
//! if the session did not survive ([`LostReason::SessionExpired`]).
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
//!     session: true,                        // and free it if this client goes away
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
//! - [`config`]: where to connect, who we are, which protocol;
//! - [`frame`]: the wire protocol's bytes (pure: check, parse, encode);
//! - `lease`: the plain data calls take and give;
//! - `standing`: where a lease or a session stands on this process's clock (pure), and the
//!   [`LostSignal`] that watches it;
//! - `session`: the client's side of its session (pure bookkeeping);
//! - `link`: the connection under a client: opening it, its tasks, its timeouts, reconnecting;
//! - [`Client`] (in `conn`): the calls;
//! - [`guard`]: a held lock and [`Client::lock`], which makes one;
//! - [`blocking`]: the same without async;
//! - [`Error`]: what a call can fail with.

pub mod blocking;
pub mod config;
mod conn;
mod error;
pub mod frame;
pub mod guard;
mod lease;
mod link;
mod session;
mod standing;
pub mod tls;

pub use config::{
    Config, DEFAULT_ADDR, DEFAULT_CALL_TIMEOUT, DEFAULT_SECRET, DEFAULT_SESSION_TIMEOUT, Protocol,
};
pub use conn::Client;
pub use error::Error;
pub use guard::{Guard, LostReason, LostSignal, safety_margin};
pub use lease::{AcquireOptions, Lease, LockInfo, Lost};
pub use link::{RECONNECT_FIRST_PAUSE, RECONNECT_MAX_PAUSE};
pub use tls::TlsConfig;
