//! A run: connects, opens every connection with its protocol's handshake, drives them all
//! from one thread (a current-thread tokio runtime, so the generator is exactly one core
//! however many connections it has), prints a progress line each second, stops by itself at
//! the deadline or the request bound, and gathers the [`Report`].
//!
//! This module is the run from start to end, and the one place that picks a protocol by the
//! plan's target; past that, connections see their target only through [`Protocol`], or, for
//! etcd, whose gRPC is no byte protocol, through its own connection driver. The rest, in the
//! order a run uses it:
//! - `conn`: connecting, the handshake, the read buffer, and matching each reply to its
//!   request in flight, by order (as HTTP/1.1 and RESP answer) or by id (as the wire protocol
//!   may answer out of order);
//! - `shared`: what all connections share (budget, requests in flight, hand-offs, statistics)
//!   and taking replies into it;
//! - `closed`: the closed loop, one task per connection keeping `depth` requests in flight;
//! - `open`: the open loop, a writer sending on schedule and a reader per connection;
//! - `etcd`: the etcd target's driver, beside `closed` and `open`: one gRPC channel per
//!   connection, its session lease, and the same two loops over requests that each await
//!   their answer;
//! - `failover`: a failover's timing instead of a load: a grant, the leader's SIGKILL, and
//!   attempts on the survivors until the first grant after it;
//! - `report`: the progress line, the CPU samples and the final report.

mod closed;
mod conn;
mod etcd;
mod failover;
mod open;
mod report;
mod shared;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::task::{JoinHandle, LocalSet};

pub use self::conn::{CONNECT_TIMEOUT, MIN_READ_BYTES, READ_BUF_BYTES};
pub use self::etcd::RPC_TIMEOUT;
pub use self::failover::{ATTEMPT_TIMEOUT, FailoverReport, PROBE_INTERVAL};
use self::open::Schedule;
pub use self::open::{FULL_BACKOFF, MAX_OPEN_IN_FLIGHT};
use self::report::CpuSample;
use self::shared::Shared;
use crate::cli::{Failover, Load, Plan, Target};
use crate::op::Op;
use crate::proto::Protocol;
use crate::proto::http::HttpClient;
use crate::proto::redis::{self, RedisClient};
use crate::proto::wire::WireClient;
use crate::stats::Report;
use crate::workload::Script;

/// How long a run waits, after it stops sending, for the replies still in flight; those that
/// do not come count as errors (a server that stopped answering).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a run could not be made at all (as opposed to errors counted during it).
#[derive(Debug)]
pub enum RunError {
    /// The runtime could not be built.
    Runtime(io::Error),
    /// A connection could not be opened.
    Connect(SocketAddr, io::Error),
    /// A connection's handshake failed (the wire protocol's `HELLO`, loading the Redis
    /// release script, granting an etcd session's lease), or a failover could not begin.
    Setup(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            RunError::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            RunError::Setup(why) => write!(f, "cannot prepare the server: {why}"),
        }
    }
}

impl std::error::Error for RunError {}

/// What a run is for.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// A load test: the plan's workload and load, and a [`Report`].
    Load,
    /// A failover's timing: the plan's servers, and a [`FailoverReport`].
    Failover(Failover),
}

/// What a run gives, by its [`Job`].
enum Done {
    /// Boxed: a report is several times the size of a failover's.
    Load(Box<Report>),
    Failover(FailoverReport),
}

/// Runs `plan` to the end on the calling thread and reports.
pub fn run(plan: &Plan) -> Result<Report, RunError> {
    match block_on(drive(plan, Job::Load))? {
        Done::Load(report) => Ok(*report),
        Done::Failover(_) => unreachable!("a load run reports a load"),
    }
}

/// Times a failover of the servers of `plan`: a grant, the SIGKILL of `failover.kill_pid`,
/// and the first grant after it.
pub fn failover(plan: &Plan, failover: Failover) -> Result<FailoverReport, RunError> {
    match block_on(drive(plan, Job::Failover(failover)))? {
        Done::Failover(report) => Ok(report),
        Done::Load(_) => unreachable!("a failover reports a failover"),
    }
}

/// Runs `job` on a current-thread runtime: the generator is one core.
fn block_on(job: impl Future<Output = Result<Done, RunError>>) -> Result<Done, RunError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RunError::Runtime)?;
    LocalSet::new().block_on(&runtime, job)
}

/// Does `job` with each connection's protocol client, and the lease its requests ask for:
/// the one place that looks at the target.
async fn drive(plan: &Plan, job: Job) -> Result<Done, RunError> {
    match plan.target {
        Target::Http | Target::Health => {
            let (endpoints, secret, ttl, wait) =
                (plan.endpoints.clone(), plan.secret.clone(), plan.ttl_ms, plan.wait_ms);
            let make = move |conn: usize| {
                HttpClient::new(&endpoints[conn % endpoints.len()].host, &secret, ttl, wait, conn)
            };
            with_bytes(plan, job, ttl, make).await
        }
        Target::Redis => {
            let ttl = plan.ttl_ms.unwrap_or(redis::DEFAULT_TTL_MS);
            // Redis keeps a loaded script for every connection: the first one loads it.
            let load = matches!(job, Job::Load) && plan.workload.releases();
            let make = move |conn| RedisClient::new(ttl, conn).loading_release_script(load && conn == 0);
            with_bytes(plan, job, Some(ttl), make).await
        }
        Target::Wire => {
            let (secret, ttl, wait) = (plan.secret.clone(), plan.ttl_ms, plan.wait_ms);
            with_bytes(plan, job, ttl, move |conn| WireClient::new(&secret, ttl, wait, conn)).await
        }
        Target::Etcd => etcd::drive(plan, job).await,
    }
}

/// Does `job` over a byte protocol, each connection with the client `make` gives.
async fn with_bytes<P, F>(plan: &Plan, job: Job, lease_ms: Option<u64>, make: F) -> Result<Done, RunError>
where
    P: Protocol + Clone + 'static,
    F: Fn(usize) -> P,
{
    match job {
        Job::Load => drive_with(plan, lease_ms, make).await.map(|r| Done::Load(Box::new(r))),
        Job::Failover(failover) => {
            // Each attempt on a connection of its own: one the dead leader will never answer
            // must not hold back the ones behind it.
            let attempt = |endpoint: usize, key: u64| {
                conn::one_request(make(endpoint), plan.endpoint(endpoint).addr, Op::Acquire { key })
            };
            failover::measure(plan, failover, attempt).await.map(Done::Failover)
        }
    }
}

/// Connects, opens and drives the connections with the clients `make` gives, until the run
/// stops and its replies are in (or [`DRAIN_TIMEOUT`] has passed).
async fn drive_with<P, F>(plan: &Plan, lease_ms: Option<u64>, make: F) -> Result<Report, RunError>
where
    P: Protocol + Clone + 'static,
    F: Fn(usize) -> P,
{
    let conns = plan.load.connections();
    let mut streams = Vec::with_capacity(conns);
    let tls = plan.tls.as_ref().map(|tls| tls.rustls()).transpose().map_err(RunError::Setup)?;
    for conn in 0..conns {
        streams.push(conn::connect(plan.endpoint(conn).addr, tls.as_ref()).await?);
    }
    let protos: Vec<P> = (0..conns).map(make).collect();
    for (stream, proto) in streams.iter_mut().zip(&protos) {
        if let Some(handshake) = proto.handshake() {
            conn::handshake(stream, &handshake).await?;
        }
    }

    let running = Running::start(plan);
    let shared = &running.shared;
    let mut tasks = Vec::with_capacity(conns);
    let mut readers = Vec::new();
    for (conn, (stream, proto)) in streams.into_iter().zip(protos).enumerate() {
        let script = Script::new(plan.workload, plan.seed, conn);
        match plan.load {
            Load::Closed { depth, .. } => tasks.push(tokio::task::spawn_local(closed::closed_loop(
                proto,
                stream,
                script,
                depth,
                shared.clone(),
            ))),
            Load::Open { rate, batch, .. } => {
                // The plan refuses TLS with the open loop, which splits the socket itself.
                let conn::Stream::Plain(stream) = stream else {
                    return Err(RunError::Setup("the open loop runs over plaintext only".into()));
                };
                let schedule = Schedule { conn, conns, rate, batch };
                let (writer, reader) = open::open_loop(proto, stream, script, schedule, shared.clone());
                tasks.push(writer);
                readers.push(reader);
            }
        }
    }
    Ok(running.finish(plan, lease_ms, tasks, readers).await)
}

/// What every load run keeps beside its connections, from its start (connections open) to its
/// report: the shared state, the CPU sample at the end of the warm-up, the progress line.
struct Running {
    shared: Rc<Shared>,
    first_sample: Rc<Cell<Option<CpuSample>>>,
    sampler: JoinHandle<()>,
    progress: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts the clock of a run of `plan`, its warm-up first.
    fn start(plan: &Plan) -> Running {
        let shared = Rc::new(Shared::new(plan, Instant::now()));
        let first_sample = Rc::new(Cell::new(None));
        let sampler = {
            let (first_sample, pid, warmup_end) = (first_sample.clone(), plan.server_pid, shared.warmup_end);
            tokio::task::spawn_local(async move {
                tokio::time::sleep_until(warmup_end.into()).await;
                first_sample.set(Some(CpuSample::take(pid)));
            })
        };
        let progress =
            plan.progress.then(|| tokio::task::spawn_local(report::report_progress(shared.clone())));
        Running { shared, first_sample, sampler, progress }
    }

    /// Waits for the senders (`tasks`, which stop by themselves at the deadline), gives the
    /// replies in flight [`DRAIN_TIMEOUT`] more, ends the `readers`, and reports; requests
    /// still unanswered count as errors.
    async fn finish(
        self,
        plan: &Plan,
        lease_ms: Option<u64>,
        mut tasks: Vec<JoinHandle<()>>,
        readers: Vec<JoinHandle<()>>,
    ) -> Report {
        let shared = &self.shared;
        let hard_stop = tokio::time::Instant::from_std(shared.deadline + DRAIN_TIMEOUT);
        for task in &mut tasks {
            if tokio::time::timeout_at(hard_stop, &mut *task).await.is_err() {
                task.abort();
            }
        }
        while shared.in_flight.get() > 0 && tokio::time::Instant::now() < hard_stop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for task in readers.iter().chain(self.progress.iter()).chain([&self.sampler]) {
            task.abort();
        }
        let lost = shared.in_flight.get();
        if lost > 0 {
            shared.in_flight.set(0);
            shared.stats.borrow_mut().record_lost(lost, lost, || {
                format!("{lost} requests unanswered {} s after the run stopped", DRAIN_TIMEOUT.as_secs())
            });
        }
        let end = CpuSample::take(plan.server_pid);
        report::report(plan, lease_ms, shared, self.first_sample.get(), end)
    }
}
