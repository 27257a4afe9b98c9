//! The reference server's real SDKs, unmodified, against ringlock: each must see the same
//! answers it would from the reference server (and, where the reference is slow, sooner).

use std::io;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

// The crate is a renamed dev-dependency; its `lock_scope!` macro names it `lockserver`.
use lockserver::client::LockMode;
use lockserver::{LockserverClient, lock_scope};
use lockserver_sdk as lockserver;

use crate::support::{SECRET, TestServer, sdks};

/// What every SDK script must print: the same observations for every client.
const EXPECTED: &str = "acquire_free=True
nonblocking_held=False
blocking_after_release=True
blocking_waited=True
release_by_non_holder=409
expire_acquire=True
expire_held=False
expire_freed=True
wrong_secret=401
env_client=True
";

fn script(name: &str) -> String {
    format!("{}/tests/sdk/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run_sdk(cmd: &mut Command, server: &TestServer) -> String {
    let out = cmd
        .env("LOCKSERVER_ADDR", server.host_port())
        .env("LOCKSERVER_SECRET", SECRET)
        .env("LOCKSERVER_OWNER", "env-owner")
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn python_sdk_from_pypi() {
    let python = sdks::python();
    let server = TestServer::start(2);
    let seen = run_sdk(Command::new(python).arg(script("python_sdk.py")), &server);
    assert_eq!(seen, EXPECTED);
}

#[test]
fn node_sdk_from_the_crate_package() {
    let client = sdks::node_client();
    let server = TestServer::start(2);
    let seen = run_sdk(
        Command::new("node").arg(script("node_sdk.js")).env("LOCKSERVER_JS_CLIENT", &client),
        &server,
    );
    assert_eq!(seen.replace("true", "True").replace("false", "False"), EXPECTED);
}

fn would_block(r: io::Result<()>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[test]
fn rust_sdk_from_the_lockserver_crate() {
    let server = TestServer::start(2);
    let addr = server.host_port();
    let a = LockserverClient::new(addr.clone(), "rs-a", SECRET);
    let b = LockserverClient::new(addr.clone(), "rs-b", SECRET);

    a.acquire_with_mode("rs", LockMode::NonBlocking).expect("free lock");
    assert!(would_block(b.acquire_with_mode("rs", LockMode::NonBlocking)), "held: WouldBlock");

    let releaser = thread::spawn({
        let addr = addr.clone();
        move || {
            thread::sleep(Duration::from_millis(500));
            LockserverClient::new(addr, "rs-a", SECRET).release("rs").unwrap();
        }
    });
    let start = Instant::now();
    b.acquire("rs").expect("blocking acquire succeeds once released");
    assert!(start.elapsed() >= Duration::from_millis(400));
    releaser.join().unwrap();

    let err = a.release("rs").unwrap_err();
    assert_eq!(err.to_string(), "HTTP error: 409 Conflict", "release by a non-holder");
    b.release("rs").unwrap();

    let value = lock_scope!(&a, "rs-scope", {
        assert!(would_block(b.acquire_with_mode("rs-scope", LockMode::NonBlocking)));
        42
    });
    assert_eq!(value, 42);
    b.acquire_with_mode("rs-scope", LockMode::NonBlocking).expect("the guard released it");
    lock_scope!(&a, "rs-scope-nb", non_blocking, {
        assert!(would_block(b.acquire_with_mode("rs-scope-nb", LockMode::NonBlocking)));
    });

    a.acquire_with_mode_and_expire("rs-ttl", LockMode::NonBlocking, Some(1)).unwrap();
    assert!(would_block(b.acquire_with_mode("rs-ttl", LockMode::NonBlocking)));
    thread::sleep(Duration::from_millis(1300));
    b.acquire_with_mode("rs-ttl", LockMode::NonBlocking).expect("expired on time");

    let wrong = LockserverClient::new(addr, "rs-x", "wrong");
    let err = wrong.acquire_with_mode("rs-x", LockMode::NonBlocking).unwrap_err();
    assert_eq!(err.to_string(), "HTTP error: 401 Unauthorized");
}
