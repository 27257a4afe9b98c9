//! The composition root: wires a server together from its parts. It binds the listeners
//! (`net::listener`), or takes over the ones a service manager passed, starts one core per
//! thread (`runtime`), and gives each core its listeners to serve connections from (`net`);
//! nothing below this module knows how the others are put together.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;

use crate::cluster::{self, ClusterConfig, Handle};
use crate::config::{Config, Storage};
use crate::log::Level;
use crate::net::tls::{TlsConfigs, TlsSettings};
use crate::net::{self, Settings, listener};
use crate::route::{ResourceHasher, Router};
use crate::runtime::{self, CoreLog, Cores, Keep, MAX_THREADS, panic};
use crate::shard::Caps;
use crate::store::dir::DataDir;
use crate::tls::TlsFiles;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    cores: Cores,
    probes: Prober,
    /// The data directory, locked for as long as the server runs.
    _data: Option<DataDir>,
    /// The cluster's consensus, if this server is a member of one.
    cluster: Option<Handle>,
    /// Where a reload sends new TLS configs to the cores, and the files they are read from.
    tls: Option<(watch::Sender<TlsConfigs>, TlsFiles)>,
}

/// A probe a core answers: the channel its answer goes back on.
type Probe = mpsc::Sender<()>;

/// Asks every core whether it is alive and serving (for a watchdog); may be sent to another
/// thread.
#[derive(Clone)]
pub struct Prober {
    cores: Vec<UnboundedSender<Probe>>,
}

impl Prober {
    /// Whether every core answered within `timeout`: its event loop turns and it still accepts
    /// connections.
    pub fn alive(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (answer, answers) = mpsc::channel();
        if self.cores.iter().any(|core| core.send(answer.clone()).is_err()) {
            return false;
        }
        drop(answer);
        (0..self.cores.len())
            .all(|_| answers.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok())
    }
}

impl Server {
    /// Binds the listeners and starts one thread per core; returns once every core serves.
    pub fn start(config: Config) -> io::Result<Server> {
        let n = config.threads.clamp(1, MAX_THREADS);
        let listeners = listener::bind(config.addr, n)?.into_iter().map(|l| vec![l]).collect();
        Self::start_on(config, listeners)
    }

    /// Starts on listening sockets that a service manager made and passed (systemd's socket
    /// activation) instead of binding `config.addr`; every core accepts on all of them.
    pub fn start_adopted(config: Config, sockets: Vec<OwnedFd>) -> io::Result<Server> {
        let n = config.threads.clamp(1, MAX_THREADS);
        Self::start_on(config, listener::adopt(sockets, n)?)
    }

    /// Starts one core per entry of `listeners`, each serving the listeners of its entry.
    fn start_on(config: Config, listeners: Vec<Vec<TcpListener>>) -> io::Result<Server> {
        let n = listeners.len();
        let addr = listeners[0][0].local_addr()?;
        // Read before anything starts: a certificate that cannot be read stops the start.
        let tls = match &config.tls {
            Some(files) => {
                let configs = TlsConfigs::read(files).map_err(io::Error::other)?;
                Some((watch::channel(configs), files.clone()))
            }
            None => None,
        };
        let peer_tls = tls.as_ref().map(|((_, configs), _)| configs.clone());
        let (setup, data) = setup(&config, n, addr, peer_tls)?;
        let cluster = match &setup.keep {
            Keep::Cluster(handle) => Some(handle.clone()),
            _ => None,
        };
        let settings = Settings {
            secret: config.secret.clone(),
            limits: config.limits.clone(),
            tls: tls.as_ref().map(|((_, configs), files)| TlsSettings {
                configs: configs.clone(),
                allow_plaintext: files.allow_plaintext,
            }),
        };
        let tls = tls.map(|((sender, _), files)| (sender, files));
        let (probes, probed): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded_channel()).unzip();
        let work = listeners.into_iter().zip(probed).collect();
        let cores = Cores::start(setup, work, move |core, (listeners, probed)| {
            serve_core(core, Rc::new(settings.clone()), listeners, probed)
        })?;
        Ok(Server { addr, cores, probes: Prober { cores: probes }, _data: data, cluster, tls })
    }

    /// Reads the TLS certificate and keys again (SIGHUP): connections accepted from now on
    /// get the new ones, open connections go on with theirs. A file that cannot be read, or
    /// a key that does not fit the certificate, leaves the old ones in force, and says why.
    /// `Ok(false)`: this server has no TLS.
    pub fn reload_tls(&self) -> Result<bool, String> {
        let Some((sender, files)) = &self.tls else { return Ok(false) };
        sender.send_replace(TlsConfigs::read(files)?);
        Ok(true)
    }

    /// The address the server listens on (with the port chosen, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What asks the cores whether they are alive (for a watchdog).
    pub fn prober(&self) -> Prober {
        self.probes.clone()
    }

    /// Shuts down gracefully: every core stops accepting, answers what is in flight (waits
    /// are withdrawn), closes its connections (at the latest after the shutdown timeout), and
    /// its thread ends. Returns when all have.
    pub fn shutdown(self) {
        self.cores.shutdown();
        self.cores.wait();
        if let Some(cluster) = self.cluster {
            cluster.shutdown();
        }
    }

    /// Waits until every core has stopped.
    pub fn wait(self) {
        self.cores.wait();
    }
}

/// What the cores start from: with a data directory, its lock and what it held, read back.
/// Shard i of n hands out every n-th token after the seed: a durable server's seed is above
/// every token its log has seen, so tokens keep rising across restarts.
/// A cluster member's consensus speaks TLS with `peer_tls`, if given.
fn setup(
    config: &Config,
    n: usize,
    addr: SocketAddr,
    peer_tls: Option<watch::Receiver<TlsConfigs>>,
) -> io::Result<(runtime::Setup, Option<DataDir>)> {
    let first = config.token_seed.unwrap_or(0);
    let epoch = Instant::now();
    let caps = Caps { locks: config.limits.max_locks, waiters: config.limits.max_waiters };
    let fresh = |keep| runtime::Setup {
        router: Router::new(ResourceHasher::new(), n),
        token_seed: first,
        epoch,
        keep,
        caps,
    };
    let Storage::Durable { dir, fsync } = &config.storage else {
        return Ok((fresh(Keep::InMemory), None));
    };
    if let Some(member) = &config.cluster {
        // The cluster keeps the locks; the cores start empty and serve once this member leads.
        let clock = Arc::new(move || epoch.elapsed().as_millis() as u64);
        let api_addr = advertised(addr, &member.peers[&member.node_id]);
        let mut cluster = ClusterConfig::new(
            member.node_id,
            member.peers.clone(),
            api_addr,
            config.secret.clone(),
            dir.clone(),
            clock,
        );
        cluster.join = member.join;
        cluster.tls = peer_tls;
        return Ok((fresh(Keep::Cluster(cluster::start(cluster)?)), None));
    }
    let started = Instant::now();
    let data = DataDir::open(dir).map_err(io::Error::other)?;
    let recovery = data.recover(n, first).map_err(io::Error::other)?;
    let held: usize = recovery.cores.iter().map(|c| c.recovered.locks.len()).sum();
    let ms = started.elapsed().as_millis() as u64;
    crate::log!(
        Level::Info,
        [locks = held, ms = ms],
        "recovered {held} locks from {} in {ms} ms",
        dir.display()
    );
    let max_session = recovery.cores.iter().map(|c| c.recovered.max_session).max().unwrap_or(0);
    let logs = recovery
        .cores
        .into_iter()
        .map(|c| CoreLog {
            sessions: c.recovered.sessions,
            max_session,
            dir: c.dir,
            segment: c.next_seq,
            fsync: *fsync,
            locks: c.recovered.locks,
            snapshot_bytes: c.snapshot_bytes,
        })
        .collect();
    let router = Router::new(recovery.hasher, n);
    let setup =
        runtime::Setup { router, token_seed: recovery.next_token - 1, epoch, keep: Keep::Logs(logs), caps };
    Ok((setup, Some(data)))
}

/// The client address a member tells the others: where it listens, with its consensus
/// address's host when it listens on every address (`0.0.0.0` is nobody's address to dial).
fn advertised(listening: SocketAddr, raft_addr: &str) -> String {
    if !listening.ip().is_unspecified() {
        return listening.to_string();
    }
    let host = raft_addr.rsplit_once(':').map_or(raft_addr, |(host, _)| host);
    format!("{host}:{}", listening.port())
}

/// What one core serves: connections from its listeners until shutdown, then the answers
/// still in flight, for at most the shutdown timeout. It answers probes while it accepts.
async fn serve_core(
    core: Rc<runtime::Core>,
    settings: Rc<Settings>,
    listeners: Vec<TcpListener>,
    probed: UnboundedReceiver<Probe>,
) {
    let probes = panic::spawn_vital(core.id(), "the watchdog's probes", answer_probes(core.clone(), probed));
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let listener = tokio_uring::net::TcpListener::from_std(l);
            // Each returns at shutdown, closing its listener.
            let accept = net::listener::accept_loop(core.clone(), settings.clone(), listener);
            panic::spawn_vital(core.id(), "the accept loop", accept)
        })
        .collect();
    for accept_loop in accepting {
        // A panic there has ended the process.
        let _ = accept_loop.await;
    }
    probes.abort();
    let left = core.drained(settings.limits.shutdown_timeout).await;
    if left > 0 {
        crate::log!(
            Level::Warn,
            [core = core.id(), connections = left],
            "core {}: closed {left} connections still busy after the shutdown timeout",
            core.id()
        );
    }
}

/// Answers each probe, until the core stops.
async fn answer_probes(core: Rc<runtime::Core>, mut probed: UnboundedReceiver<Probe>) {
    while let Some(answer) = probed.recv().await {
        if core.stopping() {
            return;
        }
        let _ = answer.send(());
    }
}
