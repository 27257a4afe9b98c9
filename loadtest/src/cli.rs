//! The command line, and the validated [`Plan`] of a run it becomes. Turning arguments into a
//! plan is pure (the address is resolved, nothing is connected), so every refusal is tested
//! here: a plan that passes can be run as it stands.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use ringlock_client::{DEFAULT_ADDR, DEFAULT_SECRET};

use crate::responder;
use crate::workload::Workload;

/// Most connections one run opens: each holds a 128 KiB read buffer, and one generator core
/// gains nothing past a few hundred.
pub const MAX_CONNECTIONS: usize = 1024;

/// Deepest pipeline per connection (requests in flight).
pub const MAX_DEPTH: usize = 1024;

/// Longest run accepted, in seconds: load tests here stop by themselves, and an hour is far
/// past any measurement that needs it.
pub const MAX_DURATION_S: f64 = 3600.0;

/// Default bound on requests sent in a run (warm-up included): a backstop behind
/// `--duration`, about eight minutes at the two million requests/s one core can drive.
pub const DEFAULT_MAX_REQUESTS: u64 = 1_000_000_000;

/// loadtest: drives ringlock, the reference lockserver, Redis or etcd with lock traffic from one
/// core and reports throughput, latency percentiles, conflicts, errors and server CPU per
/// request.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a load test against a server.
    Run(RunArgs),
    /// Answer every request at once with a fixed reply: a server with no work of its own, to
    /// measure how much the generator can drive.
    Responder(ResponderArgs),
    /// Time small appends and their fdatasync in a directory: the floor under a durable
    /// server's latency (prints one JSON object).
    Fsync(FsyncArgs),
    /// Time a cluster's failover: check that a lock is granted, SIGKILL the leader's process,
    /// and time the first grant after it (by the new leader), trying the survivors every few
    /// milliseconds.
    Failover(FailoverArgs),
}

/// The arguments of `loadtest fsync`.
#[derive(Debug, Args)]
pub struct FsyncArgs {
    /// The directory to measure (a file is made in it, and removed).
    #[arg(long, default_value = ".")]
    pub dir: std::path::PathBuf,
    /// Appends to time.
    #[arg(long, default_value_t = 2_000)]
    pub count: usize,
    /// Bytes per append (a durable server's batch of one acquire is about 80).
    #[arg(long, default_value_t = 80)]
    pub bytes: usize,
    /// Give the file room for every append first (`fallocate`), as ringlock gives its log, so
    /// that each sync has no change of size to commit.
    #[arg(long)]
    pub room: bool,
}

/// Which server protocol a run speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The JSON API over HTTP/1.1 (ringlock and the reference lockserver server).
    Http,
    /// `GET /health` over HTTP/1.1: no lock work, the transport's ceiling (ringlock only).
    Health,
    /// The standard Redis lock: `SET key owner NX PX ttl`, compare-and-delete release.
    Redis,
    /// ringlock's binary wire protocol (health probe: `PING`).
    Wire,
    /// etcd's v3 API over gRPC: a lease, and a transaction that puts the key only if it does
    /// not exist; release deletes it if it is still ours.
    Etcd,
}

impl Target {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Http => "http",
            Target::Health => "health",
            Target::Redis => "redis",
            Target::Wire => "wire",
            Target::Etcd => "etcd",
        }
    }
}

/// The workloads, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkloadName {
    /// Acquire a random name of `--keys`, then release it.
    Uncontended,
    /// Acquire one of `--hot` names, then release it, all connections competing.
    Contended,
    /// Acquire one of `--hot` names, hold it `--hold-ms`, release it (one request in flight).
    Hold,
    /// Acquire a random name of `--keys` with a `--ttl-ms` lease, never release.
    Ttl,
}

/// The arguments of `loadtest run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Protocol to speak.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Server address, HOST:PORT; or a cluster's members, HOST:PORT,HOST:PORT,... (connection
    /// i goes to the i-th, round robin, as a fleet of clients spreads over the members).
    /// Loopback only unless --allow-remote. Owners are the generator's own (`lt-<connection>`:
    /// every connection is a competing worker), so LOCKSERVER_OWNER does not apply.
    #[arg(long, env = "LOCKSERVER_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// The shared secret: X-LOCKSERVER-SECRET over HTTP, HELLO over the wire protocol.
    #[arg(long, env = "LOCKSERVER_SECRET", hide_env_values = true, default_value = DEFAULT_SECRET)]
    pub secret: String,
    /// TLS (ringlock's http, wire and health targets, closed loop): trust this CA (PEM).
    #[arg(long, env = "RINGLOCK_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// TLS: this client's certificate (PEM), for a server that requires one (with --ca).
    #[arg(long, env = "RINGLOCK_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<std::path::PathBuf>,
    /// TLS: the client certificate's private key (PEM).
    #[arg(long, env = "RINGLOCK_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<std::path::PathBuf>,
    /// What the connections do [default: uncontended; none for the health target].
    #[arg(long, value_enum)]
    pub workload: Option<WorkloadName>,
    /// Connections, all driven from one thread.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// Closed loop: requests each connection keeps in flight (pipelined). Open loop: requests
    /// each connection sends together in one write, all due at the same instant.
    #[arg(long, short = 'd', default_value_t = 1)]
    pub depth: usize,
    /// Open loop: total requests per second, spread over the connections; latency is
    /// measured from each request's intended send time. Without it the loop is closed.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up, left out of the statistics.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stop after sending this many requests (warm-up included), whichever comes first.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUESTS)]
    pub requests: u64,
    /// Key space of the uncontended and TTL-only workloads.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Hot names of the contended and hold-and-release workloads.
    #[arg(long, default_value_t = 4)]
    pub hot: u64,
    /// Hold-and-release: how long a granted lock is held, ms (at least: tokio's timer ticks
    /// once a millisecond).
    #[arg(long, default_value_t = 1)]
    pub hold_ms: u64,
    /// Hold-and-release: pause after a conflict before retrying, ms (0: at once).
    #[arg(long, default_value_t = 0)]
    pub retry_ms: u64,
    /// Lease asked on every acquire, ms (HTTP: `expire` in seconds, fractional if needed; the
    /// reference server takes whole seconds only). Required by the ttl workload. Redis and
    /// etcd locks always carry one: 30000 if not given (etcd: whole seconds, rounded up, and
    /// at least its minimum, 2 s with its default election timeout).
    #[arg(long)]
    pub ttl_ms: Option<u64>,
    /// Server-side wait asked on every acquire, ms: a busy lock queues the acquire and hands
    /// it the lock when released (ringlock's HTTP `wait` and wire protocol; the reference server
    /// ignores the field and Redis and etcd's transaction have no such thing, so there a
    /// conflict is retried).
    #[arg(long, default_value_t = 0)]
    pub wait_ms: u64,
    /// Seed of the key choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server process to sample CPU time from (/proc/PID/stat) around the measured window.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A name for the run, copied into the report.
    #[arg(long)]
    pub label: Option<String>,
    /// No progress line each second.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
}

/// The arguments of `loadtest responder`.
#[derive(Debug, Args)]
pub struct ResponderArgs {
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long)]
    pub port: u16,
    /// Address to listen on. Loopback only unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Which fixed reply to send to each request.
    #[arg(long, value_enum, default_value = "http")]
    pub kind: responder::Kind,
    /// Exit after this many seconds (default: run until killed).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Allow an address that is not loopback.
    #[arg(long)]
    pub allow_remote: bool,
}

/// The arguments of `loadtest failover`.
#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Protocol to speak.
    #[arg(long, value_enum)]
    pub target: Target,
    /// The members that survive, HOST:PORT,HOST:PORT,... (not the one to be killed): attempts
    /// go to each in turn. Loopback only unless --allow-remote.
    #[arg(long)]
    pub addr: String,
    /// The shared secret (ringlock's targets).
    #[arg(long, env = "LOCKSERVER_SECRET", hide_env_values = true, default_value = DEFAULT_SECRET)]
    pub secret: String,
    /// The leader's process, sent SIGKILL once a grant shows the cluster serving.
    #[arg(long)]
    pub kill_pid: u32,
    /// Seconds to wait for the first grant after the kill before giving up.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Lease of each attempt's lock, ms (its names are never reused, and never released).
    #[arg(long)]
    pub ttl_ms: Option<u64>,
    /// A name for the measurement, copied into the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
}

/// A failover measurement: whom to kill, and how long to wait for the next grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failover {
    /// The leader's process.
    pub kill_pid: u32,
    /// The longest wait for the first grant after the kill.
    pub timeout: Duration,
}

/// The shape of the offered load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Each connection keeps a number of requests in flight.
    Closed {
        /// Connections.
        connections: usize,
        /// Requests in flight per connection.
        depth: usize,
    },
    /// A fixed total rate, on schedule, spread over the connections.
    Open {
        /// Connections.
        connections: usize,
        /// Requests per second, all connections together.
        rate: u64,
        /// Requests per write, due at the same instant.
        batch: usize,
    },
}

impl Load {
    /// The number of connections.
    pub fn connections(&self) -> usize {
        match *self {
            Load::Closed { connections, .. } | Load::Open { connections, .. } => connections,
        }
    }
}

/// One server the run connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// The address as given, for the HTTP `Host` header.
    pub host: String,
}

/// A validated run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The protocol.
    pub target: Target,
    /// TLS to the servers (`None`: plaintext).
    pub tls: Option<ringlock_client::TlsConfig>,
    /// Where the servers are (at least one): connection i goes to the i-th, round robin.
    pub endpoints: Vec<Endpoint>,
    /// The HTTP shared secret.
    pub secret: String,
    /// What each connection does.
    pub workload: Workload,
    /// Closed or open loop.
    pub load: Load,
    /// Lease on every acquire, ms.
    pub ttl_ms: Option<u64>,
    /// Server-side wait on every acquire, ms (0: none).
    pub wait_ms: u64,
    /// Warm-up before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Bound on requests sent.
    pub max_requests: u64,
    /// Seed of the key choices.
    pub seed: u64,
    /// Server process to sample CPU from.
    pub server_pid: Option<u32>,
    /// Print a progress line each second.
    pub progress: bool,
    /// Name copied into the report.
    pub label: Option<String>,
}

/// Seconds as a duration, refusing negative, non-finite and over-long values.
fn seconds(name: &str, s: f64, zero_ok: bool) -> Result<Duration, String> {
    let ok = s.is_finite() && s <= MAX_DURATION_S && (s > 0.0 || (zero_ok && s == 0.0));
    if !ok {
        let range = if zero_ok { "0" } else { "more than 0" };
        return Err(format!("--{name} must be {range} to {MAX_DURATION_S} seconds, not {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Plan {
    /// The server connection `conn` goes to.
    pub fn endpoint(&self, conn: usize) -> &Endpoint {
        &self.endpoints[conn % self.endpoints.len()]
    }

    /// The servers, as given, separated by commas.
    pub fn addrs(&self) -> String {
        let hosts: Vec<&str> = self.endpoints.iter().map(|e| e.host.as_str()).collect();
        hosts.join(",")
    }
}

/// Most servers one run spreads its connections over: a cluster has three or five members.
pub const MAX_ENDPOINTS: usize = 16;

/// The servers of `--addr`: one HOST:PORT, or several separated by commas, each resolved
/// (IPv4 first) and checked against the loopback rule.
pub fn endpoints(addr: &str, allow_remote: bool) -> Result<Vec<Endpoint>, String> {
    let mut out = Vec::new();
    for host in addr.split(',') {
        let resolved = host
            .to_socket_addrs()
            .map_err(|e| format!("--addr {host}: {e}"))?
            .min_by_key(|a| a.is_ipv6())
            .ok_or_else(|| format!("--addr {host} resolves to nothing"))?;
        check_loopback(resolved.ip(), allow_remote)?;
        out.push(Endpoint { addr: resolved, host: host.to_string() });
    }
    if out.len() > MAX_ENDPOINTS {
        return Err(format!("--addr names {} servers; at most {MAX_ENDPOINTS}", out.len()));
    }
    Ok(out)
}

/// Refuses a non-loopback address unless allowed.
pub fn check_loopback(ip: IpAddr, allow_remote: bool) -> Result<(), String> {
    if ip.is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!("{ip} is not a loopback address; pass --allow-remote to load a remote server"))
    }
}

impl RunArgs {
    /// The TLS settings of `--ca`, `--client-cert`, `--client-key` (their files read once
    /// now, so that a bad one is found before the run), if `--ca`.
    fn tls(&self) -> Result<Option<ringlock_client::TlsConfig>, String> {
        let tls = ringlock_client::TlsConfig::from_vars(|name| {
            let path = match name {
                "RINGLOCK_CA" => &self.ca,
                "RINGLOCK_CLIENT_CERT" => &self.client_cert,
                "RINGLOCK_CLIENT_KEY" => &self.client_key,
                _ => &None,
            };
            path.as_ref().map(|p| p.display().to_string())
        })?;
        if let Some(tls) = &tls {
            tls.rustls()?;
        }
        Ok(tls)
    }

    /// The plan these arguments describe, or why they describe none.
    pub fn plan(&self) -> Result<Plan, String> {
        let endpoints = endpoints(&self.addr, self.allow_remote)?;
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!("--connections must be 1 to {MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_DEPTH).contains(&self.depth) {
            return Err(format!("--depth must be 1 to {MAX_DEPTH}"));
        }
        if self.keys == 0 || self.hot == 0 {
            return Err("--keys and --hot must be at least 1".into());
        }
        if self.ttl_ms == Some(0) {
            return Err("--ttl-ms must be at least 1".into());
        }
        let workload = match (self.target, self.workload) {
            (Target::Health, None) => Workload::Health,
            (Target::Health, Some(_)) => {
                return Err("the health target has no workload: it only sends GET /health".into());
            }
            (_, None | Some(WorkloadName::Uncontended)) => Workload::Uncontended { keys: self.keys },
            (_, Some(WorkloadName::Contended)) => Workload::Contended { hot: self.hot },
            (_, Some(WorkloadName::Hold)) => Workload::Hold {
                hot: self.hot,
                hold: Duration::from_millis(self.hold_ms),
                retry: Duration::from_millis(self.retry_ms),
            },
            (_, Some(WorkloadName::Ttl)) => {
                if self.ttl_ms.is_none() {
                    return Err("the ttl workload needs --ttl-ms".into());
                }
                Workload::TtlOnly { keys: self.keys }
            }
        };
        if self.target == Target::Health && self.ttl_ms.is_some() {
            return Err("--ttl-ms has no meaning for the health target".into());
        }
        let load = match self.rate {
            None => Load::Closed { connections: self.connections, depth: self.depth },
            Some(0) => return Err("--rate must be at least 1 request/s".into()),
            Some(rate) => Load::Open { connections: self.connections, rate, batch: self.depth },
        };
        if !workload.is_blind() && load != (Load::Closed { connections: self.connections, depth: 1 }) {
            return Err("the hold workload waits for each reply: closed loop, --depth 1 only".into());
        }
        let tls = self.tls()?;
        if tls.is_some() {
            if !matches!(self.target, Target::Http | Target::Wire | Target::Health) {
                return Err("--ca (TLS) is for ringlock's targets: http, wire and health".into());
            }
            if matches!(load, Load::Open { .. }) {
                return Err("--ca (TLS) runs the closed loop only (no --rate)".into());
            }
        }
        Ok(Plan {
            target: self.target,
            tls,
            endpoints,
            secret: self.secret.clone(),
            workload,
            load,
            ttl_ms: self.ttl_ms,
            wait_ms: self.wait_ms,
            warmup: seconds("warmup", self.warmup, true)?,
            duration: seconds("duration", self.duration, false)?,
            max_requests: self.requests,
            seed: self.seed,
            server_pid: self.server_pid,
            progress: !self.quiet,
            label: self.label.clone(),
        })
    }
}

/// The first name a failover attempts: far above any key space a run uses, so that its locks
/// never meet a run's.
pub const FAILOVER_FIRST_KEY: u64 = 1 << 40;

impl FailoverArgs {
    /// The plan of a failover measurement (each attempt one acquire of a name never tried
    /// before, on the next survivor), and whom it kills; or why the arguments describe none.
    pub fn plan(&self) -> Result<(Plan, Failover), String> {
        if self.target == Target::Health {
            return Err("a failover is timed to a grant: the health target grants nothing".into());
        }
        if self.ttl_ms == Some(0) {
            return Err("--ttl-ms must be at least 1".into());
        }
        let endpoints = endpoints(&self.addr, self.allow_remote)?;
        let timeout = seconds("timeout", self.timeout, false)?;
        let plan = Plan {
            tls: None,
            target: self.target,
            load: Load::Closed { connections: endpoints.len(), depth: 1 },
            endpoints,
            secret: self.secret.clone(),
            workload: Workload::TtlOnly { keys: u64::MAX },
            ttl_ms: self.ttl_ms,
            wait_ms: 0,
            warmup: Duration::ZERO,
            duration: timeout,
            max_requests: DEFAULT_MAX_REQUESTS,
            seed: 1,
            server_pid: None,
            progress: false,
            label: self.label.clone(),
        };
        Ok((plan, Failover { kill_pid: self.kill_pid, timeout }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut argv = vec!["loadtest", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            Command::Run(run) => run.plan(),
            Command::Responder(_) | Command::Fsync(_) | Command::Failover(_) => unreachable!(),
        }
    }

    #[test]
    fn defaults_are_a_closed_uncontended_loop_of_16_connections() {
        let p = plan(&["--target", "http", "--addr", "127.0.0.1:8080"]).unwrap();
        let endpoint = Endpoint { addr: "127.0.0.1:8080".parse().unwrap(), host: "127.0.0.1:8080".into() };
        assert_eq!(p.endpoints, [endpoint]);
        assert_eq!(p.addrs(), "127.0.0.1:8080");
        assert_eq!(p.workload, Workload::Uncontended { keys: 1_000_000 });
        assert_eq!(p.load, Load::Closed { connections: 16, depth: 1 });
        assert_eq!(p.warmup, Duration::from_secs(1));
        assert_eq!(p.duration, Duration::from_secs(10));
        assert_eq!(p.max_requests, DEFAULT_MAX_REQUESTS);
        assert_eq!(p.secret, "changeme");
        assert_eq!(p.ttl_ms, None);
        assert!(p.progress);
    }

    #[test]
    fn rate_makes_an_open_loop() {
        let p =
            plan(&["--target", "redis", "--addr", "127.0.0.1:6379", "-c", "8", "--rate", "5000"]).unwrap();
        assert_eq!(p.load, Load::Open { connections: 8, rate: 5000, batch: 1 });
        let p = plan(&["--target", "http", "--addr", "127.0.0.1:1", "--rate", "5000", "-d", "16"]).unwrap();
        assert_eq!(p.load, Load::Open { connections: 16, rate: 5000, batch: 16 });
    }

    #[test]
    fn workloads_take_their_parameters() {
        let base = ["--target", "http", "--addr", "127.0.0.1:1"];
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            plan(&a).unwrap().workload
        };
        assert_eq!(with(&["--workload", "contended", "--hot", "3"]), Workload::Contended { hot: 3 });
        assert_eq!(
            with(&["--workload", "hold", "--hot", "2", "--hold-ms", "5", "--retry-ms", "1"]),
            Workload::Hold { hot: 2, hold: Duration::from_millis(5), retry: Duration::from_millis(1) }
        );
        assert_eq!(
            with(&["--workload", "ttl", "--ttl-ms", "1000", "--keys", "99"]),
            Workload::TtlOnly { keys: 99 }
        );
        assert_eq!(
            plan(&["--target", "health", "--addr", "127.0.0.1:1"]).unwrap().workload,
            Workload::Health
        );
    }

    #[test]
    fn non_loopback_targets_are_refused_unless_allowed() {
        let err = plan(&["--target", "http", "--addr", "10.1.2.3:80"]).unwrap_err();
        assert_eq!(err, "10.1.2.3 is not a loopback address; pass --allow-remote to load a remote server");
        assert!(plan(&["--target", "http", "--addr", "10.1.2.3:80", "--allow-remote"]).is_ok());
        assert!(plan(&["--target", "http", "--addr", "[::1]:80"]).is_ok());
    }

    #[test]
    fn inconsistent_plans_are_refused_with_the_reason() {
        let a = ["--target", "http", "--addr", "127.0.0.1:1"];
        let refused = |extra: &[&str]| {
            let mut v = a.to_vec();
            v.extend_from_slice(extra);
            plan(&v).unwrap_err()
        };
        assert_eq!(refused(&["--workload", "ttl"]), "the ttl workload needs --ttl-ms");
        assert_eq!(
            refused(&["--workload", "hold", "--depth", "2"]),
            "the hold workload waits for each reply: closed loop, --depth 1 only"
        );
        assert_eq!(
            refused(&["--workload", "hold", "--rate", "100"]),
            "the hold workload waits for each reply: closed loop, --depth 1 only"
        );
        assert_eq!(refused(&["--rate", "0"]), "--rate must be at least 1 request/s");
        assert_eq!(refused(&["-c", "0"]), "--connections must be 1 to 1024");
        assert_eq!(refused(&["-c", "1025"]), "--connections must be 1 to 1024");
        assert_eq!(refused(&["-d", "0"]), "--depth must be 1 to 1024");
        assert_eq!(refused(&["--keys", "0"]), "--keys and --hot must be at least 1");
        assert_eq!(refused(&["--ttl-ms", "0"]), "--ttl-ms must be at least 1");
        assert_eq!(refused(&["--duration", "0"]), "--duration must be more than 0 to 3600 seconds, not 0");
        assert_eq!(refused(&["--warmup=-1"]), "--warmup must be 0 to 3600 seconds, not -1");
        let h = ["--target", "health", "--addr", "127.0.0.1:1"];
        let mut v = h.to_vec();
        v.extend_from_slice(&["--workload", "contended"]);
        assert_eq!(plan(&v).unwrap_err(), "the health target has no workload: it only sends GET /health");
        let mut v = h.to_vec();
        v.extend_from_slice(&["--ttl-ms", "5"]);
        assert_eq!(plan(&v).unwrap_err(), "--ttl-ms has no meaning for the health target");
    }

    #[test]
    fn several_addresses_take_connections_round_robin() {
        let p =
            plan(&["--target", "etcd", "--addr", "127.0.0.1:1,localhost:2,127.0.0.3:3", "-c", "4"]).unwrap();
        let ports: Vec<u16> = (0..4).map(|c| p.endpoint(c).addr.port()).collect();
        assert_eq!(ports, [1, 2, 3, 1]);
        assert_eq!(p.endpoint(1).addr, "127.0.0.1:2".parse().unwrap());
        assert_eq!(p.endpoint(1).host, "localhost:2");
        assert_eq!(p.addrs(), "127.0.0.1:1,localhost:2,127.0.0.3:3");
        let err = plan(&["--target", "etcd", "--addr", "127.0.0.1:1,10.0.0.1:2"]).unwrap_err();
        assert_eq!(err, "10.0.0.1 is not a loopback address; pass --allow-remote to load a remote server");
        let many = vec!["127.0.0.1:1"; 17].join(",");
        assert_eq!(
            plan(&["--target", "etcd", "--addr", &many]).unwrap_err(),
            "--addr names 17 servers; at most 16"
        );
    }

    fn failover(args: &[&str]) -> Result<(Plan, Failover), String> {
        let mut argv = vec!["loadtest", "failover"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            Command::Failover(f) => f.plan(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_failover_needs_a_pid_and_a_target_that_grants() {
        let (p, f) =
            failover(&["--target", "etcd", "--addr", "127.0.0.1:1,127.0.0.1:2", "--kill-pid", "42"]).unwrap();
        assert_eq!(f, Failover { kill_pid: 42, timeout: Duration::from_secs(30) });
        assert_eq!(p.endpoints.len(), 2);
        assert_eq!(p.load, Load::Closed { connections: 2, depth: 1 });
        assert_eq!(p.warmup, Duration::ZERO);
        assert!(!p.progress);
        let err = failover(&["--target", "health", "--addr", "127.0.0.1:1", "--kill-pid", "42"]).unwrap_err();
        assert_eq!(err, "a failover is timed to a grant: the health target grants nothing");
        assert!(failover(&["--target", "etcd", "--addr", "127.0.0.1:1"]).is_err());
        let err =
            failover(&["--target", "wire", "--addr", "127.0.0.1:1", "--kill-pid", "1", "--timeout", "0"]);
        assert_eq!(err.unwrap_err(), "--timeout must be more than 0 to 3600 seconds, not 0");
    }

    #[test]
    fn loopback_check_accepts_both_families() {
        assert!(check_loopback("127.0.0.1".parse().unwrap(), false).is_ok());
        assert!(check_loopback("127.9.9.9".parse().unwrap(), false).is_ok());
        assert!(check_loopback("::1".parse().unwrap(), false).is_ok());
        assert!(check_loopback("0.0.0.0".parse().unwrap(), false).is_err());
        assert!(check_loopback("192.168.1.1".parse().unwrap(), true).is_ok());
    }
}
