//! The `loadtest` command: parses the command line and runs a load test, a failover's timing,
//! the fsync probe or the responder.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadtest::cli::{Cli, Command, check_loopback};
use loadtest::{fsync, responder, run};

fn main() -> ExitCode {
    // LOCKSERVER_ADDR and LOCKSERVER_SECRET from `.env` where the environment lacks them.
    let _ = dotenvy::dotenv();
    match Cli::parse().command {
        Command::Run(args) => {
            let plan = match args.plan() {
                Ok(plan) => plan,
                Err(why) => {
                    eprintln!("loadtest: {why}");
                    return ExitCode::from(2);
                }
            };
            match run::run(&plan) {
                Ok(report) if args.json => {
                    println!("{}", serde_json::to_string(&report).expect("a report serializes"));
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Failover(args) => {
            let (plan, failover) = match args.plan() {
                Ok(planned) => planned,
                Err(why) => {
                    eprintln!("loadtest: {why}");
                    return ExitCode::from(2);
                }
            };
            match run::failover(&plan, failover) {
                Ok(report) if args.json => {
                    println!("{}", serde_json::to_string(&report).expect("a report serializes"));
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Fsync(args) => match fsync::probe(&args.dir, args.count, args.bytes, args.room) {
            Ok(floor) => {
                println!("{}", serde_json::to_string(&floor).expect("a floor serializes"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadtest: fsync probe in {}: {e}", args.dir.display());
                ExitCode::FAILURE
            }
        },
        Command::Responder(args) => {
            if let Err(why) = check_loopback(args.bind, args.allow_remote) {
                eprintln!("loadtest: {why}");
                return ExitCode::from(2);
            }
            let duration = args.duration.map(Duration::from_secs_f64);
            let addr = SocketAddr::new(args.bind, args.port);
            match responder::bind_and_serve(addr, args.kind, duration) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loadtest: responder on {addr}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
