//! The composition root: wires a server together from its parts. It binds the listeners
//! (`net::listener`), starts one core per thread (`runtime`), and gives each
//! core its listener to serve connections from (`net`); nothing below this module
//! knows how the others are put together.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::config::{Config, Storage};
use crate::log::Level;
use crate::net::{self, Settings, listener};
use crate::route::{ResourceHasher, Router};
use crate::runtime::{self, CoreLog, Cores, MAX_THREADS};
use crate::store::dir::DataDir;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    cores: Cores,
    /// The data directory, locked for as long as the server runs.
    _data: Option<DataDir>,
}

impl Server {
    /// Binds the listeners and starts one thread per core; returns once every core serves.
    pub fn start(config: Config) -> io::Result<Server> {
        let n = config.threads.clamp(1, MAX_THREADS);
        let listeners = listener::bind(config.addr, n)?;
        let addr = listeners[0].local_addr()?;
        let first = config.token_seed.unwrap_or(0);
        // Shard i of n hands out every n-th token after the seed: a durable server's seed is
        // above every token its log has seen, so tokens keep rising across restarts.
        let (setup, data) = match &config.storage {
            Storage::InMemory => {
                let setup = runtime::Setup {
                    router: Router::new(ResourceHasher::new(), n),
                    token_seed: first,
                    logs: None,
                };
                (setup, None)
            }
            Storage::Durable { dir, fsync } => {
                let started = Instant::now();
                let data = DataDir::open(dir).map_err(io::Error::other)?;
                let recovery = data.recover(n, first).map_err(io::Error::other)?;
                let held: usize = recovery.cores.iter().map(|c| c.recovered.locks.len()).sum();
                crate::log!(
                    Level::Info,
                    "recovered {held} locks from {} in {} ms",
                    dir.display(),
                    started.elapsed().as_millis()
                );
                let logs = recovery
                    .cores
                    .into_iter()
                    .map(|c| CoreLog {
                        dir: c.dir,
                        segment: c.next_seq,
                        fsync: *fsync,
                        locks: c.recovered.locks,
                        snapshot_bytes: c.snapshot_bytes,
                    })
                    .collect();
                let router = Router::new(recovery.hasher, n);
                (runtime::Setup { router, token_seed: recovery.next_token - 1, logs: Some(logs) }, Some(data))
            }
        };
        let settings = Settings { secret: config.secret.clone(), limits: config.limits.clone() };
        let cores = Cores::start(setup, listeners, move |core, listener| {
            serve_core(core, Rc::new(settings.clone()), listener)
        })?;
        Ok(Server { addr, cores, _data: data })
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
