//! The `ringlock` command: the server (by default), or a client subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringlock::cli::{self, LockArgs, StatusArgs};
use ringlock::config::{self, Config, Fsync, ServerArgs, Storage};
use ringlock::log::{self, Level};
use ringlock::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringlock: a distributed lock server. A drop-in replacement for the lockserver crate's server
/// (same API, same settings), with fencing tokens, server-side waiting and lease renewal.
#[derive(Parser)]
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
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Lock(args)) => cli::lock(args),
        Some(Cmd::Status(args)) => cli::status(args),
        None => serve(&cli.server),
    }
}

fn serve(args: &ServerArgs) -> ExitCode {
    log::set_level(args.log);
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
    let server = match Server::start(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("ringlock: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mode = if config.secret.is_default() {
        "protected mode: the secret is the default, so only clients on this machine are served"
    } else {
        "secret set"
    };
    let storage = match &config.storage {
        Storage::InMemory => "in memory only".to_owned(),
        Storage::Durable { dir, fsync } => {
            format!(
                "durable in {}, fsync {}",
                dir.display(),
                if *fsync == Fsync::Always { "always" } else { "never" }
            )
        }
    };
    println!(
        "ringlock {} listening on {} with locks {storage} ({} threads, {mode})",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
        config.threads
    );
    if config.secret.is_default() {
        ringlock::log!(
            Level::Warn,
            "set LOCKSERVER_SECRET (or LOCKSERVER_SECRET_FILE) to serve other machines"
        );
    }
    let signal = wait_for_signal();
    ringlock::log!(Level::Info, "{signal}: shutting down (at most {:?})", config.limits.shutdown_timeout);
    server.shutdown();
    ringlock::log!(Level::Info, "stopped");
    ExitCode::SUCCESS
}

/// Blocks until SIGINT or SIGTERM; returns its name.
fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a signal runtime");
    runtime.block_on(async {
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            // Without handlers the default action (exit) applies; wait for it.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}
