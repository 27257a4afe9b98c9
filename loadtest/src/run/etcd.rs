//! The etcd target's connection driver, the second kind beside the byte protocols' `closed`
//! and `open` loops. A connection is one `etcd-client` client: one gRPC channel, so one HTTP/2
//! connection to one member, with its session lease (see [`crate::proto::etcd`]). A request
//! is a call that awaits its answer, and concurrent calls on one channel are separate HTTP/2
//! streams that etcd may apply in any order; so where a byte protocol pipelines an acquire and
//! its release on one ordered stream, here a release is sent only once its acquire is
//! answered:
//! - closed loop: `--depth` lanes per connection, each one request at a time with a script and
//!   an owner name of its own (lane `l` of connection `c` is worker `c * depth + l`), so every
//!   connection keeps `depth` requests in flight as a pipelined one does;
//! - open loop: each request leaves on its schedule as a call of its own, and a release waits
//!   for its acquire's answer first (its latency still counts from its intended time).
//!
//! Statistics, budget, stopping between cycles and the report are the run's own ([`Shared`],
//! [`Running`]), as for every target.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, Error};
use tokio::task::JoinHandle;

use super::conn::Pending;
use super::open::Schedule;
use super::shared::Shared;
use super::{CONNECT_TIMEOUT, Done, FULL_BACKOFF, Job, MAX_OPEN_IN_FLIGHT, RunError, Running, failover};
use crate::cli::{Load, Plan};
use crate::op::{Op, Outcome};
use crate::proto::etcd::{self, Lease};
use crate::proto::{IN_ORDER, Name};
use crate::schedule::{self, Wait};
use crate::stats::Report;
use crate::workload::{Script, Step};

/// Longest wait for one call's answer before it counts as an error. etcd gives up on a
/// proposal after 5 s plus two election timeouts; waiting as long would only stall the lane.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a session's lease to be revoked when the run ends.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection: an etcd client (one gRPC channel to one member) and the lease its locks are
/// put with.
#[derive(Clone)]
struct EtcdConn {
    client: Client,
    lease: LeaseUse,
}

/// The lease of a connection's locks, as granted.
#[derive(Clone, Copy, Debug)]
enum LeaseUse {
    /// The session's lease: its id, and its TTL in seconds as etcd granted it.
    Session { id: i64, ttl_s: i64 },
    /// Each acquire grants its own lease of this many seconds first.
    PerAcquire { ttl_s: i64 },
}

/// An etcd client error, described: a gRPC status by its code and message (the metadata
/// tonic's own text adds says nothing here).
fn describe(e: Error) -> String {
    match e {
        Error::GRpcStatus(status) => format!("etcd: {:?}: {}", status.code(), status.message()),
        other => format!("etcd: {other}"),
    }
}

impl EtcdConn {
    /// Opens a connection to `addr`, and its opening exchange, which shows the member answering
    /// before the run starts: the session's lease granted, or, for locks with leases of their
    /// own, one granted and revoked. Either way the TTL is the one etcd gives (it raises one
    /// below its minimum), not `ttl_s` as asked.
    async fn open(addr: SocketAddr, lease: Lease, ttl_s: i64) -> Result<EtcdConn, RunError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(RPC_TIMEOUT)
            // A member without a leader refuses at once rather than holding the call.
            .with_require_leader(true);
        let setup = |e: Error| RunError::Setup(format!("{addr}: {}", describe(e)));
        let mut client = Client::connect([format!("http://{addr}")], Some(options)).await.map_err(setup)?;
        let lease = match lease {
            Lease::Session => {
                let granted = client.lease_grant(ttl_s, None).await.map_err(setup)?;
                LeaseUse::Session { id: granted.id(), ttl_s: granted.ttl() }
            }
            Lease::PerAcquire => {
                // One lease granted and revoked, to learn the TTL etcd gives each acquire's.
                let granted = client.lease_grant(ttl_s, None).await.map_err(setup)?;
                client.lease_revoke(granted.id()).await.map_err(setup)?;
                LeaseUse::PerAcquire { ttl_s: granted.ttl() }
            }
        };
        Ok(EtcdConn { client, lease })
    }

    /// The TTL of this connection's locks, ms.
    fn lease_ms(&self) -> u64 {
        let (LeaseUse::Session { ttl_s, .. } | LeaseUse::PerAcquire { ttl_s }) = self.lease;
        u64::try_from(ttl_s).unwrap_or(0).saturating_mul(1000)
    }

    /// Keeps the session's lease alive until aborted (etcd's leader renews it, no Raft entry);
    /// `None` for locks with leases of their own.
    fn keep_alive(&self) -> Option<JoinHandle<()>> {
        let LeaseUse::Session { id, ttl_s } = self.lease else { return None };
        let mut leases = self.client.lease_client();
        Some(tokio::task::spawn_local(async move {
            let Ok((mut keeper, mut answers)) = leases.keep_alive(id).await else { return };
            loop {
                tokio::time::sleep(etcd::keepalive_interval(ttl_s)).await;
                if keeper.keep_alive().await.is_err() || !matches!(answers.message().await, Ok(Some(_))) {
                    // The run's acquires will show the lease gone, as errors.
                    return;
                }
            }
        }))
    }

    /// Revokes the session's lease, which deletes any lock still on it, so that the next run
    /// starts on an empty key space (best effort, bounded).
    async fn close(&self) {
        if let LeaseUse::Session { id, .. } = self.lease {
            let mut leases = self.client.lease_client();
            let _ = tokio::time::timeout(REVOKE_TIMEOUT, leases.revoke(id)).await;
        }
    }
}

/// One worker on a connection: its owner name, one call at a time (a clone per call in the
/// open loop; the calls share the connection's channel).
#[derive(Clone)]
struct Lane {
    conn: EtcdConn,
    owner: Name,
}

impl Lane {
    /// Sends `op` and waits for its answer: its outcome, or the error it got.
    async fn call(self, op: Op) -> Result<Outcome, String> {
        let txn = match op {
            Op::Acquire { key } => {
                let lease = match self.conn.lease {
                    LeaseUse::Session { id, .. } => id,
                    LeaseUse::PerAcquire { ttl_s } => {
                        let mut leases = self.conn.client.lease_client();
                        leases.grant(ttl_s, None).await.map_err(describe)?.id()
                    }
                };
                etcd::acquire(key, &self.owner, lease)
            }
            Op::Release { key } => etcd::release(key, &self.owner),
            Op::Health => return Err("etcd: no health probe".into()),
        };
        let answer = self.conn.client.kv_client().txn(txn).await.map_err(describe)?;
        Ok(etcd::classify(op.kind(), answer.succeeded()))
    }
}

/// Takes the answer to `p` (sent at or due at `p.at`) into the run.
fn answer(shared: &Shared, p: Pending, result: Result<Outcome, String>, script: Option<&mut Script>) {
    let now = Instant::now();
    match result {
        Ok(outcome) => shared.answer(p, outcome, now, script, String::new),
        Err(why) => shared.answer(p, Outcome::Error, now, script, move || why),
    }
}

/// Does `job` against the etcd members of `plan`: opens every connection, keeps the sessions'
/// leases alive while it runs, and revokes them at its end.
pub(super) async fn drive(plan: &Plan, job: Job) -> Result<Done, RunError> {
    // A failover's attempts never release, but are locks of a session, as a client that has
    // one acquires: the attempt is then the transaction alone.
    let lease = match job {
        Job::Load => Lease::for_workload(plan.workload.releases()),
        Job::Failover(_) => Lease::Session,
    };
    let ttl_s = etcd::lease_seconds(plan.ttl_ms);
    let mut conns = Vec::with_capacity(plan.load.connections());
    for conn in 0..plan.load.connections() {
        conns.push(EtcdConn::open(plan.endpoint(conn).addr, lease, ttl_s).await?);
    }
    let keepers: Vec<JoinHandle<()>> = conns.iter().filter_map(EtcdConn::keep_alive).collect();
    let done = match job {
        Job::Load => Ok(Done::Load(Box::new(load(plan, &conns).await))),
        Job::Failover(f) => {
            let attempt = |server: usize, key: u64| {
                Lane { conn: conns[server].clone(), owner: Name::new(server as u64) }
                    .call(Op::Acquire { key })
            };
            failover::measure(plan, f, attempt).await.map(Done::Failover)
        }
    };
    for keeper in &keepers {
        keeper.abort();
    }
    for conn in &conns {
        conn.close().await;
    }
    done
}

/// A load run of `plan` on the open connections `conns`.
async fn load(plan: &Plan, conns: &[EtcdConn]) -> Report {
    let lease_ms = conns.first().map(EtcdConn::lease_ms);
    let running = Running::start(plan);
    let shared = &running.shared;
    let mut tasks = Vec::new();
    match plan.load {
        Load::Closed { depth, .. } => {
            for (c, conn) in conns.iter().enumerate() {
                for l in 0..depth {
                    let worker = c * depth + l;
                    let lane = Lane { conn: conn.clone(), owner: Name::new(worker as u64) };
                    let script = Script::new(plan.workload, plan.seed, worker);
                    tasks.push(tokio::task::spawn_local(closed_lane(lane, script, shared.clone())));
                }
            }
        }
        Load::Open { rate, batch, .. } => {
            for (c, conn) in conns.iter().enumerate() {
                let lane = Lane { conn: conn.clone(), owner: Name::new(c as u64) };
                let script = Script::new(plan.workload, plan.seed, c);
                let schedule = Schedule { conn: c, conns: conns.len(), rate, batch };
                tasks.push(tokio::task::spawn_local(open_conn(lane, script, schedule, shared.clone())));
            }
        }
    }
    // The open loop's calls run as tasks of their own; the run waits for them through the
    // count in flight.
    running.finish(plan, lease_ms, tasks, Vec::new()).await
}

/// One closed-loop lane: a request, its answer, the next, until the run stops and its script
/// is between cycles.
async fn closed_lane(lane: Lane, mut script: Script, shared: Rc<Shared>) {
    loop {
        let now = Instant::now();
        if shared.stopping(now) && !script.mid_cycle() {
            return;
        }
        let wanted = script.wants();
        let step = script.next(now);
        shared.note_wants(wanted, script.wants());
        match step {
            Step::Send(op) => {
                shared.spend();
                shared.in_flight.set(shared.in_flight.get() + 1);
                let sent = Instant::now();
                if let Op::Release { key } = op {
                    shared.note_release_sent(key, sent);
                }
                let result = lane.clone().call(op).await;
                answer(
                    &shared,
                    Pending { kind: op.kind(), at: sent, id: IN_ORDER },
                    result,
                    Some(&mut script),
                );
            }
            Step::Wait(d) => tokio::time::sleep(d).await,
            Step::AwaitReply => unreachable!("a lane has its answer before it asks for the next step"),
        }
    }
}

/// One open-loop connection: sends each batch when it is due (late, never early, if it cannot
/// keep up), each request a call of its own, until the run stops.
async fn open_conn(lane: Lane, mut script: Script, schedule: Schedule, shared: Rc<Shared>) {
    let in_flight = Rc::new(Cell::new(0usize));
    // The call of the last acquire, which its release waits for.
    let mut acquiring: Option<JoinHandle<()>> = None;
    let send = |op: Op, due: Instant, acquiring: &mut Option<JoinHandle<()>>| {
        shared.in_flight.set(shared.in_flight.get() + 1);
        in_flight.set(in_flight.get() + 1);
        let after = match op {
            Op::Release { .. } => acquiring.take(),
            Op::Acquire { .. } | Op::Health => None,
        };
        let (lane, shared, in_flight) = (lane.clone(), shared.clone(), in_flight.clone());
        let call = tokio::task::spawn_local(async move {
            if let Some(acquire) = after {
                let _ = acquire.await;
            }
            let result = lane.call(op).await;
            answer(&shared, Pending { kind: op.kind(), at: due, id: IN_ORDER }, result, None);
            in_flight.set(in_flight.get() - 1);
        });
        if let Op::Acquire { .. } = op {
            *acquiring = Some(call);
        }
    };
    let mut k = 0u64;
    loop {
        let now = Instant::now();
        if shared.stopping(now) {
            // Finish the cycle at once, so that no lock is left held.
            if script.mid_cycle()
                && let Step::Send(op) = script.next(now)
            {
                send(op, now, &mut acquiring);
            }
            return;
        }
        let since_start = now - shared.start;
        let mut sent = false;
        while in_flight.get() < MAX_OPEN_IN_FLIGHT && shared.budget.get() > 0 {
            let due = schedule.due(k);
            if due > since_start {
                break;
            }
            let intended = shared.start + due;
            for _ in 0..schedule.batch {
                let Step::Send(op) = script.next(now) else { break };
                shared.spend();
                shared.stats.borrow_mut().record_lag(now - intended, shared.measured(intended));
                send(op, intended, &mut acquiring);
            }
            k += 1;
            sent = true;
        }
        if sent {
            // Let the calls just made leave before looking at the clock again.
            tokio::task::yield_now().await;
            continue;
        }
        if in_flight.get() >= MAX_OPEN_IN_FLIGHT {
            tokio::time::sleep(FULL_BACKOFF).await;
            continue;
        }
        match schedule::wait(now - shared.start, schedule.due(k)) {
            Wait::Send => {}
            Wait::Spin => tokio::task::yield_now().await,
            Wait::Sleep(until) => {
                let until = (shared.start + until).min(shared.deadline);
                tokio::time::sleep_until(until.into()).await;
            }
        }
    }
}
