//! The generator against a real ringlock, in-process on 127.0.0.1:0, one core: the wire target
//! pipelined, and server-side waiting measured as hand-offs, over the wire and HTTP.

use clap::Parser;
use loadtest::cli::{Cli, Command};
use loadtest::stats::Report;
use ringlock::config::Config;
use ringlock::runtime::Server;

const SECRET: &str = "loadtest-test";

fn run(line: &str, addr: &str) -> Report {
    let mut argv = vec!["loadtest", "run", "--quiet", "--addr", addr, "--secret", SECRET];
    argv.extend(line.split_whitespace());
    let Command::Run(args) = Cli::parse_from(argv).command else { unreachable!() };
    loadtest::run::run(&args.plan().unwrap()).unwrap()
}

#[test]
fn the_wire_target_pipelines_against_ringlock() {
    let server = Server::start(Config::local(1, SECRET)).unwrap();
    let addr = server.local_addr().to_string();
    let r = run("--target wire -c 4 -d 16 --ttl-ms 30000 --warmup 0.1 --duration 0.5", &addr);
    assert_eq!(r.counts.errors, 0, "{r}");
    assert!(r.requests > 1000, "{r}");
    assert!(r.counts.grants > 0 && r.counts.done > 0, "{r}");
    server.shutdown();
}

#[test]
fn server_side_waits_are_handed_off_without_conflicts() {
    let server = Server::start(Config::local(1, SECRET)).unwrap();
    let addr = server.local_addr().to_string();
    for target in ["wire", "http"] {
        let line = format!(
            "--target {target} --workload hold -c 8 --hot 2 --hold-ms 1 --wait-ms 5000 --ttl-ms 30000 \
             --warmup 0.1 --duration 0.5"
        );
        let r = run(&line, &addr);
        assert_eq!(r.counts.errors, 0, "{target}: {r}");
        assert_eq!(r.counts.conflicts, 0, "{target}: waiting, nobody is refused: {r}");
        let handoff = r.handoff_us.expect("hand-offs measured");
        assert!(handoff.count > 10 && handoff.count <= r.counts.grants, "{target}: {r}");
    }
    server.shutdown();
}
