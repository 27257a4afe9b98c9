//! The etcd target against a real one-member etcd, started here on free loopback ports with a
//! data directory of its own, if an `etcd` binary is on the PATH (Debian's `etcd-server`,
//! which .ci/run installs); without one the test says so and passes. Every workload, both
//! loops, short runs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use loadtest::cli::{Cli, Command as LoadtestCommand};
use loadtest::stats::Report;

mod support;
use support::run;

/// Longest wait for the member to elect itself and grant a lease.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `etcd` binary on the PATH, if there is one.
fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|p| p.is_file())
}

/// A free loopback port (free when asked: etcd binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One etcd member; killed, and its data directory removed, when dropped.
struct Etcd {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Etcd {
    fn start(binary: &Path) -> Etcd {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client, peer) = (free_port(), free_port());
        let addr = format!("127.0.0.1:{client}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new(binary)
            .args(["--name", "m1", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &format!("http://{addr}")])
            .args(["--advertise-client-urls", &format!("http://{addr}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("m1=http://127.0.0.1:{peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Etcd { child, dir, addr }
    }

    /// Waits until the member grants a session's lease (the etcd target's opening exchange).
    fn wait_serving(&mut self) {
        let start = Instant::now();
        loop {
            let argv = ["loadtest", "run", "-q", "--target", "etcd", "--addr", &self.addr, "-c", "1"];
            let argv = argv.into_iter().chain(["--warmup", "0", "--duration", "0.1", "--requests", "2"]);
            let Ok(LoadtestCommand::Run(args)) = Cli::try_parse_from(argv).map(|c| c.command) else {
                unreachable!()
            };
            if loadtest::run::run(&args.plan().unwrap()).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("etcd exited ({status}): {}", self.log());
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "etcd not serving after {READY_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One member for every run: starting etcd takes about a second.
#[test]
fn every_workload_runs_against_a_real_etcd() {
    let Some(binary) = etcd_binary() else {
        eprintln!("skipped: no etcd binary on the PATH (Debian: apt-get install etcd-server)");
        return;
    };
    let mut etcd = Etcd::start(&binary);
    etcd.wait_serving();
    let addr = etcd.addr.clone();
    let run =
        |line: &str| -> Report { run(&addr, &format!("--target etcd {line} --warmup 0.1 --duration 0.5")) };

    // Uncontended: every acquire granted, every release done; depth 4 is four lanes, each
    // releasing only after its acquire's answer.
    let r = run("--workload uncontended -c 2 -d 4");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert_eq!(r.counts.conflicts, 0, "{r}");
    assert!(r.counts.grants > 10, "{r}");
    assert!(r.counts.grants.abs_diff(r.counts.done) <= 8, "{r}");
    assert_eq!(r.ttl_ms, Some(30_000), "{r}");

    // Contended: one name, eight workers; refused acquires are conflicts, and so are the
    // releases behind them, which must delete nobody else's lock.
    let r = run("--workload contended --hot 1 -c 4 -d 2");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert!(r.counts.grants > 0 && r.counts.conflicts > 0, "{r}");
    assert!(r.counts.done <= r.counts.grants + 8, "{r}");

    // Hold-and-release: hand-offs between connections, measured.
    let r = run("--workload hold --hot 1 --hold-ms 1 -c 3");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert!(r.handoff_us.is_some_and(|h| h.count > 0), "{r}");

    // TTL only: each acquire with a lease of its own, which etcd lengthens to its minimum (2 s
    // with the default 1 s election timeout).
    let r = run("--workload ttl --ttl-ms 1000 --keys 1000000000 -c 2 -d 2");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert!(r.counts.grants > 0 && r.counts.grants == r.requests, "{r}");
    assert_eq!(r.ttl_ms, Some(2000), "{r}");

    // The open loop: on schedule, each release after its acquire's answer.
    let r = run("--workload uncontended -c 2 --rate 400");
    assert_eq!(r.counts.errors, 0, "{r}");
    assert_eq!(r.counts.conflicts, 0, "{r}");
    assert!((150..=250).contains(&r.requests), "{r}");
    assert!(r.send_lag_us.is_some(), "{r}");
}
