//! Running the server: metrics, graceful shutdown, the secret from a file, protected mode's
//! start-up line, the log level; and deploying it: JSON logs, systemd, the Debian package,
//! the OpenAPI spec, Prometheus and Grafana.

/// `--log-format json`: one object a line.
mod logs;

/// systemd: readiness and watchdog messages, socket activation, the units verified.
mod systemd;

/// The Debian package, built by cargo-deb and listed.
mod package;

/// `docs/openapi.yaml` proven against a live server by schemathesis.
mod openapi;

/// `/metrics` checked by promtool; the Grafana dashboard's queries.
mod prometheus;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Http, Process, SECRET, TestServer, post, ringlock_command};

#[test]
fn metrics_count_what_happened_and_name_nothing() {
    let s = TestServer::start(2);
    let mut c = s.connect();
    for i in 0..5 {
        assert_eq!(c.acquire(&format!("secret-project-{i}"), "alice").status, 200);
    }
    assert_eq!(c.acquire("secret-project-0", "bob").status, 409);
    assert_eq!(c.release("secret-project-1", "alice").status, 200);
    c.post("/acquire", SECRET, r#"{"resource":"brief","owner":"o","expire":0.05}"#);
    c.post("/acquire", SECRET, r#"{"resource":"secret-project-2","owner":"w","wait":0.05}"#);
    thread::sleep(Duration::from_millis(120));
    let r = c.call("GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200, "no secret needed");
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let value = |name: &str| -> u64 {
        r.body
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(value("ringlock_grants_total "), 6);
    assert_eq!(value("ringlock_conflicts_total "), 1);
    assert_eq!(value("ringlock_releases_total "), 1);
    assert_eq!(value("ringlock_expiries_total "), 1);
    assert_eq!(value("ringlock_waits_total "), 1);
    assert_eq!(value("ringlock_wait_timeouts_total "), 1);
    assert_eq!(value("ringlock_held_locks{"), 4);
    assert_eq!(value("ringlock_connections{"), 1);
    assert!(value("ringlock_request_duration_seconds_count ") >= 9);
    assert!(r.body.contains(&format!("ringlock_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
    for secret_word in ["secret-project", "alice", "bob", SECRET] {
        assert!(!r.body.contains(secret_word), "metrics mention {secret_word:?}");
    }
}

fn ringlock() -> Command {
    let mut cmd = ringlock_command();
    cmd.args(["-b", "127.0.0.1", "-p", "0", "--threads", "2"]);
    cmd
}

fn start(cmd: Command) -> (Process, String) {
    let p = Process::start(cmd);
    let line = p.line.clone();
    (p, line)
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut cmd = ringlock();
    cmd.env("LOCKSERVER_SECRET", SECRET).args(["--shutdown-timeout", "3"]);
    let (server, _) = start(cmd);
    let mut holder = Http::connect(server.addr);
    assert_eq!(holder.acquire("drain", "a").status, 200);
    let mut waiter = Http::connect(server.addr);
    waiter.send(post("/acquire", SECRET, r#"{"resource":"drain","owner":"b","wait":30}"#));
    let mut idle = Http::connect(server.addr);
    assert_eq!(idle.call("GET /health HTTP/1.1\r\n\r\n").status, 200);
    thread::sleep(Duration::from_millis(100));

    let signalled = Instant::now();
    server.terminate();
    let r = waiter.read();
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "ERR Server shutting down"),
        "the wait is answered, not dropped"
    );
    assert!(idle.is_closed(), "idle connections are closed");
    let addr = server.addr;
    let (status, log) = server.finish();
    assert!(status.success(), "exits 0: {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(3), "well within the shutdown timeout");
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer listening");
    assert!(log.contains(" INFO SIGTERM: shutting down") && log.contains(" INFO stopped"), "{log}");
    assert!(!log.contains(SECRET), "the secret is never logged");
}

#[test]
fn the_secret_can_come_from_a_file() {
    let dir = std::env::temp_dir().join(format!("ringlock-secret-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let mut cmd = ringlock();
    cmd.env("LOCKSERVER_SECRET_FILE", &file);
    let (server, line) = start(cmd);
    assert!(line.contains("secret set"), "{line}");
    let mut c = Http::connect(server.addr);
    assert_eq!(c.post("/acquire", "from-a-file", r#"{"resource":"f","owner":"o"}"#).status, 200);
    assert_eq!(c.post("/acquire", "from-a-fil", r#"{"resource":"g","owner":"o"}"#).status, 401);
    drop(server);

    let out = ringlock().env("LOCKSERVER_SECRET_FILE", &file).env("LOCKSERVER_SECRET", "x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ringlock: both LOCKSERVER_SECRET and LOCKSERVER_SECRET_FILE are set; set one\n"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_default_secret_starts_in_protected_mode_and_logs_follow_the_level() {
    let (server, line) = start(ringlock());
    assert!(
        line.starts_with(&format!("ringlock {} listening on 127.0.0.1:", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(
        line.ends_with("(2 threads, protected mode: the secret is the default, so only clients on this machine are served)\n"),
        "{line}"
    );
    assert_eq!(
        Http::connect(server.addr).post("/acquire", "changeme", r#"{"resource":"p","owner":"o"}"#).status,
        200
    );
    server.terminate();
    let (_, log) = server.finish();
    assert!(
        log.contains(" WARN set LOCKSERVER_SECRET (or LOCKSERVER_SECRET_FILE) to serve other machines"),
        "{log}"
    );

    let mut cmd = ringlock();
    cmd.args(["--log", "warn"]).env("LOCKSERVER_SECRET", SECRET);
    let (server, _) = start(cmd);
    server.terminate();
    let (_, log) = server.finish();
    assert_eq!(log, "", "nothing below warn");
}

#[test]
fn an_empty_secret_is_refused_at_start() {
    let out = ringlock().env("LOCKSERVER_SECRET", "").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ringlock: LOCKSERVER_SECRET is empty; an empty secret would let every client in, so set a secret \
         (or unset it for the default, which serves only this machine)\n"
    );
    assert_eq!(out.stdout, b"", "never listened");

    let dir = std::env::temp_dir().join(format!("ringlock-empty-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, contents) in [("empty", ""), ("blank-line", "\n")] {
        let file = dir.join(name);
        std::fs::write(&file, contents).unwrap();
        let out = ringlock().env("LOCKSERVER_SECRET_FILE", &file).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "ringlock: LOCKSERVER_SECRET_FILE: {} is empty; an empty secret would let every client in, so \
                 put the secret in it\n",
                file.display()
            )
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Set in the environment of the child half of the panic test.
const PANIC_CHILD: &str = "RINGLOCK_TEST_PANIC_CHILD";

/// The child half of `a_panic_in_any_task_of_a_core_ends_the_process`: with
/// [`PANIC_CHILD`] set, it serves (in this test binary, whose library has the test hook)
/// until a connection's task panics and the process ends; without it, it does nothing.
#[test]
fn panic_child_serves_until_it_panics() {
    if std::env::var_os(PANIC_CHILD).is_none() {
        return;
    }
    let server = TestServer::with_config(ringlock::config::Config::local(2, SECRET));
    println!("child serving on {}", server.addr);
    thread::sleep(Duration::from_secs(30));
    // The process should have ended long before.
    std::process::exit(3);
}

#[test]
fn a_panic_in_any_task_of_a_core_ends_the_process() {
    use ringlock::fuzzing::{PANIC_HOOK_VAR, PANIC_READER, PANIC_WRITER};
    for (bytes, task, message) in [
        (PANIC_READER, "a connection", "a connection's reader panics, as the test suite asked"),
        (PANIC_WRITER, "a connection's writer", "a connection's writer panics, as the test suite asked"),
    ] {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "ops::panic_child_serves_until_it_panics",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(PANIC_CHILD, "1")
        .env(PANIC_HOOK_VAR, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "the child said nothing");
            // libtest has written the test's name, without a line break, before it.
            if let Some((_, addr)) = line.trim().split_once("child serving on ") {
                break addr.parse::<std::net::SocketAddr>().unwrap();
            }
        };
        let mut c = Http::connect(addr);
        assert_eq!(c.call("GET /health HTTP/1.1\r\n\r\n").status, 200);
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut s, bytes).unwrap();
        let status = crate::support::exit_within(&mut child, Duration::from_secs(10));
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
        assert_eq!(status.code(), Some(70), "{task}: EX_SOFTWARE, for a supervisor to restart it\n{log}");
        let said = format!("{task} panicked ({message}); exiting so that a supervisor restarts the server");
        assert!(log.contains(&said), "{task}: the log says so:\n{log}");
    }
}
