//! The operator's tools: forced releases over HTTP (a session holder pushed `LOST`, logged
//! with the caller's address, counted), `ringlock locks` paging through every held lock,
//! `ringlock release`, and the wait and hold histograms of `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ringlock::config::Config;
use ringlock_client::blocking::Client;
use ringlock_client::frame::{self, PREFACE, WireReply, WireRequest};
use ringlock_client::{AcquireOptions, Config as ClientConfig, Error, LostReason};

use crate::support::{Http, Process, SECRET, TestServer, post, ringlock_command};

fn force(resource: &str, token: Option<u64>) -> String {
    match token {
        Some(t) => format!(r#"{{"resource":"{resource}","force":true,"token":{t}}}"#),
        None => format!(r#"{{"resource":"{resource}","force":true}}"#),
    }
}

/// The exact answer to a forced release that ended the lease of `token`.
fn freed(token: u64) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\n\
         X-Lockserver-Token: {token}\r\n\r\nOK"
    )
}

fn conflict(body: &str) -> String {
    crate::support::plain("409 Conflict", body)
}

/// Reads one wire frame.
fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Some(n) = frame::check(buf).unwrap() {
            return buf.drain(..n).collect();
        }
        let mut chunk = [0; 512];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Polls `GET /locks/{name}` until `waiters` acquires wait for it (they have reached the
/// server), for at most 10 s.
fn until_waiting(http: &mut Http, name: &str, waiters: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let path = format!("/locks/{}", name.replace('/', "%2F"));
    loop {
        let body = http.get(&path, SECRET).body;
        let lock: serde_json::Value = serde_json::from_str(&body).unwrap();
        if lock["waiters"] == waiters {
            return;
        }
        assert!(Instant::now() < deadline, "{waiters} never waited for {name}: {body}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn reply(bytes: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    bytes(&mut out);
    out
}

#[test]
fn a_forced_release_of_a_session_lock_pushes_lost_to_its_wire_client() {
    let mut config = Config::local(1, SECRET);
    config.token_seed = Some(1000);
    let server = TestServer::with_config(config);
    let mut wire = TcpStream::connect(server.addr).unwrap();
    wire.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = PREFACE.to_vec();
    frame::encode_request(&mut out, 1, &WireRequest::Hello { secret: SECRET.as_bytes() });
    let acquire =
        WireRequest::Acquire { resource: "job/crashed", owner: "w", ttl: None, wait: 0, session: true };
    frame::encode_request(&mut out, 2, &acquire);
    wire.write_all(&out).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        read_frame(&mut wire, &mut buf),
        reply(|o| frame::encode_reply(o, 1, &WireReply::HelloOk { version: 1 }))
    );
    assert_eq!(
        read_frame(&mut wire, &mut buf),
        reply(|o| frame::encode_reply(o, 2, &WireReply::Granted { token: 1001 }))
    );

    let mut http = server.connect();
    let mut waiter = server.connect();
    waiter.send(post("/acquire", SECRET, r#"{"resource":"job/crashed","owner":"next","wait":30}"#));
    until_waiting(&mut http, "job/crashed", 1);
    assert_eq!(http.post("/release", "wrong", &force("job/crashed", None)).status, 401, "needs the secret");
    assert_eq!(
        http.post("/release", SECRET, &force("job/crashed", Some(1000))).text(),
        conflict("ERR Token mismatch")
    );
    assert_eq!(http.post("/release", SECRET, &force("job/crashed", Some(1001))).text(), freed(1001));

    let lost = WireReply::Lost { token: 1001, resource: "job/crashed" };
    assert_eq!(read_frame(&mut wire, &mut buf), reply(|o| frame::encode_reply(o, 0, &lost)), "LOST, pushed");
    let r = waiter.read();
    assert_eq!((r.status, r.token()), (200, 1002), "the first waiter holds it now");
    assert_eq!(
        http.post("/release", SECRET, &force("job/free", None)).text(),
        conflict("ERR Resource not found")
    );
    let held = http.get("/locks/job%2Fcrashed", SECRET);
    assert_eq!(
        held.body,
        r#"{"resource":"job/crashed","owner":"next","token":1002,"expires_in_ms":null,"waiters":0}"#
    );
}

fn client(server: &TestServer, owner: &str) -> Client {
    let config = ClientConfig {
        addr: server.host_port(),
        owner: owner.into(),
        secret: SECRET.into(),
        ..ClientConfig::default()
    };
    Client::connect(&config).expect("connect")
}

#[test]
fn a_guard_whose_lock_is_forced_away_is_lost() {
    let server = TestServer::start(2);
    let a = client(&server, "a");
    let mut notices = a.lost();
    let opts = AcquireOptions { ttl: Some(Duration::from_secs(60)), wait: None, session: true };
    let guard = a.lock("forced/guard", opts).unwrap();
    let mut lost = guard.lost();
    let mut http = server.connect();
    assert_eq!(http.post("/release", SECRET, &force("forced/guard", None)).text(), freed(guard.token()));
    assert_eq!(lost.wait_timeout(Duration::from_secs(10)), Some(LostReason::Expired), "the LOST push");
    // The guard hears first; the connection's notice follows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let notice = loop {
        match notices.try_recv() {
            Ok(notice) => break notice,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no lost notice: {e:?}"),
        }
    };
    assert_eq!((notice.resource.as_str(), notice.token), ("forced/guard", guard.token()));
    assert!(matches!(guard.extend(Some(Duration::from_secs(60))), Err(Error::NotFound)));
}

/// The value of the sample `name` (a whole line's name and labels) in `metrics`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[test]
fn a_forced_release_is_logged_with_the_callers_address_and_counted() {
    let mut cmd = ringlock_command();
    cmd.args(["-b", "127.0.0.1", "-p", "0", "--threads", "2"]).env("LOCKSERVER_SECRET", SECRET);
    let server = Process::start(cmd);
    let mut c = Http::connect(server.addr);
    let caller = c.local_addr();
    // Enough names that both cores own some: forced releases answered at once and later.
    let mut tokens = Vec::new();
    for i in 0..8 {
        let r = c.acquire(&format!("secret-name-{i}"), "secret-owner");
        assert_eq!(r.status, 200);
        tokens.push(r.token());
    }
    for (i, &token) in tokens.iter().enumerate() {
        assert_eq!(
            c.post("/release", SECRET, &force(&format!("secret-name-{i}"), None)).text(),
            freed(token)
        );
    }
    assert_eq!(c.post("/release", SECRET, &force("secret-name-0", None)).status, 409);
    let metrics = c.get("/metrics", SECRET).body;
    assert_eq!(sample(&metrics, "ringlock_forced_releases_total"), 8.0);
    assert_eq!(sample(&metrics, "ringlock_releases_total"), 0.0, "not a release by the holder");
    server.terminate();
    let (status, log) = server.finish();
    assert!(status.success());
    let forced: Vec<&str> =
        log.lines().filter_map(|l| l.split_once(" WARN forced release ").map(|(_, said)| said)).collect();
    let mut expected: Vec<String> = tokens
        .iter()
        .map(|t| format!("asked by {caller}: freed a lock (its lease of token {t}) peer={caller} token={t}"))
        .collect();
    expected.push(format!("asked by {caller}: nobody held the lock peer={caller}"));
    assert_eq!(forced, expected, "{log}");
    for word in ["secret-name", "secret-owner", SECRET] {
        assert!(!log.contains(word), "the log names {word:?}:\n{log}");
    }
}

fn admin(server: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringlock"))
        .args(args)
        .env("LOCKSERVER_ADDR", server.host_port())
        .env("LOCKSERVER_SECRET", SECRET)
        .env_remove("LOCKSERVER_OWNER")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn the_locks_command_lists_every_held_lock_page_by_page() {
    let server = TestServer::start(2);
    let mut c = server.connect();
    let t1 = c.acquire("job/1", "worker-1").token();
    let t2 = c.post("/acquire", SECRET, r#"{"resource":"job/2","owner":"worker 2","expire":600}"#).token();
    c.send(post("/acquire", SECRET, r#"{"resource":"job/1","owner":"w","wait":30}"#));
    let mut other = server.connect();
    let t3 = other.acquire("other", "o").token();
    until_waiting(&mut other, "job/1", 1);

    let out = admin(&server, &["locks", "--prefix", "job/"]);
    assert_eq!((out.status.code(), text(&out.stderr)), (Some(0), String::new()));
    let listed = text(&out.stdout);
    // What is left of job/2's lease depends on the time; the rest is exact.
    let lease = listed
        .lines()
        .nth(2)
        .and_then(|l| l.split("  ").map(str::trim).find(|c| c.ends_with(" s")))
        .unwrap()
        .to_owned();
    let left: f64 = lease.trim_end_matches(" s").parse().unwrap();
    assert!(left <= 600.0 && left > 0.0, "{lease}");
    let w = t1.to_string().len().max(t2.to_string().len()).max(5);
    assert_eq!(
        listed,
        format!(
            "RESOURCE  HOLDER      {:<w$}  LEASE LEFT  WAITERS\n\
             job/1     worker-1    {t1:<w$}  never       1\n\
             job/2     \"worker 2\"  {t2:<w$}  {lease:<10}  0\n",
            "TOKEN"
        )
    );
    let all = text(&admin(&server, &["locks"]).stdout);
    assert_eq!(all.lines().count(), 4);
    assert!(all.lines().last().unwrap().starts_with(&format!("other     o           {t3}")), "{all}");

    // More than a page: 1000 more, taken in one pipelined burst.
    let burst: String = (0..1000)
        .map(|i| post("/acquire", SECRET, &format!(r#"{{"resource":"page/{i:04}","owner":"p"}}"#)))
        .collect();
    other.send(burst);
    for _ in 0..1000 {
        assert_eq!(other.read().status, 200);
    }
    let out = admin(&server, &["locks"]);
    assert!(out.status.success());
    let names: Vec<String> =
        text(&out.stdout).lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_owned()).collect();
    let mut expected = vec!["job/1".to_owned(), "job/2".to_owned(), "other".to_owned()];
    expected.extend((0..1000).map(|i| format!("page/{i:04}")));
    expected.sort();
    assert_eq!(names, expected, "every lock once, in name order, over two pages");

    let refused = Command::new(env!("CARGO_BIN_EXE_ringlock"))
        .args(["locks"])
        .env("LOCKSERVER_ADDR", server.host_port())
        .env("LOCKSERVER_SECRET", "wrong")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(69));
    assert_eq!(
        text(&refused.stderr),
        format!(
            "ringlock locks: the server at {} refused the secret (set LOCKSERVER_SECRET)\n",
            server.host_port()
        )
    );
}

#[test]
fn the_release_command() {
    let server = TestServer::start(2);
    let mut c = server.connect();
    let token = c.acquire("stuck", "crashed-worker").token();
    let out = admin(&server, &["release", "stuck"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("ringlock release: stuck: not released: ")
            && text(&out.stderr).ends_with(" does not hold it (--force frees it whoever holds it)\n"),
        "{}",
        text(&out.stderr)
    );
    let out = admin(&server, &["release", "stuck", "--force", "--token", &(token + 1).to_string()]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(1),
            format!(
                "ringlock release: stuck: not released: it is held under another token than {}\n",
                token + 1
            )
        )
    );
    let out = admin(&server, &["release", "stuck", "--force"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), format!("stuck: released (the lease of token {token})\n"))
    );
    let out = admin(&server, &["release", "stuck", "--force"]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(1), "ringlock release: stuck: not released: nobody holds it\n".to_owned())
    );
    let mine = c.acquire("mine", "me").token();
    let out = admin(&server, &["release", "mine", "--owner", "me"]);
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "mine: released\n".to_owned()));
    assert_eq!(c.acquire("mine", "you").status, 200, "free again (it was {mine})");
}

#[test]
fn metrics_time_granted_waits_and_holds() {
    let server = TestServer::start(2);
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.acquire("timed", "a").status, 200);
    b.send(post("/acquire", SECRET, r#"{"resource":"timed","owner":"b","wait":30}"#));
    until_waiting(&mut a, "timed", 1);
    thread::sleep(Duration::from_millis(60));
    assert_eq!(a.release("timed", "a").status, 200);
    assert_eq!(b.read().status, 200);
    thread::sleep(Duration::from_millis(60));
    assert_eq!(a.post("/release", SECRET, &force("timed", None)).status, 200);
    assert_eq!(a.post("/acquire", SECRET, r#"{"resource":"never-free","owner":"a"}"#).status, 200);
    assert_eq!(
        a.post("/acquire", SECRET, r#"{"resource":"never-free","owner":"c","wait":0.01}"#).status,
        409
    );
    let m = a.get("/metrics", SECRET).body;
    // Granted waits only (the one that ran out is not one); holds that ended: a's, b's (forced).
    assert_eq!(sample(&m, "ringlock_wait_duration_seconds_count"), 1.0);
    assert_eq!(sample(&m, "ringlock_hold_duration_seconds_count"), 2.0);
    // Each waited or was held at least as long as the test slept meanwhile.
    assert_eq!(sample(&m, "ringlock_wait_duration_seconds_bucket{le=\"0.05\"}"), 0.0);
    assert_eq!(sample(&m, "ringlock_hold_duration_seconds_bucket{le=\"0.05\"}"), 0.0);
    assert!(sample(&m, "ringlock_wait_duration_seconds_sum") >= 0.06);
    assert!(sample(&m, "ringlock_hold_duration_seconds_sum") >= 0.12);
    assert_eq!(sample(&m, "ringlock_hold_duration_seconds_bucket{le=\"+Inf\"}"), 2.0);
}
