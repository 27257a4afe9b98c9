//! The wire protocol: golden vectors (request bytes -> response bytes) that a live server, the
//! parser and the client's codec all pass; every operation through the Rust client; hand-off
//! order, waits, session locks; and the `ringlock lock` command running real children.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringlock::config::Config;
use ringlock_client::blocking::Client;
use ringlock_client::frame::{self, PREFACE};
use ringlock_client::{AcquireOptions, Config as ClientConfig, Error, LostReason, Protocol, safety_margin};

use crate::support::{FreezableServer, Http, SECRET, TestServer, exit_within, metric};

/// One golden case: exchanges on one connection, and whether the server closes it after.
struct Case {
    name: String,
    steps: Vec<(Vec<u8>, Vec<u8>)>,
    closes: bool,
}

fn golden() -> Vec<Case> {
    let text = include_str!("golden.txt");
    let hex = |line: &str| -> Vec<u8> {
        line.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect()
    };
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("case ") {
            cases.push(Case { name: name.into(), steps: Vec::new(), closes: false });
        } else if let Some(req) = line.strip_prefix("> ") {
            cases.last_mut().unwrap().steps.push((hex(req), Vec::new()));
        } else if let Some(rep) = line.strip_prefix("< ") {
            cases.last_mut().unwrap().steps.last_mut().unwrap().1 = hex(rep);
        } else if line == "closed" {
            cases.last_mut().unwrap().closes = true;
        }
    }
    assert!(cases.len() >= 10, "the golden file has its cases");
    cases
}

fn golden_server() -> TestServer {
    let mut config = Config::local(1, SECRET);
    config.token_seed = Some(1000);
    TestServer::with_config(config)
}

#[test]
fn golden_vectors_against_a_live_server() {
    for case in golden() {
        let server = golden_server();
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for (req, expected) in &case.steps {
            s.write_all(req).unwrap();
            let mut got = vec![0; expected.len()];
            s.read_exact(&mut got).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(&got, expected, "case {:?}", case.name);
        }
        let mut rest = Vec::new();
        if case.closes {
            s.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"", "case {:?}: closed after the error", case.name);
        }
    }
}

/// Splits a byte string into frames (after an optional preface); stops at the first that is
/// not whole or not valid framing.
fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut rest = bytes
        .strip_prefix(&PREFACE[..])
        .or_else(|| bytes.strip_prefix(&frame::PREFACE_SESSIONS[..]))
        .unwrap_or(bytes);
    let mut out = Vec::new();
    while let Ok(Some(n)) = frame::check(rest) {
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

#[test]
fn golden_vectors_through_the_codec() {
    let (mut requests, mut replies) = (0, 0);
    for case in golden() {
        for (req, rep) in &case.steps {
            for f in frames(req) {
                if let Ok((id, parsed)) = frame::parse_request(f) {
                    let mut again = Vec::new();
                    frame::encode_request(&mut again, id, &parsed);
                    assert_eq!(again, f, "case {:?}: the client encodes what the server parsed", case.name);
                    requests += 1;
                }
            }
            for f in frames(rep) {
                let (id, parsed) = frame::parse_reply(f).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
                let mut again = Vec::new();
                frame::encode_reply(&mut again, id, &parsed);
                assert_eq!(again, f, "case {:?}: the server encodes what the client parses", case.name);
                replies += 1;
            }
        }
    }
    assert!(requests > 20 && replies > 25, "{requests} requests, {replies} replies");
}

fn client(server: &TestServer, owner: &str) -> Client {
    client_at(&server.host_port(), owner)
}

fn client_at(addr: &str, owner: &str) -> Client {
    Client::connect(&config_at(addr, owner)).expect("connect")
}

fn config_at(addr: &str, owner: &str) -> ClientConfig {
    ClientConfig { addr: addr.into(), owner: owner.into(), secret: SECRET.into(), ..ClientConfig::default() }
}

/// A client speaking protocol version 1: session locks go with the connection.
fn client_v1(server: &TestServer, owner: &str) -> Client {
    let config = ClientConfig { protocol: Protocol::Version1, ..config_at(&server.host_port(), owner) };
    Client::connect(&config).expect("connect")
}

fn opts(ttl_ms: Option<u64>, wait_ms: Option<u64>, session: bool) -> AcquireOptions {
    AcquireOptions {
        ttl: ttl_ms.map(Duration::from_millis),
        wait: wait_ms.map(Duration::from_millis),
        session,
    }
}

#[test]
fn every_operation_through_the_client() {
    let server = TestServer::start(2);
    let a = client(&server, "a");
    let b = client(&server, "b");
    a.ping().unwrap();
    let lease = a.acquire("ops", opts(None, None, false)).unwrap();
    assert!(matches!(b.acquire("ops", opts(None, None, false)), Err(Error::Busy)));
    let info = b.inspect("ops").unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.token, info.expires_in, info.waiters), ("a", lease.token, None, 0));
    assert!(matches!(b.release("ops", None), Err(Error::NotHolder)));
    assert!(matches!(a.release("ops", Some(lease.token + 1)), Err(Error::TokenMismatch)));
    a.extend("ops", Some(lease.token), Some(Duration::from_secs(60))).unwrap();
    let left = b.inspect("ops").unwrap().unwrap().expires_in.unwrap();
    assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
    a.release("ops", Some(lease.token)).unwrap();
    assert!(matches!(a.release("ops", None), Err(Error::NotFound)));
    assert_eq!(b.inspect("ops").unwrap(), None);
    assert!(
        matches!(a.acquire("", opts(None, None, false)), Err(Error::Invalid(r)) if r == "resource must not be empty")
    );

    let guard = b.lock("guarded", opts(Some(5_000), None, false)).unwrap();
    assert!(matches!(a.acquire("guarded", opts(None, None, false)), Err(Error::Busy)));
    drop(guard);
    a.acquire("guarded", opts(None, None, false)).expect("the guard released on drop");

    let wrong = ClientConfig {
        addr: server.host_port(),
        owner: "x".into(),
        secret: "nope".into(),
        ..ClientConfig::default()
    };
    assert!(matches!(Client::connect(&wrong), Err(Error::Unauthorized)));
}

#[test]
fn many_requests_in_flight_on_one_connection() {
    let server = TestServer::start(2);
    let config = ClientConfig {
        addr: server.host_port(),
        owner: "pipe".into(),
        secret: SECRET.into(),
        ..ClientConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = ringlock_client::Client::connect(&config).await.unwrap();
        let names: Vec<String> = (0..2000).map(|i| format!("inflight-{i}")).collect();
        let acquires = names.iter().map(|n| c.acquire(n, AcquireOptions::default()));
        let leases: Vec<_> = join_all(acquires).await;
        let tokens: Vec<u64> = leases.into_iter().map(|l| l.unwrap().token).collect();
        let mut unique = tokens.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), tokens.len(), "a token names one grant, whichever core made it");
        let releases = names.iter().zip(&tokens).map(|(n, t)| c.release(n, Some(*t)));
        assert!(join_all(releases).await.into_iter().all(|r| r.is_ok()));
    });
}

/// Polls all futures together (a tiny `join_all`, so the test needs no futures crate).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn waiters_on_several_connections_are_served_first_come_first_served() {
    let server = TestServer::start(2);
    let holder = client(&server, "holder");
    let first = holder.acquire("fifo", opts(None, None, false)).unwrap().token;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (config, order) = (
            ClientConfig {
                addr: server.host_port(),
                owner: format!("w{i}"),
                secret: SECRET.into(),
                ..ClientConfig::default()
            },
            order.clone(),
        );
        waiters.push(thread::spawn(move || {
            let c = Client::connect(&config).unwrap();
            let lease = c.acquire("fifo", opts(None, Some(10_000), false)).unwrap();
            order.lock().unwrap().push((i, lease.token));
            thread::sleep(Duration::from_millis(20));
            c.release("fifo", Some(lease.token)).unwrap();
        }));
        // Let each waiter's acquire reach the queue before the next one's.
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder.inspect("fifo").unwrap().unwrap().waiters < i + 1 {
            assert!(Instant::now() < deadline, "waiter {i} never queued");
            thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(holder.inspect("fifo").unwrap().unwrap().waiters, 4);
    holder.release("fifo", Some(first)).unwrap();
    waiters.into_iter().for_each(|w| w.join().unwrap());
    let order = order.lock().unwrap();
    assert_eq!(order.iter().map(|o| o.0).collect::<Vec<_>>(), [0, 1, 2, 3], "first come, first served");
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1) && order[0].1 > first,
        "tokens rise with each hand-off"
    );
    // Handed on by the server, not polled for: no waiter was ever told the lock is held, and
    // every grant is one of the five acquires. (How fast a hand-off is, is a benchmark:
    // BENCHMARKS.md's wire-wait hand-off.)
    assert_eq!(
        (metric(&server, "ringlock_conflicts_total"), metric(&server, "ringlock_grants_total")),
        (0, 5)
    );
}

#[test]
fn a_wait_runs_out_and_tokens_rise_across_expiry() {
    let server = TestServer::start(2);
    let a = client(&server, "a");
    let b = client(&server, "b");
    let t1 = a.acquire("wait-out", opts(Some(200), None, false)).unwrap().token;
    let start = Instant::now();
    assert!(matches!(b.acquire("wait-out", opts(None, Some(50), false)), Err(Error::TimedOut)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    let t2 =
        b.acquire("wait-out", opts(None, Some(2_000), false)).expect("granted when the lease ran out").token;
    assert!(t2 > t1);
    assert!(start.elapsed() >= Duration::from_millis(150), "not before the lease ended");
}

#[test]
fn session_locks_are_released_when_their_connection_closes() {
    let server = TestServer::start(2);
    let a = client_v1(&server, "a");
    let b = client(&server, "b");
    a.acquire("session", opts(None, None, true)).unwrap();
    a.acquire("plain", opts(None, None, false)).unwrap();
    let waiting =
        thread::spawn(move || b.acquire("session", opts(None, Some(5_000), false)).map(|l| l.token));
    thread::sleep(Duration::from_millis(100));
    let closed = Instant::now();
    drop(a);
    assert!(waiting.join().unwrap().is_ok(), "granted once the session ended");
    assert!(closed.elapsed() < Duration::from_millis(500));
    let c = client(&server, "c");
    assert!(matches!(c.acquire("plain", opts(None, None, false)), Err(Error::Busy)), "only session locks go");
}

#[test]
fn a_session_lock_whose_lease_runs_out_is_reported_lost() {
    let server = TestServer::start(2);
    let a = client(&server, "a");
    let mut lost = a.lost();
    let lease = a.acquire("short", opts(Some(100), None, true)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let notice = loop {
        match lost.try_recv() {
            Ok(notice) => break notice,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("no lost notice: {e:?}"),
        }
    };
    assert_eq!((notice.resource.as_str(), notice.token), ("short", lease.token));
}

#[test]
fn both_protocols_share_the_port_and_bad_frames_leave_the_server_up() {
    let server = TestServer::start(2);
    let a = client(&server, "a");
    a.acquire("shared", opts(None, None, false)).unwrap();
    let mut http = server.connect();
    assert_eq!(http.acquire("shared", "b").status, 409, "HTTP sees the wire client's lock");
    let mut raw = TcpStream::connect(server.addr).unwrap();
    raw.write_all(b"\0RL\x01\x01\x00\x00\x00").unwrap();
    let mut reply = Vec::new();
    raw.read_to_end(&mut reply).unwrap();
    assert_eq!(
        frame::parse_reply(&reply).unwrap().1,
        frame::WireReply::ProtocolError { reason: "frame shorter than its kind and id" }
    );
    a.ping().expect("other connections are unharmed");
    assert_eq!(Http::connect(server.addr).call("GET /health HTTP/1.1\r\n\r\n").status, 200);
}

fn ringlock_lock(server: &TestServer, args: &[&str]) -> Command {
    ringlock_lock_at(&server.host_port(), args)
}

fn ringlock_lock_at(addr: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlock"));
    cmd.arg("lock")
        .args(args)
        .env("LOCKSERVER_ADDR", addr)
        .env("LOCKSERVER_SECRET", SECRET)
        .env_remove("LOCKSERVER_OWNER");
    cmd
}

#[test]
fn the_lock_command_runs_a_child_holding_the_lock_and_passes_its_status() {
    let server = TestServer::start(2);
    let out = ringlock_lock(&server, &["cmd-lock", "--", "sh", "-c", "echo ran; exit 3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "the child's status passes through");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let observer = client(&server, "observer");
    assert_eq!(observer.inspect("cmd-lock").unwrap(), None, "released at the end");

    // While a child runs the lock is held, and renewed past its short lease (short, but long
    // enough that a renewal held up by a busy machine's disk does not end it).
    let mut child =
        ringlock_lock(&server, &["--ttl", "0.6", "cmd-lock", "--", "sleep", "2"]).spawn().unwrap();
    thread::sleep(Duration::from_millis(300));
    let held = observer.inspect("cmd-lock").unwrap().expect("held while the command runs");
    thread::sleep(Duration::from_millis(1_200));
    let still = observer.inspect("cmd-lock").unwrap().expect("renewed past its 0.6 s lease");
    assert_eq!(held.token, still.token);
    let busy = ringlock_lock(&server, &["cmd-lock", "--", "true"]).output().unwrap();
    assert_eq!(busy.status.code(), Some(75), "busy: 75");
    assert_eq!(String::from_utf8_lossy(&busy.stderr), "ringlock lock: cmd-lock is held by someone else\n");
    assert!(child.wait().unwrap().success());
    assert_eq!(observer.inspect("cmd-lock").unwrap(), None);

    // --wait queues behind the holder.
    let holder = client(&server, "holder");
    let lease = holder.acquire("cmd-wait", opts(None, None, false)).unwrap();
    let waiting = ringlock_lock(&server, &["--wait", "5", "cmd-wait", "--", "true"]).spawn().unwrap();
    thread::sleep(Duration::from_millis(300));
    holder.release("cmd-wait", Some(lease.token)).unwrap();
    assert!(waiting.wait_with_output().unwrap().status.success());
    let out = ringlock_lock(&server, &["--wait", "0.2", "cmd-lock", "--", "no-such-command-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn the_status_command() {
    let server = TestServer::start(1);
    let holder = client(&server, "holder");
    holder.acquire("st", opts(None, None, false)).unwrap();
    let status = |name: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ringlock"))
            .args(["status", name])
            .env("LOCKSERVER_ADDR", server.host_port())
            .env("LOCKSERVER_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let held = status("st");
    assert!(
        held.starts_with("st: held by holder, token ") && held.ends_with(", never expires, 0 waiting\n"),
        "{held}"
    );
    assert_eq!(status("other"), "other: free\n");
}

#[test]
fn calls_time_out_against_a_frozen_server_and_give_the_connection_up() {
    let server = FreezableServer::start();
    let call_timeout = Duration::from_millis(300);
    let config = ClientConfig {
        addr: server.host_port(),
        owner: "frozen".into(),
        secret: SECRET.into(),
        call_timeout,
        protocol: Protocol::Version1,
        ..ClientConfig::default()
    };
    let c = Client::connect(&config).unwrap();
    c.acquire("frozen-session", opts(None, None, true)).unwrap();
    server.freeze();
    let timed_out = c.ping().unwrap_err();
    assert!(matches!(timed_out, Error::CallTimeout(after) if after == call_timeout), "{timed_out:?}");
    assert_eq!(timed_out.to_string(), "no answer from the server within 0.300 s; the connection was closed");
    assert!(matches!(c.inspect("frozen-session"), Err(Error::Closed)), "the connection is given up");
    assert!(
        matches!(Client::connect(&config), Err(Error::CallTimeout(after)) if after == call_timeout),
        "connecting has the timeout too (the kernel accepts; nobody answers HELLO)"
    );
    server.thaw();
    let other = client_at(&server.host_port(), "other");
    other
        .acquire("frozen-session", opts(None, Some(5_000), false))
        .expect("the given-up connection closed, and its session lock went with it");
}

#[test]
fn a_guard_says_why_its_lock_is_lost() {
    let server = TestServer::start(2);
    let a = client(&server, "a");
    // The same owner on another connection can end a's lease early, as a server would.
    let same_owner = client(&server, "a");

    let guard = a.lock("lost-push", opts(Some(60_000), None, true)).unwrap();
    let mut lost = guard.lost();
    assert_eq!(lost.check(), None);
    same_owner.extend("lost-push", Some(guard.token()), Some(Duration::from_millis(50))).unwrap();
    assert_eq!(lost.wait_timeout(Duration::from_secs(5)), Some(LostReason::Expired), "the LOST push");
    assert_eq!(guard.lost().check(), Some(LostReason::Expired), "and it stays lost");

    let guard = a.lock("refused", opts(Some(60_000), None, false)).unwrap();
    same_owner.release("refused", Some(guard.token())).unwrap();
    assert!(matches!(guard.extend(Some(Duration::from_secs(60))), Err(Error::NotFound)));
    assert_eq!(guard.lost().check(), Some(LostReason::Refused("nobody holds the lock".into())));

    let guard = a.lock("given-back", opts(Some(60_000), None, false)).unwrap();
    let lost = guard.lost();
    guard.release().unwrap();
    assert_eq!(lost.check(), Some(LostReason::Released));
}

#[test]
fn a_guard_on_a_frozen_server_is_lost_by_its_own_deadline() {
    let server = FreezableServer::start();
    let c = client_at(&server.host_port(), "frozen");
    let ttl = Duration::from_secs(1);
    let before = Instant::now();
    let guard = c.lock("frozen-deadline", opts(Some(1_000), None, true)).unwrap();
    let after = Instant::now();
    let mut lost = guard.lost();
    let deadline = lost.deadline().unwrap();
    let give_up = ttl - safety_margin(ttl);
    assert!(
        before + give_up <= deadline && deadline <= after + give_up,
        "counted from the acquire's send time, less the margin"
    );
    assert_eq!(guard.expires(), Some(deadline + safety_margin(ttl)));
    server.freeze();
    assert_eq!(lost.wait_timeout(Duration::from_secs(5)), Some(LostReason::Deadline));
    assert!(Instant::now() >= deadline);
    // Dropping a lost guard does not wait for the frozen server.
    drop(guard);
}

#[test]
fn the_lock_command_gives_its_command_the_token_and_the_name() {
    let server = TestServer::start(2);
    let script = r#"echo "$RINGLOCK_TOKEN $RINGLOCK_RESOURCE"; read -r line || true"#;
    let mut child = ringlock_lock(&server, &["env-lock", "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let held = client(&server, "observer").inspect("env-lock").unwrap().expect("held while it runs");
    assert_eq!(line, format!("{} env-lock\n", held.token));
    drop(child.stdin.take());
    assert!(exit_within(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn the_lock_command_stops_its_command_before_a_frozen_server_could_end_the_lease() {
    let server = FreezableServer::start();
    let mut lock = ringlock_lock_at(
        &server.host_port(),
        &["--ttl", "3", "frozen-job", "--", "sh", "-c", "echo $$; exec sleep 60"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut pid = String::new();
    BufReader::new(lock.stdout.take().unwrap()).read_line(&mut pid).unwrap();
    let pid: libc::pid_t = pid.trim().parse().expect("the command's pid");

    // Freeze the server right after it has renewed the lease, and note when that lease ends
    // at the server at the earliest: when it was asked, plus what was left then.
    let observer = client_at(&server.host_port(), "observer");
    let left = || observer.inspect("frozen-job").unwrap().expect("held while it runs").expires_in.unwrap();
    let mut last = left();
    let give_up = Instant::now() + Duration::from_secs(10);
    let lease_end = loop {
        let asked = Instant::now();
        let now_left = left();
        if now_left > last + Duration::from_millis(200) {
            break asked + now_left;
        }
        assert!(asked < give_up, "no renewal seen");
        last = now_left;
        thread::sleep(Duration::from_millis(20));
    };
    server.freeze();

    let status = exit_within(&mut lock, Duration::from_secs(10));
    let stopped = Instant::now();
    assert_eq!(status.code(), Some(70), "lost: 70");
    assert!(
        stopped <= lease_end,
        "the command ran {:?} past the moment the lease could end at the server",
        stopped - lease_end
    );
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "the command was stopped and reaped");
    let mut stderr = String::new();
    lock.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(
        stderr,
        "ringlock lock: lost the lock on frozen-job (no renewal was confirmed in time: by this process's \
         clock, the lease is within its safety margin of its end); stopping the command\n"
    );
}

#[test]
fn the_lock_command_kills_a_command_that_ignores_sigterm_once_the_lock_is_lost() {
    let server = TestServer::start(2);
    let script = r#"trap "" TERM; echo "$RINGLOCK_TOKEN"; exec sleep 60"#;
    let args = [
        "--ttl",
        "60",
        "--kill-after",
        "0.2",
        "--owner",
        "stubborn",
        "stubborn-job",
        "--",
        "sh",
        "-c",
        script,
    ];
    let mut lock =
        ringlock_lock(&server, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut token = String::new();
    BufReader::new(lock.stdout.take().unwrap()).read_line(&mut token).unwrap();
    // The same owner ends the lease early; the server pushes LOST to the command's connection.
    let token = token.trim().parse().expect("the token");
    client(&server, "stubborn").extend("stubborn-job", Some(token), Some(Duration::from_millis(10))).unwrap();
    assert_eq!(exit_within(&mut lock, Duration::from_secs(10)).code(), Some(70));
    let mut stderr = String::new();
    lock.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(
        stderr,
        "ringlock lock: lost the lock on stubborn-job (the server ended its lease); stopping the command\n\
         ringlock lock: the command did not exit within 0.2 s of SIGTERM; sending SIGKILL\n"
    );
}

#[test]
fn plain_grants_on_their_way_when_the_server_ends_a_connection_are_released() {
    // Thirty plain acquires and a frame that cannot be one, in one write: those whose core is
    // this one are granted and answered at once (the client holds them); the others are on
    // their way to their core when the connection ends, so nobody can be told of their grant,
    // and it is released.
    let server = TestServer::start(2);
    let names: Vec<String> = (0..30).map(|i| format!("on-its-way-{i}")).collect();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut f = PREFACE.to_vec();
    frame::encode_request(&mut f, 1, &frame::WireRequest::Hello { secret: SECRET.as_bytes() });
    for (i, name) in names.iter().enumerate() {
        let req =
            frame::WireRequest::Acquire { resource: name, owner: "a", ttl: None, wait: 0, session: false };
        frame::encode_request(&mut f, 10 + i as u32, &req);
    }
    f.extend_from_slice(&[1, 0, 0, 0]);
    s.write_all(&f).unwrap();
    let mut replies = Vec::new();
    s.read_to_end(&mut replies).unwrap();
    let mut granted = std::collections::HashSet::new();
    let mut rest = &replies[..];
    let mut last = None;
    while let Ok(Some(n)) = frame::check(rest) {
        let (id, reply) = frame::parse_reply(&rest[..n]).unwrap();
        if let frame::WireReply::Granted { .. } = reply {
            granted.insert(id - 10);
        }
        last = Some(format!("{reply:?}"));
        rest = &rest[n..];
    }
    assert_eq!(last.as_deref(), Some("ProtocolError { reason: \"frame shorter than its kind and id\" }"));
    assert!(granted.len() < names.len(), "some names belong to the other core");
    let b = client(&server, "b");
    let wait = opts(None, Some(5_000), false);
    for (i, name) in names.iter().enumerate() {
        if granted.contains(&(i as u32)) {
            assert_eq!(
                b.inspect(name).unwrap().map(|l| l.owner),
                Some("a".into()),
                "{name}: delivered, held"
            );
        } else {
            assert!(b.acquire(name, wait).is_ok(), "{name}: never answered, released");
        }
    }
}
