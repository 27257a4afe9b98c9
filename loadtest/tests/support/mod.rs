//! What the generator's integration tests share: a run in-process, from a command line.

use clap::Parser;
use loadtest::cli::{Cli, Command};
use loadtest::stats::Report;

/// Runs `loadtest run --quiet --addr ADDR LINE` in this process (`line`: arguments separated
/// by spaces) and returns its report.
pub fn run(addr: &str, line: &str) -> Report {
    let mut argv = vec!["loadtest", "run", "--quiet", "--addr", addr];
    argv.extend(line.split_whitespace());
    let Command::Run(args) = Cli::parse_from(argv).command else { unreachable!() };
    loadtest::run::run(&args.plan().unwrap()).unwrap()
}

/// Runs `loadtest failover --addr ADDR LINE` in this process and returns its report.
#[allow(dead_code)] // Not every test binary times a failover.
pub fn failover(addr: &str, line: &str) -> loadtest::run::FailoverReport {
    let mut argv = vec!["loadtest", "failover", "--addr", addr];
    argv.extend(line.split_whitespace());
    let Command::Failover(args) = Cli::parse_from(argv).command else { unreachable!() };
    let (plan, failover) = args.plan().unwrap();
    loadtest::run::failover(&plan, failover).unwrap()
}
