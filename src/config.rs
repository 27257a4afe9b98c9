//! Server configuration: command line, then environment, then `.env` (loaded into the
//! environment at start-up without overriding it), then the config file ([`file`](mod@file)), then the
//! defaults below. The names are the reference server's (`--bind/-b`, `--port/-p`,
//! `LOCKSERVER_BIND_IP`, `LOCKSERVER_PORT`, `LOCKSERVER_SECRET`), so an existing deployment's
//! settings carry over. Any of these variables may instead name a file holding the value, as
//! `<VAR>_FILE` (the convention of container secrets), so that the secret need not sit in the
//! environment.

pub mod file;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;

use crate::auth::{DEFAULT_SECRET, Secret};
use crate::log::{Format, Level};
pub use crate::store::wal::Fsync;
pub use crate::tls::TlsFiles;

/// The environment variables that may come from a `<VAR>_FILE` instead.
pub const FILE_VARS: [&str; 4] =
    ["LOCKSERVER_SECRET", "LOCKSERVER_BIND_IP", "LOCKSERVER_PORT", "LOCKSERVER_ADDR"];

/// The server's command-line arguments and their environment variables.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// IP address to listen on.
    #[arg(short, long, env = "LOCKSERVER_BIND_IP", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// TCP port of the API, HTTP and wire protocol alike (0: any free port).
    #[arg(short, long, env = "LOCKSERVER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Worker threads: one per core, each with its own listener and its share of the locks
    /// [default: the cores this process may run on].
    #[arg(long, env = "RINGLOCK_THREADS")]
    pub threads: Option<NonZeroUsize>,

    /// Log level: error, warn, info or debug.
    #[arg(long, env = "RINGLOCK_LOG", default_value = "info")]
    pub log: Level,

    /// Where the locks are kept, so that they survive a restart or a crash (created if
    /// missing; one server per directory).
    #[arg(long, env = "RINGLOCK_DATA_DIR", default_value = "ringlock-data")]
    pub data_dir: PathBuf,

    /// Keep the locks in memory only, as the reference server does: nothing is written, and
    /// a restart frees every lock (and fencing tokens start again from 1).
    #[arg(long, env = "RINGLOCK_IN_MEMORY")]
    pub in_memory: bool,

    /// When the log reaches the disk: `always` (each batch is synced before its answers go
    /// out; survives a power loss) or `never` (the kernel writes it back when it likes;
    /// survives the process being killed, not a power loss).
    #[arg(long, env = "RINGLOCK_FSYNC", default_value = "always")]
    pub fsync: Fsync,

    /// This member's id in a cluster (with --peers).
    #[arg(long, env = "RINGLOCK_NODE_ID")]
    pub node_id: Option<u64>,

    /// The consensus address of every member of the cluster, this one included:
    /// ID=HOST:PORT,... (without it, a single server).
    #[arg(long, env = "RINGLOCK_PEERS", value_delimiter = ',', value_name = "ID=HOST:PORT")]
    pub peers: Vec<String>,

    /// Join a cluster that already runs (a new member, or one whose data was lost): never
    /// found a cluster; wait to be added (`ringlock cluster add`).
    #[arg(long, env = "RINGLOCK_JOIN")]
    pub join: bool,

    /// Log format: text, or json (one object a line).
    #[arg(long, env = "RINGLOCK_LOG_FORMAT", default_value = "text")]
    pub log_format: Format,

    /// A TOML file of settings keyed by the long flag names (`port = 9000`); the command
    /// line, the environment and `.env` override it.
    #[arg(long, env = "RINGLOCK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TLS: the server's certificate chain (PEM, leaf first), served on the shared port to a
    /// client whose first byte is a TLS handshake; re-read on SIGHUP. With it, plaintext
    /// clients are refused unless --tls-allow-plaintext.
    #[arg(long, env = "RINGLOCK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS: the certificate's private key (PEM); re-read on SIGHUP.
    #[arg(long, env = "RINGLOCK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// mTLS: require every client to present a certificate that chains to a CA of this PEM
    /// file (with --tls-cert).
    #[arg(long, env = "RINGLOCK_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// The CA (PEM) the members of a cluster trust each other's certificates with
    /// [default: --tls-client-ca, or else the server's own --tls-cert file].
    #[arg(long, env = "RINGLOCK_TLS_PEER_CA", value_name = "FILE")]
    pub tls_peer_ca: Option<PathBuf>,

    /// With --tls-cert, serve plaintext clients too (by default they are refused).
    #[arg(long, env = "RINGLOCK_TLS_ALLOW_PLAINTEXT")]
    pub tls_allow_plaintext: bool,

    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ServerArgs {
    /// The TLS files, if a certificate is given; refused if the key does not come with it, or
    /// another TLS setting comes without it. (Checked here, not by clap: a config file's values
    /// are defaults, which clap's `requires` does not see.)
    pub fn tls(&self) -> Result<Option<TlsFiles>, String> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (Some(_), None) => {
                return Err("--tls-cert needs --tls-key (the certificate's private key)".into());
            }
            (None, Some(_)) => {
                return Err("--tls-key needs --tls-cert (the certificate it is the key of)".into());
            }
            (None, None) => {
                let given = [
                    (self.tls_client_ca.is_some(), "--tls-client-ca"),
                    (self.tls_peer_ca.is_some(), "--tls-peer-ca"),
                    (self.tls_allow_plaintext, "--tls-allow-plaintext"),
                ];
                return match given.iter().find(|(given, _)| *given) {
                    Some((_, flag)) => {
                        Err(format!("{flag} needs --tls-cert and --tls-key (TLS is off without them)"))
                    }
                    None => Ok(None),
                };
            }
        };
        Ok(Some(TlsFiles {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
            peer_ca: self.tls_peer_ca.clone(),
            allow_plaintext: self.tls_allow_plaintext,
        }))
    }
}

/// The limits, as flags (see [`Limits`] for what each bounds and why).
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Most open connections (spread over the cores); more are answered 503.
    #[arg(long, env = "RINGLOCK_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT.max_connections)]
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes; larger: 431.
    #[arg(long, env = "RINGLOCK_MAX_HEAD_BYTES", default_value_t = Limits::DEFAULT.max_head_bytes,
          value_parser = clap::value_parser!(u32).range(256..=1 << 20).map(|v| v as usize))]
    pub max_head_bytes: usize,
    /// Largest request body, in bytes; larger: 413.
    #[arg(long, env = "RINGLOCK_MAX_BODY_BYTES", default_value_t = Limits::DEFAULT.max_body_bytes,
          value_parser = clap::value_parser!(u32).range(64..=1 << 24).map(|v| v as usize))]
    pub max_body_bytes: usize,
    /// Longest resource name, in bytes.
    #[arg(long, env = "RINGLOCK_MAX_RESOURCE_BYTES", default_value_t = Limits::DEFAULT.max_resource_bytes,
          value_parser = clap::value_parser!(u16).range(1..=4000).map(usize::from))]
    pub max_resource_bytes: usize,
    /// Longest owner name, in bytes.
    #[arg(long, env = "RINGLOCK_MAX_OWNER_BYTES", default_value_t = Limits::DEFAULT.max_owner_bytes,
          value_parser = clap::value_parser!(u16).range(1..=4000).map(usize::from))]
    pub max_owner_bytes: usize,
    /// Requests one connection may have in flight before we stop reading from it.
    #[arg(long, env = "RINGLOCK_MAX_IN_FLIGHT", default_value_t = Limits::DEFAULT.max_in_flight,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20).map(|v| v as usize))]
    pub max_in_flight: usize,
    /// Answer bytes a connection may leave unread before we stop reading (and parsing) its
    /// requests.
    #[arg(long, env = "RINGLOCK_MAX_UNSENT_BYTES", default_value_t = Limits::DEFAULT.max_unsent_bytes)]
    pub max_unsent_bytes: usize,
    /// Most locks held, all cores together (each core holds its share); an acquire of a new
    /// name past it is answered 503 (wire: UNAVAILABLE).
    #[arg(long, env = "RINGLOCK_MAX_LOCKS", default_value_t = Limits::DEFAULT.max_locks,
          value_parser = clap::value_parser!(u64).range(1..).map(|v| usize::try_from(v).unwrap_or(usize::MAX)))]
    pub max_locks: usize,
    /// Most acquires waiting for a lock, all cores together (each core holds its share); a
    /// wait past it is answered 503 (wire: UNAVAILABLE).
    #[arg(long, env = "RINGLOCK_MAX_WAITERS", default_value_t = Limits::DEFAULT.max_waiters,
          value_parser = clap::value_parser!(u64).range(1..).map(|v| usize::try_from(v).unwrap_or(usize::MAX)))]
    pub max_waiters: usize,
    /// Seconds a client may take to send a whole request once it has started one; slower:
    /// 408 and close.
    #[arg(long, env = "RINGLOCK_HEADER_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub header_timeout: Duration,
    /// Seconds a connection may sit idle (nothing sent, nothing in flight) before we close it.
    #[arg(long, env = "RINGLOCK_IDLE_TIMEOUT", default_value = "300", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// Seconds a graceful shutdown waits for answers in flight before it closes everything.
    #[arg(long, env = "RINGLOCK_SHUTDOWN_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub shutdown_timeout: Duration,
}

fn seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.001..=1e7).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a number of seconds from 0.001 to 10000000")),
    }
}

/// What one connection, one request and the whole server may use. Every limit answers
/// clearly when hit (a status, or a wire error) and leaves everyone else served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections, all cores together. An idle one costs about 7 KiB (measured with
    /// 15,000: mostly the 4 KiB read buffer its pending read holds), so the default bounds a
    /// full house to about 700 MiB. Past it new connections get 503.
    pub max_connections: usize,
    /// Request head bytes. The SDKs send about 250; 8 KiB is what most servers allow, and
    /// bounds what a slow or hostile client can make us buffer.
    pub max_head_bytes: usize,
    /// Request body bytes. The lock endpoints' JSON is two names and three numbers; 64 KiB
    /// leaves room for any name we accept and refuses anything else early (413).
    pub max_body_bytes: usize,
    /// Resource name bytes. Names are keys, not payloads; 1 KiB fits any path or URL a fleet
    /// locks, and bounds a held lock's memory.
    pub max_resource_bytes: usize,
    /// Owner name bytes (host names, pod names, UUIDs and a suffix fit easily).
    pub max_owner_bytes: usize,
    /// Requests one connection may have parsed and unanswered; past it we stop reading from
    /// that connection until answers go out.
    pub max_in_flight: usize,
    /// Answer bytes queued for a connection that is not reading them; past it we stop reading
    /// and parsing its requests, so a client that never reads cannot grow our memory by more
    /// than this and one answer (a list page of 1,000 locks is about 150 KiB).
    pub max_unsent_bytes: usize,
    /// Held locks, all cores together (each core holds `max_locks / cores`, as names spread
    /// evenly). A held lock costs 100 to 160 bytes and its names (`BENCHMARKS.md`, "Memory per
    /// held lock"), so the default of ten million bounds them to about 2 GiB with names of 30
    /// bytes, and with them the log's snapshots and a restart's recovery; it is far above
    /// what a fleet holds (the soak runs at 200,000) and stops a client that takes new names
    /// and never lets them go before it takes the machine.
    pub max_locks: usize,
    /// Acquires waiting, all cores together (each core holds its share). A waiter costs about
    /// 300 bytes (its place in the queue, its timer, its connection's slot) and its owner
    /// name, so the default of a million bounds them to about 300 MiB; waits are also bounded
    /// per lock (4096) and per connection (`max_in_flight`), but 100,000 connections of 1,024
    /// each would be a hundred million.
    pub max_waiters: usize,
    /// Time from a request's first byte to its last (slowloris).
    pub header_timeout: Duration,
    /// Time a connection may be idle: nothing arriving, nothing owed to it.
    pub idle_timeout: Duration,
    /// Time a graceful shutdown waits for what is in flight.
    pub shutdown_timeout: Duration,
}

impl Limits {
    /// The defaults, with the reasons given at each field.
    pub const DEFAULT: Limits = Limits {
        max_connections: 100_000,
        max_head_bytes: 8 * 1024,
        max_body_bytes: 64 * 1024,
        max_resource_bytes: 1024,
        max_owner_bytes: 256,
        max_in_flight: 1024,
        max_unsent_bytes: 1024 * 1024,
        max_locks: 10_000_000,
        max_waiters: 1_000_000,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(300),
        shutdown_timeout: Duration::from_secs(10),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

impl From<&LimitArgs> for Limits {
    fn from(a: &LimitArgs) -> Limits {
        Limits {
            max_connections: a.max_connections,
            max_head_bytes: a.max_head_bytes,
            max_body_bytes: a.max_body_bytes,
            max_resource_bytes: a.max_resource_bytes,
            max_owner_bytes: a.max_owner_bytes,
            max_in_flight: a.max_in_flight,
            max_unsent_bytes: a.max_unsent_bytes,
            max_locks: a.max_locks,
            max_waiters: a.max_waiters,
            header_timeout: a.header_timeout,
            idle_timeout: a.idle_timeout,
            shutdown_timeout: a.shutdown_timeout,
        }
    }
}

/// Where a server keeps its locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory only: a restart frees every lock.
    InMemory,
    /// In a log and snapshots in `dir`, synced as `fsync` says.
    Durable { dir: PathBuf, fsync: Fsync },
}

/// What makes a server a member of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub node_id: u64,
    /// Every member's consensus address, this one's included.
    pub peers: BTreeMap<u64, String>,
    /// Never found a cluster: wait to be added.
    pub join: bool,
}

/// One member, `ID=HOST:PORT`: its id and its consensus address.
pub fn peer_arg(arg: &str) -> Result<(u64, String), String> {
    arg.split_once('=')
        .and_then(|(id, addr)| Some((id.trim().parse::<u64>().ok()?, addr.trim())))
        .filter(|(_, addr)| {
            addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        })
        .map(|(id, addr)| (id, addr.to_owned()))
        .ok_or_else(|| format!("{arg:?} is not ID=HOST:PORT"))
}

/// Parses `--peers` (`ID=HOST:PORT` each) with `--node-id` into a [`Membership`].
pub fn membership(node_id: Option<u64>, peers: &[String], join: bool) -> Result<Option<Membership>, String> {
    if peers.is_empty() {
        return match node_id {
            Some(_) => Err("--node-id needs --peers (the consensus address of every member)".into()),
            None => Ok(None),
        };
    }
    let mut map = BTreeMap::new();
    for peer in peers {
        let (id, addr) = peer_arg(peer).map_err(|e| format!("--peers: {e}"))?;
        if map.insert(id, addr).is_some() {
            return Err(format!("--peers: member {id} is named twice"));
        }
    }
    let node_id = node_id.ok_or("--peers needs --node-id (this member's id)")?;
    if !map.contains_key(&node_id) {
        return Err(format!("--peers does not name this member's own address (--node-id {node_id})"));
    }
    Ok(Some(Membership { node_id, peers: map, join }))
}

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub threads: usize,
    pub secret: Secret,
    pub limits: Limits,
    pub storage: Storage,
    /// The cluster this server is a member of (`None`: a single server).
    pub cluster: Option<Membership>,
    /// TLS on the shared port (`None`: plaintext only).
    pub tls: Option<TlsFiles>,
    /// Tokens of a new data directory (or of a server in memory) start after this value; 0
    /// outside tests, so that the first token is 1. Never the wall clock: a token must not
    /// depend on what a clock says.
    pub token_seed: Option<u64>,
}

impl Config {
    /// The configuration from parsed arguments and the environment (`LOCKSERVER_SECRET`);
    /// refused with the reason if the secret is empty (see [`secret_from_env`]).
    pub fn from_args(args: &ServerArgs) -> Result<Config, String> {
        let cluster = membership(args.node_id, &args.peers, args.join)?;
        let secret = secret_from_env(|var| std::env::var(var).ok())?;
        if cluster.is_some() {
            if args.in_memory {
                return Err(
                    "a cluster member keeps its log on disk: --in-memory and --peers do not go together"
                        .into(),
                );
            }
            if secret.is_default() {
                return Err("a cluster's members and clients authenticate with the shared secret: set \
                            LOCKSERVER_SECRET (or LOCKSERVER_SECRET_FILE), not the default"
                    .into());
            }
        }
        Ok(Config {
            addr: SocketAddr::new(args.bind, args.port),
            threads: args.threads.map_or_else(available_cores, NonZeroUsize::get),
            secret,
            limits: Limits::from(&args.limits),
            storage: if args.in_memory {
                Storage::InMemory
            } else {
                Storage::Durable { dir: args.data_dir.clone(), fsync: args.fsync }
            },
            cluster,
            tls: args.tls()?,
            token_seed: None,
        })
    }

    /// A configuration for tests and embedding: loopback, any free port, the given secret,
    /// locks in memory.
    pub fn local(threads: usize, secret: &str) -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            threads,
            secret: Secret::new(secret),
            limits: Limits::default(),
            storage: Storage::InMemory,
            cluster: None,
            tls: None,
            token_seed: None,
        }
    }
}

/// The cores this process may run on (its affinity mask, so `taskset` is respected).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The secret from `LOCKSERVER_SECRET` (which [`env_from_files`] has set from
/// `LOCKSERVER_SECRET_FILE`, if that was given), or the default when it is unset. An empty one
/// is refused: an empty header would then authorize every request, which is never what a
/// deployment meant (it comes from an empty file, or a variable set from an unset one).
pub fn secret_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Secret, String> {
    match get("LOCKSERVER_SECRET") {
        None => Ok(Secret::new(DEFAULT_SECRET)),
        Some(secret) if !secret.is_empty() => Ok(Secret::new(secret)),
        Some(_) => Err(match get("LOCKSERVER_SECRET_FILE").filter(|path| !path.is_empty()) {
            Some(path) => format!(
                "LOCKSERVER_SECRET_FILE: {path} is empty; an empty secret would let every client in, so put \
                 the secret in it"
            ),
            None => "LOCKSERVER_SECRET is empty; an empty secret would let every client in, so set a secret \
                     (or unset it for the default, which serves only this machine)"
                .to_owned(),
        }),
    }
}

/// Resolves `<VAR>_FILE` for each of [`FILE_VARS`]: the file's contents (less a final line
/// break) become `<VAR>`'s value, for the code that reads the environment later. Setting both
/// is refused, as is a file that cannot be read. Returns the variables it set.
pub fn env_from_files(get: impl Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, String> {
    let mut set = Vec::new();
    for var in FILE_VARS {
        let file_var = format!("{var}_FILE");
        let Some(path) = get(&file_var).filter(|p| !p.is_empty()) else { continue };
        if get(var).is_some() {
            return Err(format!("both {var} and {file_var} are set; set one"));
        }
        let value =
            std::fs::read_to_string(&path).map_err(|e| format!("{file_var}: cannot read {path}: {e}"))?;
        let value = value.strip_suffix('\n').map_or(value.as_str(), |v| v.strip_suffix('\r').unwrap_or(v));
        set.push((var.to_owned(), value.to_owned()));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[derive(clap::Parser, Debug)]
    struct Args {
        #[command(flatten)]
        server: ServerArgs,
    }

    /// The TLS files from a config file and a command line (no environment).
    fn tls(file: &str, argv: &[&str]) -> Result<Option<TlsFiles>, String> {
        let command = Args::command().mut_args(|a| a.env(None));
        let command = file::with_file(command, std::path::Path::new("/etc/r.toml"), file)?;
        let matches = command
            .try_get_matches_from(std::iter::once("ringlock").chain(argv.iter().copied()))
            .map_err(|e| e.kind().to_string())?;
        Args::from_arg_matches(&matches).unwrap().server.tls()
    }

    #[test]
    fn tls_settings_from_the_file_and_the_command_line() {
        assert_eq!(tls("", &[]), Ok(None));
        let want = TlsFiles {
            cert: "/etc/c.pem".into(),
            key: "/etc/k.pem".into(),
            client_ca: None,
            peer_ca: None,
            allow_plaintext: false,
        };
        assert_eq!(tls("tls-cert = \"/etc/c.pem\"\ntls-key = \"/etc/k.pem\"", &[]), Ok(Some(want.clone())));
        assert_eq!(tls("", &["--tls-cert", "/etc/c.pem", "--tls-key", "/etc/k.pem"]), Ok(Some(want.clone())));
        let all = "tls-cert = \"/etc/c.pem\"\ntls-key = \"/etc/k.pem\"\ntls-client-ca = \"/etc/ca.pem\"\n\
                   tls-peer-ca = \"/etc/peers.pem\"\ntls-allow-plaintext = true";
        let full = TlsFiles {
            client_ca: Some("/etc/ca.pem".into()),
            peer_ca: Some("/etc/peers.pem".into()),
            allow_plaintext: true,
            ..want.clone()
        };
        assert_eq!(tls(all, &[]), Ok(Some(full)));
        // The command line beats the file.
        let over =
            tls("tls-cert = \"/etc/c.pem\"\ntls-key = \"/etc/k.pem\"", &["--tls-cert", "/run/new.pem"]);
        assert_eq!(over, Ok(Some(TlsFiles { cert: "/run/new.pem".into(), ..want })));
    }

    #[test]
    fn tls_settings_that_do_not_go_together_are_refused() {
        let no_key = Err("--tls-cert needs --tls-key (the certificate's private key)".to_owned());
        assert_eq!(tls("tls-cert = \"/etc/c.pem\"", &[]), no_key);
        assert_eq!(tls("", &["--tls-cert", "/etc/c.pem"]), no_key);
        assert_eq!(
            tls("", &["--tls-key", "/etc/k.pem"]),
            Err("--tls-key needs --tls-cert (the certificate it is the key of)".to_owned())
        );
        let without =
            |flag: &str| Err(format!("{flag} needs --tls-cert and --tls-key (TLS is off without them)"));
        assert_eq!(tls("", &["--tls-client-ca", "/etc/ca.pem"]), without("--tls-client-ca"));
        assert_eq!(tls("tls-peer-ca = \"/etc/ca.pem\"", &[]), without("--tls-peer-ca"));
        assert_eq!(tls("tls-allow-plaintext = true", &[]), without("--tls-allow-plaintext"));
        assert_eq!(
            tls("tls_cert = \"/etc/c.pem\"", &[]),
            Err(
                "/etc/r.toml: unknown key `tls_cert` (did you mean `tls-cert`?); the keys are the long flag \
                 names of `ringlock --help`"
                    .to_owned()
            )
        );
        assert_eq!(
            tls("tls-allow-plaintext = \"yes\"", &[]),
            Err("/etc/r.toml: key `tls-allow-plaintext`: expected true or false, found string".to_owned())
        );
        assert_eq!(
            tls("tls-cert = [\"a\", \"b\"]", &[]),
            Err("/etc/r.toml: key `tls-cert`: expected a string, number or boolean, found array".to_owned())
        );
    }

    #[test]
    fn file_variables_become_values() {
        let dir = std::env::temp_dir().join(format!("ringlock-file-vars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let path = secret.to_str().unwrap().to_owned();
        let env = |vars: Vec<(&'static str, String)>| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
        };
        assert_eq!(
            env_from_files(env(vec![("LOCKSERVER_SECRET_FILE", path.clone())])),
            Ok(vec![("LOCKSERVER_SECRET".into(), "s3cr3t".into())])
        );
        assert_eq!(
            env_from_files(env(vec![
                ("LOCKSERVER_SECRET_FILE", path.clone()),
                ("LOCKSERVER_SECRET", "x".into())
            ])),
            Err("both LOCKSERVER_SECRET and LOCKSERVER_SECRET_FILE are set; set one".into())
        );
        let missing =
            env_from_files(env(vec![("LOCKSERVER_SECRET_FILE", "/nonexistent/s".into())])).unwrap_err();
        assert!(missing.starts_with("LOCKSERVER_SECRET_FILE: cannot read /nonexistent/s: "), "{missing}");
        assert_eq!(env_from_files(env(vec![])), Ok(vec![]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_empty_secret_is_refused() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        };
        assert!(secret_from_env(env(&[])).unwrap().is_default());
        assert!(secret_from_env(env(&[("LOCKSERVER_SECRET", "s")])).unwrap().matches(b"s"));
        assert_eq!(
            secret_from_env(env(&[("LOCKSERVER_SECRET", "")])).unwrap_err(),
            "LOCKSERVER_SECRET is empty; an empty secret would let every client in, so set a secret (or \
             unset it for the default, which serves only this machine)"
        );
        assert_eq!(
            secret_from_env(env(&[("LOCKSERVER_SECRET", ""), ("LOCKSERVER_SECRET_FILE", "/run/s")]))
                .unwrap_err(),
            "LOCKSERVER_SECRET_FILE: /run/s is empty; an empty secret would let every client in, so put the \
             secret in it"
        );
    }

    #[test]
    fn durations_in_seconds() {
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(seconds("0").is_err());
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
    }
}
