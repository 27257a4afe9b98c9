//! The `ringlock` binary's configuration, as an operator meets it: command line over
//! environment over `.env` over the config file over defaults, with the reference server's
//! names.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

use crate::support::{Http, Process, ringlock_command};

/// The binary, run in `dir`.
fn ringlock(dir: &PathBuf) -> Command {
    let mut cmd = ringlock_command();
    cmd.current_dir(dir);
    cmd
}

fn start(cmd: Command) -> Process {
    Process::start(cmd)
}

fn scratch_dir(name: &str) -> PathBuf {
    crate::support::scratch_dir(&format!("config-{name}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn status_with_secret(addr: SocketAddr, secret: &str) -> u16 {
    Http::connect(addr).post("/acquire", secret, r#"{"resource":"cfg","owner":"o","expire":0}"#).status
}

#[test]
fn command_line_over_environment_over_dotenv() {
    let dir = scratch_dir("layers");
    let port = free_port();
    std::fs::write(
        dir.join(".env"),
        format!("LOCKSERVER_BIND_IP=127.0.0.1\nLOCKSERVER_PORT={port}\nLOCKSERVER_SECRET=from-dotenv\n"),
    )
    .unwrap();

    let server = start(ringlock(&dir));
    assert_eq!(server.addr, SocketAddr::from(([127, 0, 0, 1], port)), ".env sets the address");
    assert_eq!(status_with_secret(server.addr, "from-dotenv"), 200, ".env sets the secret");
    assert_eq!(status_with_secret(server.addr, "changeme"), 401);
    drop(server);

    let mut cmd = ringlock(&dir);
    cmd.env("LOCKSERVER_SECRET", "from-env").env("LOCKSERVER_PORT", "0");
    let server = start(cmd);
    assert_ne!(server.addr.port(), port, "the environment overrides .env");
    assert_eq!(status_with_secret(server.addr, "from-env"), 200);
    assert_eq!(status_with_secret(server.addr, "from-dotenv"), 401);
    drop(server);

    let mut cmd = ringlock(&dir);
    cmd.env("LOCKSERVER_PORT", "1").args(["--port", "0", "-b", "127.0.0.1"]);
    let server = start(cmd);
    assert!(server.addr.port() != 1 && server.addr.port() != port, "the command line overrides both");
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn defaults_are_the_reference_servers() {
    let dir = scratch_dir("help");
    let out = ringlock(&dir).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "-b, --bind",
        "[env: LOCKSERVER_BIND_IP=]",
        "[default: 0.0.0.0]",
        "-p, --port",
        "[env: LOCKSERVER_PORT=]",
        "[default: 8080]",
        "--threads",
    ] {
        assert!(help.contains(expected), "--help lacks {expected:?}:\n{help}");
    }
    let out = ringlock(&dir).args(["--port", "http"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'http' for '--port <PORT>'"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_second_server_on_a_served_port_refuses_to_start() {
    let dir = scratch_dir("twice");
    let mut cmd = ringlock(&dir);
    cmd.args(["-b", "127.0.0.1", "-p", "0"]);
    let first = start(cmd);
    let out =
        ringlock(&dir).args(["-b", "127.0.0.1", "-p", &first.addr.port().to_string()]).output().unwrap();
    assert!(!out.status.success(), "sharing the port would split the locks in two");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("(is another server running there?)"), "{err}");
    assert_eq!(status_with_secret(first.addr, "changeme"), 200, "the first server is unharmed");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The README's command, `cargo run`, starts the server (the workspace also has the load
/// generator's binary; the manifest's `default-run` picks ours). Run here without `--release`,
/// which changes the profile, not the choice.
#[test]
fn cargo_run_runs_the_server() {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--", "--version"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("ringlock {}\n", env!("CARGO_PKG_VERSION")));
}

/// The threads a start-up line reports.
fn threads(server: &Process) -> usize {
    let (_, rest) = server.line.split_once(" (").unwrap_or_else(|| panic!("{}", server.line));
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_config_file_is_under_flags_environment_and_dotenv() {
    let dir = scratch_dir("file-layers");
    let file = dir.join("ringlock.toml");
    // A new port each time: a killed server's listener may outlive it for a moment.
    let with_port = || {
        let port = free_port();
        let text = format!(
            "bind = \"127.0.0.1\"\nport = {port}\nthreads = 1\nheader-timeout = 2.5\nlog = \"warn\"\n"
        );
        std::fs::write(&file, text).unwrap();
        port
    };

    let port = with_port();
    let mut cmd = ringlock(&dir);
    cmd.arg("--config").arg(&file);
    let server = start(cmd);
    assert_eq!(server.addr, SocketAddr::from(([127, 0, 0, 1], port)), "the file sets the address");
    assert_eq!(threads(&server), 1);
    drop(server);

    let port = with_port();
    let mut cmd = ringlock(&dir);
    cmd.env("RINGLOCK_CONFIG", &file);
    let server = start(cmd);
    assert_eq!(server.addr.port(), port, "RINGLOCK_CONFIG names it too");
    drop(server);

    std::fs::write(dir.join(".env"), "RINGLOCK_THREADS=2\n").unwrap();
    let port = with_port();
    let mut cmd = ringlock(&dir);
    cmd.env("RINGLOCK_CONFIG", &file);
    let server = start(cmd);
    assert_eq!((server.addr.port(), threads(&server)), (port, 2), ".env beats the file");
    drop(server);

    let port = with_port();
    let mut cmd = ringlock(&dir);
    cmd.env("RINGLOCK_CONFIG", &file).env("RINGLOCK_THREADS", "3").env("LOCKSERVER_PORT", "0");
    let server = start(cmd);
    assert_eq!(threads(&server), 3, "the environment beats .env and the file");
    assert_ne!(server.addr.port(), port);
    drop(server);

    let mut cmd = ringlock(&dir);
    cmd.env("RINGLOCK_CONFIG", &file).env("RINGLOCK_THREADS", "3").args(["--threads", "4", "-p", "0"]);
    cmd.env("LOCKSERVER_SECRET", "s");
    let server = start(cmd);
    assert_eq!(threads(&server), 4, "the command line beats everything");
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1", "what nothing overrides still comes from the file");
    server.terminate();
    let (status, log) = server.finish();
    assert!(status.success());
    assert_eq!(log, "", "log = \"warn\" from the file: nothing at info");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_file_errors_name_the_file_and_the_key() {
    let dir = scratch_dir("file-errors");
    let file = dir.join("ringlock.toml");
    let path = file.display().to_string();
    let refused = |text: &str, args: &[&str]| {
        std::fs::write(&file, text).unwrap();
        let out = ringlock(&dir).arg("--config").arg(&file).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{text:?} stops the start");
        assert!(out.stdout.is_empty(), "{text:?}: never listened");
        String::from_utf8(out.stderr).unwrap()
    };
    assert_eq!(
        refused("port = 9000\nprot = 1\n", &[]),
        format!(
            "ringlock: {path}: unknown key `prot`; the keys are the long flag names of `ringlock --help`\n"
        )
    );
    assert_eq!(
        refused("max_connections = 10\n", &[]),
        format!(
            "ringlock: {path}: unknown key `max_connections` (did you mean `max-connections`?); the keys are \
             the long flag names of `ringlock --help`\n"
        )
    );
    assert_eq!(
        refused("port = \"http\"\n", &[]),
        format!(
            "ringlock: {path}: key `port`: invalid value 'http' for '--port <PORT>': invalid digit found in string\n"
        )
    );
    assert_eq!(
        refused("port = \"http\"\n", &["--port", "0"]),
        format!(
            "ringlock: {path}: key `port`: invalid value 'http' for '--port <PORT>': invalid digit found in string\n"
        ),
        "a wrong value stops the start even where a flag overrides it"
    );
    assert_eq!(
        refused("bind = 127\n", &[]),
        format!(
            "ringlock: {path}: key `bind`: invalid value '127' for '--bind <BIND>': invalid IP address syntax\n"
        )
    );
    assert_eq!(
        refused("max-connections = [1, 2]\n", &[]),
        format!(
            "ringlock: {path}: key `max-connections`: expected a string, number or boolean, found array\n"
        )
    );
    assert_eq!(
        refused("[limits]\nport = 1\n", &[]),
        format!(
            "ringlock: {path}: unknown key `limits`; the keys are the long flag names of `ringlock --help`\n"
        )
    );
    assert_eq!(
        refused("log-format = \"xml\"\n", &[]),
        format!("ringlock: {path}: key `log-format`: invalid value 'xml' for '--log-format <LOG_FORMAT>'\n")
    );
    let parse_error = refused("port = \n", &[]);
    assert!(
        parse_error.starts_with(&format!("ringlock: {path}: TOML parse error at line 1, column 8")),
        "{parse_error}"
    );
    std::fs::remove_file(&file).unwrap();
    let out = ringlock(&dir).arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("ringlock: {path}: cannot read: No such file or directory (os error 2)\n")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The package's `/etc/ringlock/ringlock.toml` is one the binary takes.
#[test]
fn the_packaged_config_file_starts_a_server() {
    let dir = scratch_dir("packaged-file");
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ringlock.toml");
    let mut cmd = ringlock(&dir);
    cmd.arg("--config").arg(&file).args(["-b", "127.0.0.1", "-p", "0"]);
    let server = start(cmd);
    assert_eq!(status_with_secret(server.addr, "changeme"), 200);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn max_locks_and_max_waiters_come_from_flags_and_the_environment() {
    let dir = scratch_dir("caps");
    let mut cmd = ringlock(&dir);
    cmd.args(["-b", "127.0.0.1", "-p", "0", "--threads", "2", "--in-memory", "--max-locks", "5"])
        .env("RINGLOCK_MAX_WAITERS", "7")
        .env("LOCKSERVER_SECRET", "caps");
    let server = start(cmd);
    // Each core holds its share, rounded up.
    for (name, value) in [("ringlock_max_locks", 3), ("ringlock_max_waiters", 4)] {
        for core in ["0", "1"] {
            assert_eq!(
                crate::support::metric_at(server.addr, &format!("{name}{{core=\"{core}\"}}")),
                value,
                "{name}"
            );
        }
    }
    let mut cmd = ringlock(&dir);
    cmd.args(["--max-locks", "0"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-locks"), "a cap of none is refused");
}
