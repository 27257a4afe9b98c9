//! The `ringlock` command: the server (by default), or a client subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringlock::client::command::{self, LockArgs, StatusArgs};
use ringlock::config::{Config, ServerArgs};
use ringlock::runtime::Server;

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
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Lock(args)) => command::lock(args),
        Some(Cmd::Status(args)) => command::status(args),
        None => serve(&cli.server),
    }
}

fn serve(args: &ServerArgs) -> ExitCode {
    let config = Config::from_args(args);
    let server = match Server::start(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("ringlock: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "ringlock {} listening on {} ({} threads, secret required)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
        config.threads
    );
    server.wait();
    ExitCode::SUCCESS
}
