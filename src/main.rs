//! The `ringlock` command: the server (by default), or a client subcommand.

use std::process::ExitCode;

use clap::Subcommand;
use ringlock::cli::{self, ClusterArgs, LockArgs, LocksArgs, ReleaseArgs, StatusArgs};
use ringlock::config::{self, Config, Fsync, ServerArgs, Storage};
use ringlock::log::{self, Level};
use ringlock::server::Server;
use ringlock::systemd::{self, Service};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringlock: a distributed lock server. A drop-in replacement for the lockserver crate's server
/// (same API, same settings), with fencing tokens, server-side waiting and lease renewal.
#[derive(clap::Parser)]
#[command(name = "ringlock", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command while holding a lock (like flock(1)): `ringlock lock NAME -- COMMAND...`.
    Lock(LockArgs),
    /// Show who holds a lock.
    Status(StatusArgs),
    /// List the held locks (holder, token, lease left, waiters): `ringlock locks [--prefix P]`.
    Locks(LocksArgs),
    /// Release a lock; with --force, whoever holds it: `ringlock release NAME --force`.
    Release(ReleaseArgs),
    /// A cluster's members and leader, and membership changes: `ringlock cluster status`,
    /// `ringlock cluster add ID HOST:PORT`, `ringlock cluster remove ID`.
    Cluster(ClusterArgs),
}

fn main() -> ExitCode {
    // Before parsing, so that `.env` values reach the arguments' environment fallbacks.
    let _ = dotenvy::dotenv();
    match config::env_from_files(|var| std::env::var(var).ok()) {
        // SAFETY: no other thread runs yet, so nothing reads the environment meanwhile.
        Ok(vars) => vars.into_iter().for_each(|(var, value)| unsafe { std::env::set_var(var, value) }),
        Err(e) => {
            eprintln!("ringlock: {e}");
            return ExitCode::from(2);
        }
    }
    let cli: Cli = match config::file::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(config::file::Error::Cli(e)) => e.exit(),
        Err(config::file::Error::File(e)) => {
            eprintln!("ringlock: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Cmd::Lock(args)) => cli::lock(args),
        Some(Cmd::Status(args)) => cli::status(args),
        Some(Cmd::Locks(args)) => cli::locks(args),
        Some(Cmd::Release(args)) => cli::release(args),
        Some(Cmd::Cluster(args)) => cli::cluster::run(args),
        None => serve(&cli.server),
    }
}

fn serve(args: &ServerArgs) -> ExitCode {
    log::set_level(args.log);
    log::set_format(args.log_format);
    // A file-size limit (RLIMIT_FSIZE) would kill the process at the log's next write; as an
    // error instead, it is a full disk: changes are refused until writes succeed again.
    // SAFETY: setting a signal's disposition to "ignore" before any thread starts.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ringlock: {e}");
            return ExitCode::from(2);
        }
    };
    // Sockets passed by systemd (socket activation) are served instead of binding our own.
    // Taken first: it changes the environment, so no other thread may run yet.
    let sockets = systemd::take_listen_fds();
    let signals = Signals::catch();
    let adopted = sockets.as_ref().map_or(0, Vec::len);
    let started = sockets.and_then(|sockets| match adopted {
        0 => Server::start(config.clone()),
        _ => Server::start_adopted(config.clone(), sockets),
    });
    let server = match started {
        Ok(server) => server,
        Err(e) => {
            eprintln!("ringlock: {e}");
            return ExitCode::FAILURE;
        }
    };
    if adopted > 0 {
        ringlock::log!(
            Level::Info,
            [sockets = adopted],
            "serving the {adopted} socket(s) systemd passed; --bind and --port do not apply"
        );
    }
    let protected = config.secret.is_default();
    let mode = if protected {
        "protected mode: the secret is the default, so only clients on this machine are served"
    } else {
        "secret set"
    };
    let storage = match (&config.storage, &config.cluster) {
        (Storage::Durable { dir, .. }, Some(member)) => format!(
            "replicated by {} (member {}, consensus on {}), log in {}",
            match member.join {
                true => "the cluster this member joins".to_owned(),
                false => format!("a cluster of {}", member.peers.len()),
            },
            member.node_id,
            member.peers[&member.node_id],
            dir.display()
        ),
        (Storage::InMemory, _) => "in memory only".to_owned(),
        (Storage::Durable { dir, fsync }, None) => {
            let fsync = if *fsync == Fsync::Always { "always" } else { "never" };
            format!("durable in {}, fsync {fsync}", dir.display())
        }
    };
    let addr = server.local_addr();
    println!(
        "ringlock {} listening on {addr} with locks {storage} ({} threads, {mode})",
        env!("CARGO_PKG_VERSION"),
        config.threads
    );
    ringlock::log!(
        Level::Info,
        [
            version = env!("CARGO_PKG_VERSION"),
            addr = &addr,
            threads = config.threads,
            storage = &storage,
            protected = protected
        ],
        "listening on {addr}"
    );
    if protected {
        ringlock::log!(
            Level::Warn,
            "set LOCKSERVER_SECRET (or LOCKSERVER_SECRET_FILE) to serve other machines"
        );
    }
    // Ready once the listeners serve; the watchdog pings while every core answers.
    let prober = server.prober();
    let service = Service::ready(&format!("serving on {addr}"), move |timeout| prober.alive(timeout));
    let signal = signals.wait(|| match server.reload_tls() {
        Ok(true) => ringlock::log!(
            Level::Info,
            "SIGHUP: reloaded the TLS certificate and keys; new connections get them"
        ),
        Ok(false) => ringlock::log!(Level::Info, "SIGHUP: no TLS certificate to reload"),
        Err(e) => ringlock::log!(Level::Error, "SIGHUP: kept the TLS certificate in force: {e}"),
    });
    service.stopping();
    let timeout = config.limits.shutdown_timeout;
    ringlock::log!(
        Level::Info,
        [signal = signal, timeout_s = timeout.as_secs_f64()],
        "{signal}: shutting down (at most {timeout:?})"
    );
    server.shutdown();
    ringlock::log!(Level::Info, "stopped");
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM, caught from before the server starts: one that comes while it starts
/// (say, right after the start-up line) shuts it down gracefully too, rather than kill it.
/// And SIGHUP, which reloads the TLS certificate (one that comes during the start is taken
/// once the server runs, and reads the files the start read).
struct Signals {
    runtime: tokio::runtime::Runtime,
    /// `None` if the handlers could not be installed: the default action (exit) then applies.
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn catch() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a signal runtime");
        let handlers = runtime.block_on(async {
            Some((
                signal(SignalKind::interrupt()).ok()?,
                signal(SignalKind::terminate()).ok()?,
                signal(SignalKind::hangup()).ok()?,
            ))
        });
        Signals { runtime, handlers }
    }

    /// Blocks until SIGINT or SIGTERM, calling `hangup` at each SIGHUP; returns its name.
    fn wait(self, mut hangup: impl FnMut()) -> &'static str {
        let Signals { runtime, handlers } = self;
        runtime.block_on(async {
            let Some((mut int, mut term, mut hup)) = handlers else {
                return std::future::pending().await;
            };
            loop {
                tokio::select! {
                    _ = int.recv() => return "SIGINT",
                    _ = term.recv() => return "SIGTERM",
                    _ = hup.recv() => hangup(),
                }
            }
        })
    }
}
