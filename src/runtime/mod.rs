//! The thread-per-core runtime: one OS thread per core, each running its own `tokio-uring`
//! (io_uring) event loop with its own listener, shard, timer task and mesh inbox. Cores share
//! nothing but the mesh's channels.

pub mod core;
pub mod mesh;

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::config::Config;
use crate::log::Level;
use crate::net::listener;
use crate::route::ResourceHasher;

use self::core::{Core, CoreSetup};
use self::mesh::{Batch, Mesh, Msg};

/// Most cores a server runs on (tickets give the core 8 bits).
pub const MAX_THREADS: usize = 256;
/// Submission queue entries per core's io_uring.
const RING_ENTRIES: u32 = 1024;
/// Mesh batches one inbox wake-up takes at most, so that a flood from the other cores cannot
/// starve this core's own connections.
const INBOX_BATCHES: usize = 64;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    cores: Vec<UnboundedSender<Batch>>,
}

impl Server {
    /// Binds the listeners and starts one thread per core; returns once every core serves.
    pub fn start(config: Config) -> io::Result<Server> {
        let n = config.threads.clamp(1, MAX_THREADS);
        let listeners = listener::bind(config.addr, n)?;
        let addr = listeners[0].local_addr()?;
        let (senders, inboxes) = mesh::channels(n);
        let hasher = ResourceHasher::new();
        let epoch = Instant::now();
        // Tokens start at the wall clock in nanoseconds, and shard i of n hands out every n-th
        // number after it (`TokenSeries::for_shard`). A restarted server's tokens are above the
        // last run's as long as none of that run's shards granted more than 1e9 / n locks a
        // second on average (one core grants a few tens of millions at most) and the clock did
        // not step back by more than the downtime.
        let token_seed = config.token_seed.unwrap_or_else(|| {
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        for (id, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let setup = CoreSetup {
                id,
                cores: n,
                hasher: hasher.clone(),
                secret: config.secret.clone(),
                limits: config.limits.clone(),
                epoch,
                token_seed,
                mesh: Mesh::new(senders.clone()),
            };
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringlock-core-{id}"))
                .spawn(move || run_core(setup, listener, inbox, ready))?;
            threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..n {
            ready_rx.recv().map_err(|_| io::Error::other("a core failed to start"))??;
        }
        Ok(Server { addr, threads, cores: senders })
    }

    /// The address the server listens on (with the port chosen, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down gracefully: every core stops accepting, answers what is in flight (waits
    /// are withdrawn), closes its connections (at the latest after the shutdown timeout), and
    /// its thread ends. Returns when all have.
    pub fn shutdown(self) {
        for core in &self.cores {
            let _ = core.send(vec![Msg::Shutdown]);
        }
        self.wait();
    }

    /// Waits until every core has stopped.
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn run_core(
    setup: CoreSetup,
    listener: std::net::TcpListener,
    inbox: UnboundedReceiver<Batch>,
    ready: mpsc::Sender<io::Result<()>>,
) {
    let runtime = match ring() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), format!("io_uring: {e}"))));
            return;
        }
    };
    let id = setup.id;
    let served = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async move {
            let core = Rc::new(Core::new(setup));
            let listener = tokio_uring::net::TcpListener::from_std(listener);
            tokio_uring::spawn(core.clone().run_timers());
            tokio_uring::spawn(core.clone().run_date());
            tokio_uring::spawn(inbox_loop(core.clone(), inbox));
            let _ = ready.send(Ok(()));
            // Returns at shutdown, closing this core's listener.
            listener::accept_loop(core.clone(), listener).await;
            let left = core.drain(core.limits.shutdown_timeout).await;
            if left > 0 {
                crate::log!(
                    Level::Warn,
                    "core {id}: closed {left} connections still busy after the shutdown timeout"
                );
            }
        })
    }));
    if served.is_err() {
        // A core's event loop itself failed (a connection's panic is caught before this):
        // its share of the locks is gone, so the server must not go on half-alive.
        crate::log!(Level::Error, "core {id} failed; exiting so that a supervisor restarts the server");
        std::process::exit(70);
    }
}

/// This core's io_uring runtime. Completions would by default interrupt the running thread
/// with an inter-processor interrupt to post them; one thread owns each ring and enters the
/// kernel on every turn of its loop anyway, so `COOP_TASKRUN` leaves them for that turn (a
/// sleeping thread is still woken) and `SINGLE_ISSUER` lets the kernel skip locking. Measured
/// under pipelined load, the interrupts took a quarter of the core. Kernels without the flags
/// (before 6.0) get a plain ring.
fn ring() -> io::Result<tokio_uring::Runtime> {
    let mut tuned = tokio_uring::uring_builder();
    tuned.setup_coop_taskrun().setup_single_issuer();
    tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES).uring_builder(&tuned))
        .or_else(|_| tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES)))
}

/// Serves what other cores send this one.
async fn inbox_loop(core: Rc<Core>, mut inbox: UnboundedReceiver<Batch>) {
    let mut batches = Vec::with_capacity(INBOX_BATCHES);
    while inbox.recv_many(&mut batches, INBOX_BATCHES).await > 0 {
        core.tick();
        for batch in batches.drain(..) {
            core.serve_batch(batch);
        }
        core.flush();
    }
}
