//! The composition root: wires a server together from its parts. It binds the listeners
//! (`net::listener`), starts one core per thread (`runtime`), and gives each
//! core its listener to serve connections from (`net`); nothing below this module
//! knows how the others are put together.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::SystemTime;

use crate::config::Config;
use crate::log::Level;
use crate::net::{self, Settings, listener};
use crate::route::{ResourceHasher, Router};
use crate::runtime::{self, Cores, MAX_THREADS};

/// A running server.
pub struct Server {
    addr: SocketAddr,
    cores: Cores,
}

impl Server {
    /// Binds the listeners and starts one thread per core; returns once every core serves.
    pub fn start(config: Config) -> io::Result<Server> {
        let n = config.threads.clamp(1, MAX_THREADS);
        let listeners = listener::bind(config.addr, n)?;
        let addr = listeners[0].local_addr()?;
        // Tokens start at the wall clock in nanoseconds, and shard i of n hands out every n-th
        // number after it. A restarted server's tokens are above the last run's as long as
        // none of that run's shards granted more than 1e9 / n locks a second on average (one
        // core grants a few tens of millions at most) and the clock did not step back by more
        // than the downtime.
        let token_seed = config.token_seed.unwrap_or_else(|| {
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        let setup = runtime::Setup { router: Router::new(ResourceHasher::new(), n), token_seed };
        let settings = Settings { secret: config.secret.clone(), limits: config.limits.clone() };
        let cores = Cores::start(setup, listeners, move |core, listener| {
            serve_core(core, Rc::new(settings.clone()), listener)
        })?;
        Ok(Server { addr, cores })
    }

    /// The address the server listens on (with the port chosen, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down gracefully: every core stops accepting, answers what is in flight (waits
    /// are withdrawn), closes its connections (at the latest after the shutdown timeout), and
    /// its thread ends. Returns when all have.
    pub fn shutdown(self) {
        self.cores.shutdown();
        self.cores.wait();
    }

    /// Waits until every core has stopped.
    pub fn wait(self) {
        self.cores.wait();
    }
}

/// What one core serves: connections from its listener until shutdown, then the answers
/// still in flight, for at most the shutdown timeout.
async fn serve_core(core: Rc<runtime::Core>, settings: Rc<Settings>, listener: std::net::TcpListener) {
    let listener = tokio_uring::net::TcpListener::from_std(listener);
    // Returns at shutdown, closing this core's listener.
    net::listener::accept_loop(core.clone(), settings.clone(), listener).await;
    let left = core.drained(settings.limits.shutdown_timeout).await;
    if left > 0 {
        crate::log!(
            Level::Warn,
            "core {}: closed {left} connections still busy after the shutdown timeout",
            core.id()
        );
    }
}
