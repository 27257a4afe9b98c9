//! The `ringlock` command: reads the configuration and runs the server.

use std::process::ExitCode;

use clap::Parser;
use ringlock::config::{Config, ServerArgs};
use ringlock::runtime::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringlock: a distributed lock server. A drop-in replacement for the lockserver crate's server
/// (same API, same settings), with fencing tokens, server-side waiting and lease renewal.
#[derive(Parser)]
#[command(name = "ringlock", version)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> ExitCode {
    // Before parsing, so that `.env` values reach the arguments' environment fallbacks.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let config = Config::from_args(&cli.server);
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
