//! The `ringlock` binary's configuration, as an operator meets it: command line over
//! environment over `.env` over defaults, with the reference server's names.

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
    let dir = std::env::temp_dir().join(format!("ringlock-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
