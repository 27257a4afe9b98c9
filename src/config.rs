//! Server configuration: command line, then environment, then `.env` (loaded into the
//! environment at start-up without overriding it), then the defaults below. The names are the
//! reference server's (`--bind/-b`, `--port/-p`, `LOCKSERVER_BIND_IP`, `LOCKSERVER_PORT`,
//! `LOCKSERVER_SECRET`), so an existing deployment's settings carry over.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;

use crate::auth::{DEFAULT_SECRET, Secret};

/// The server's command-line arguments and their environment variables.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// IP address to listen on.
    #[arg(short, long, env = "LOCKSERVER_BIND_IP", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// TCP port of the API (0: any free port).
    #[arg(short, long, env = "LOCKSERVER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Worker threads: one per core, each with its own listener and its share of the locks
    /// [default: the cores this process may run on].
    #[arg(long, env = "RINGLOCK_THREADS")]
    pub threads: Option<NonZeroUsize>,
}

/// Per-connection and per-request limits. Each has a unit in its name and a reason at its
/// default.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body. The lock endpoints' JSON is two names and three numbers; 64 KiB
    /// leaves room for any name we accept and refuses anything else early (413).
    pub max_body_bytes: usize,
    /// Requests one connection may have in flight (parsed, not yet answered); past it we stop
    /// reading from that connection until answers go out.
    pub max_in_flight: usize,
    /// Answer bytes queued for a connection that is not reading them; past it we stop reading
    /// its requests, so a client that never reads cannot grow our memory.
    pub max_unsent_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 64 * 1024, max_in_flight: 1024, max_unsent_bytes: 1024 * 1024 }
    }
}

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub threads: usize,
    pub secret: Secret,
    pub limits: Limits,
    /// The value fencing tokens count up from. `None` (always, outside tests): the wall clock
    /// in nanoseconds, so that tokens keep rising across restarts.
    pub token_seed: Option<u64>,
}

impl Config {
    /// The configuration from parsed arguments and the environment (`LOCKSERVER_SECRET`).
    pub fn from_args(args: &ServerArgs) -> Config {
        let secret = std::env::var("LOCKSERVER_SECRET").unwrap_or_else(|_| DEFAULT_SECRET.to_owned());
        Config {
            addr: SocketAddr::new(args.bind, args.port),
            threads: args.threads.map_or_else(available_cores, NonZeroUsize::get),
            secret: Secret::new(secret),
            limits: Limits::default(),
            token_seed: None,
        }
    }

    /// A configuration for tests and embedding: loopback, any free port, the given secret.
    pub fn local(threads: usize, secret: &str) -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            threads,
            secret: Secret::new(secret),
            limits: Limits::default(),
            token_seed: None,
        }
    }
}

/// The cores this process may run on (its affinity mask, so `taskset` is respected).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}
