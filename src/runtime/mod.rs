//! The thread-per-core runtime: one OS thread per core, each running its own `tokio-uring`
//! (io_uring) event loop with its own [`Core`] (shard, mailboxes, clock), timer task and mesh
//! inbox. Cores share nothing but the mesh's channels. What a core serves (its listener and
//! connections) is given by the caller, the composition root (`crate::server`), as a future
//! per core: the runtime knows nothing of sockets.

mod clock;
mod commit;
mod core;
mod journal;
mod mailbox;
mod mesh;
pub mod panic;
mod sessions;
mod ticket;

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use std::path::PathBuf;

use crate::cluster::Handle;
use crate::route::Router;
use crate::shard::{Caps, TokenSeries};
use crate::store::recovery::RecoveredLock;
use crate::store::wal::{Fsync, Wal};

pub use self::core::{Core, Serving};
pub use self::mailbox::{Delivery, Mailbox};
pub use self::ticket::ConnId;

use self::core::{CoreSetup, Durable};
use self::mesh::{Batch, Mesh, Msg};

/// Most cores a server runs on (tickets give the core 8 bits).
pub const MAX_THREADS: usize = 256;
/// Submission queue entries per core's io_uring.
const RING_ENTRIES: u32 = 1024;
/// Mesh batches one inbox wake-up takes at most, so that a flood from the other cores cannot
/// starve this core's own connections.
const INBOX_BATCHES: usize = 64;

/// What every core of a server is made with.
pub struct Setup {
    /// Routes resources to cores; its core count is the number of threads.
    pub router: Router,
    /// The value fencing tokens count up from (shard `i` of `n` hands out every `n`-th number
    /// after it).
    pub token_seed: u64,
    /// The moment the cores' clock counts from (the consensus stamps leaderships with it too).
    pub epoch: Instant,
    /// Where the cores' changes go: nowhere (memory only), each core's own log, or the
    /// cluster's replicated log.
    pub keep: Keep,
    /// The most locks and waiters the server holds; each core holds its share.
    pub caps: Caps,
}

/// Where a server keeps its locks.
pub enum Keep {
    InMemory,
    /// Each core's log, in core order.
    Logs(Vec<CoreLog>),
    /// A cluster's log: a core serves only while this member leads.
    Cluster(Handle),
}

/// Where a durable core's log goes, and what it recovered.
pub struct CoreLog {
    /// The core's directory.
    pub dir: PathBuf,
    /// The number of the log segment this run writes.
    pub segment: u64,
    pub fsync: Fsync,
    /// The locks it held.
    pub locks: Vec<RecoveredLock>,
    /// The resumable sessions it is home to, `(id, timeout ms)`.
    pub sessions: Vec<(u64, u64)>,
    /// The highest session id any core's log has seen.
    pub max_session: u64,
    /// Bytes of its newest snapshot.
    pub snapshot_bytes: u64,
}

/// The running cores.
pub struct Cores {
    threads: Vec<JoinHandle<()>>,
    inboxes: Vec<UnboundedSender<Batch>>,
}

impl Cores {
    /// Starts one thread per core; each builds its [`Core`], starts the core's own tasks, then
    /// runs `serve(core, work)` with its share of `work` (one item per core) until it returns.
    /// Returns once every core serves.
    pub fn start<T, F, Fut>(setup: Setup, work: Vec<T>, serve: F) -> io::Result<Cores>
    where
        T: Send + 'static,
        F: Fn(Rc<Core>, T) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let n = setup.router.cores();
        assert_eq!(work.len(), n, "one piece of work per core");
        let (senders, inboxes) = mesh::channels(n);
        let epoch = setup.epoch;
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        let (mut logs, cluster) = match setup.keep {
            Keep::InMemory => (None, None),
            Keep::Logs(logs) => (Some(logs.into_iter()), None),
            Keep::Cluster(handle) => (None, Some(handle)),
        };
        for (id, (item, inbox)) in work.into_iter().zip(inboxes).enumerate() {
            let log = logs.as_mut().map(|l| l.next().expect("one log per core"));
            let core = CoreSetup {
                id,
                router: setup.router.clone(),
                epoch,
                tokens: TokenSeries::for_shard(setup.token_seed, id, n),
                caps: Caps::share(setup.caps, n),
                mesh: Mesh::new(senders.clone()),
                store: None,
                cluster: cluster.clone(),
            };
            let (ready, serve) = (ready_tx.clone(), serve.clone());
            let thread = std::thread::Builder::new()
                .name(format!("ringlock-core-{id}"))
                .spawn(move || run_core(core, log, inbox, ready, move |core| serve(core, item)))?;
            threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..n {
            ready_rx.recv().map_err(|_| io::Error::other("a core failed to start"))??;
        }
        Ok(Cores { threads, inboxes: senders })
    }

    /// Tells every core to shut down: each stops accepting, and its `serve` returns once what
    /// it had in flight is answered.
    pub fn shutdown(&self) {
        for core in &self.inboxes {
            let _ = core.send(vec![Msg::Shutdown]);
        }
    }

    /// Waits until every core has stopped.
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn run_core<Fut: Future<Output = ()>>(
    mut setup: CoreSetup,
    log: Option<CoreLog>,
    inbox: UnboundedReceiver<Batch>,
    ready: mpsc::Sender<io::Result<()>>,
    serve: impl FnOnce(Rc<Core>) -> Fut,
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
            let wal = match log {
                Some(log) => match Wal::create(&log.dir, log.segment, log.fsync) {
                    Ok(wal) => {
                        setup.store = Some(Durable {
                            locks: log.locks,
                            sessions: log.sessions,
                            max_session: log.max_session,
                            snapshot_bytes: log.snapshot_bytes,
                        });
                        Some(wal)
                    }
                    Err(e) => {
                        let _ = ready.send(Err(io::Error::new(
                            e.kind(),
                            format!("cannot start a log segment in {}: {e}", log.dir.display()),
                        )));
                        return;
                    }
                },
                None => None,
            };
            let cluster = setup.cluster.clone();
            let core = Rc::new(Core::new(setup));
            if let Some(wal) = wal {
                panic::spawn_vital(id, "the journal task", commit::run(core.clone(), commit::Sink::Wal(wal)));
            }
            if let Some(handle) = cluster {
                panic::spawn_vital(id, "the role task", core.clone().follow_roles(handle.roles()));
                panic::spawn_vital(id, "the admin task", core.clone().run_changes(handle.clone()));
                panic::spawn_vital(
                    id,
                    "the journal task",
                    commit::run(core.clone(), commit::Sink::Raft(handle)),
                );
            }
            panic::spawn_vital(id, "the timer task", core.clone().run_timers());
            panic::spawn_vital(id, "the date task", core.clone().run_date());
            panic::spawn_vital(id, "the mesh inbox", inbox_loop(core.clone(), inbox));
            let _ = ready.send(Ok(()));
            serve(core).await;
        })
    }));
    if let Err(panic) = served {
        // A core's event loop itself failed: its share of the locks is gone, so the server
        // must not go on half-alive.
        panic::die(id, "the event loop", &*panic);
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
        core.serve_batches(batches.drain(..));
    }
}
