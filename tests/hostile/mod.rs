//! Hostile and broken clients, one test per row of the hardening list: each gets a clear
//! status (or wire error), and the server stays healthy for everyone else.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use ringlock::config::{Config, Limits};
use ringlock_client::frame::{self, PREFACE, WireReply, WireRequest};

use crate::support::{SECRET, TestServer, metric, plain, post, post_bytes};

/// A server with short timeouts and small caps, so that limits are quick to reach.
fn tight(threads: usize, limits: Limits) -> TestServer {
    TestServer::with_config(Config { limits, ..Config::local(threads, SECRET) })
}

fn short_timeouts() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    }
}

/// The server still serves a fresh client.
fn healthy(server: &TestServer) {
    let mut c = server.connect();
    assert_eq!(c.call("GET /health HTTP/1.1\r\n\r\n").status, 200, "the server is healthy");
    assert_eq!(c.acquire("healthy-probe", "p").status, 200);
    assert_eq!(c.release("healthy-probe", "p").status, 200);
}

/// Sends raw bytes and reads everything until the server closes.
fn exchange(server: &TestServer, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).replace('\0', "")
}

fn status_of(reply: &str) -> u16 {
    reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn malformed_request_lines() {
    let server = TestServer::start(1);
    for raw in [
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/1.1 extra\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\n\r\n",
        " / HTTP/1.1\r\n\r\n",
    ] {
        let reply = exchange(&server, raw.as_bytes());
        assert_eq!(status_of(&reply), 400, "{raw:?}: {reply}");
        assert!(reply.contains("connection: close\r\n"));
    }
    healthy(&server);
}

#[test]
fn bad_header_bytes() {
    let server = TestServer::start(1);
    for raw in [
        &b"GET /health HTTP/1.1\r\nX-A: \x01\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nX A: b\r\n\r\n",
        b"GET /health HTTP/1.1\r\n: b\r\n\r\n",
    ] {
        assert_eq!(status_of(&exchange(&server, raw)), 400, "{raw:?}");
    }
    healthy(&server);
}

#[test]
fn duplicate_conflicting_negative_and_huge_lengths() {
    let server = TestServer::start(1);
    let head = |cl: &str| format!("POST /acquire HTTP/1.1\r\nX-LOCKSERVER-SECRET: {SECRET}\r\n{cl}\r\n\r\n");
    for (cl, status) in [
        ("Content-Length: 10\r\nContent-Length: 10", 400),
        ("Content-Length: 10\r\nContent-Length: 11", 400),
        ("Content-Length: -1", 400),
        ("Content-Length: 1e3", 400),
        ("Content-Length: 18446744073709551616", 400),
        ("Content-Length: 999999999", 413),
    ] {
        let reply = exchange(&server, head(cl).as_bytes());
        assert_eq!(status_of(&reply), status, "{cl}: {reply}");
    }
    healthy(&server);
}

#[test]
fn truncated_bodies_time_out_or_go_away_quietly() {
    let server = tight(1, short_timeouts());
    let partial = format!(
        "POST /acquire HTTP/1.1\r\nX-LOCKSERVER-SECRET: {SECRET}\r\nContent-Length: 100\r\n\r\n{{\"resource\":"
    );
    let start = Instant::now();
    let reply = exchange(&server, partial.as_bytes());
    assert_eq!(status_of(&reply), 408, "{reply}");
    assert!(reply.ends_with("ERR Request timeout"));
    assert!(start.elapsed() >= Duration::from_millis(300));

    // A client that sends half a body and leaves.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(partial.as_bytes()).unwrap();
    drop(s);
    healthy(&server);
}

#[test]
fn invalid_utf8_json_wrong_types_and_nul_in_names() {
    let server = TestServer::start(1);
    let mut c = server.connect();
    let bodies: [&[u8]; 6] = [
        b"{\"resource\":\"\xc3\x28\",\"owner\":\"o\"}",
        b"{\"resource\":\"r\",\"owner\":\"o\"",
        b"{\"resource\":[\"r\"],\"owner\":\"o\"}",
        b"{\"resource\":\"r\",\"owner\":null}",
        b"{\"resource\":\"a\\u0000b\",\"owner\":\"o\"}",
        b"{\"resource\":\"r\",\"owner\":\"o\\u0000\"}",
    ];
    for body in bodies {
        let r = c.call(post_bytes("/acquire", SECRET, body));
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert!(r.body.starts_with("ERR Bad request: ") && !r.body.contains('\n'), "one line: {}", r.body);
    }
    // The wire protocol refuses the same names, and keeps the connection.
    let mut s = wire_connect(&server);
    let mut f = Vec::new();
    let nul = WireRequest::Acquire { resource: "a\0b", owner: "o", ttl: None, wait: 0, session: false };
    frame::encode_request(&mut f, 9, &nul);
    frame::encode_request(&mut f, 10, &WireRequest::Ping);
    s.write_all(&f).unwrap();
    assert_eq!(read_reply(&mut s), (9, "Invalid resource must not contain NUL".into()));
    assert_eq!(read_reply(&mut s), (10, "Pong".into()));
    healthy(&server);
}

fn wire_connect(server: &TestServer) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = PREFACE.to_vec();
    frame::encode_request(&mut hello, 1, &WireRequest::Hello { secret: SECRET.as_bytes() });
    s.write_all(&hello).unwrap();
    assert_eq!(read_reply(&mut s), (1, "HelloOk".into()));
    s
}

/// Reads one reply frame: its id and a short description.
fn read_reply(s: &mut TcpStream) -> (u32, String) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut rest = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut rest).unwrap();
    let whole = [&len[..], &rest[..]].concat();
    let (id, reply) = frame::parse_reply(&whole).unwrap();
    let text = match reply {
        WireReply::Invalid { reason } => format!("Invalid {reason}"),
        WireReply::ProtocolError { reason } => format!("ProtocolError {reason}"),
        WireReply::HelloOk { .. } => "HelloOk".into(),
        other => format!("{other:?}"),
    };
    (id, text)
}

#[test]
fn a_connection_cap_answers_503_and_the_rest_are_served() {
    let cap = 8;
    let server = tight(2, Limits { max_connections: cap, ..Limits::default() });
    // Each core takes half the cap; hold connections open until one is refused.
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() <= cap, "no refusal after {} connections", held.len());
        let mut c = server.connect();
        c.send("GET /health HTTP/1.1\r\n\r\n");
        match c.try_read() {
            Some(r) if r.status == 200 => held.push(c),
            Some(r) => break r,
            None => panic!("closed without an answer"),
        }
    };
    assert_eq!(refused.text(), {
        let mut expected = plain("503 Service Unavailable", "ERR Too many connections");
        expected.insert_str(expected.find("\r\n\r\n").unwrap(), "\r\nconnection: close");
        expected
    });
    for c in &mut held {
        assert_eq!(c.call("GET /health HTTP/1.1\r\n\r\n").status, 200, "open connections still served");
    }
    drop(held);
    thread::sleep(Duration::from_millis(100));
    healthy(&server);
}

#[test]
fn a_client_that_half_closes_still_gets_its_answers() {
    let server = TestServer::start(2);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let raw = format!(
        "{}{}",
        post("/acquire", SECRET, r#"{"resource":"half","owner":"h"}"#),
        post("/release", SECRET, r#"{"resource":"half","owner":"h"}"#)
    );
    s.write_all(raw.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    healthy(&server);
}

#[test]
fn clients_that_vanish_mid_request() {
    let server = TestServer::start(2);
    for cut in [5, 30, 80] {
        let raw = post("/acquire", SECRET, r#"{"resource":"vanish","owner":"v"}"#);
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(&raw.as_bytes()[..cut]).unwrap();
        // Reset rather than close: the rudest way to go.
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    thread::sleep(Duration::from_millis(50));
    let mut c = server.connect();
    assert_eq!(c.acquire("vanish", "w").status, 200, "no half-request took the lock");
    healthy(&server);
}

#[test]
fn slowloris_heads_get_408_and_idle_connections_are_closed() {
    let server = tight(1, short_timeouts());
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    for byte in b"GET /health HTTP/1.1\r\nX-Slow: " {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(status_of(&out), 408, "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "cut off at the header timeout, not when the client is done"
    );

    let mut idle = server.connect();
    assert_eq!(idle.call("GET /health HTTP/1.1\r\n\r\n").status, 200);
    let quiet = Instant::now();
    assert!(idle.is_closed(), "closed after the idle timeout");
    let waited = quiet.elapsed();
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(3), "{waited:?}");

    // A client waiting for an answer is not idle.
    let mut holder = server.connect();
    holder.acquire("not-idle", "a");
    let mut waiter = server.connect();
    waiter.send(post("/acquire", SECRET, r#"{"resource":"not-idle","owner":"b","wait":1.5}"#));
    assert_eq!(waiter.read().status, 409, "answered when its wait ran out, past the idle timeout");
}

#[test]
fn a_wire_frame_that_never_finishes_times_out() {
    let server = tight(1, short_timeouts());
    let mut s = wire_connect(&server);
    s.write_all(&[40, 0, 0, 0, frame::kind::PING]).unwrap();
    assert_eq!(read_reply(&mut s), (0, "ProtocolError request timeout".into()));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    healthy(&server);
}

#[test]
fn a_client_that_never_reads_cannot_grow_our_memory_and_loses_nothing() {
    let limits = Limits { max_unsent_bytes: 16 * 1024, max_in_flight: 64, ..Limits::default() };
    let server = tight(2, limits);
    let request = "GET /health HTTP/1.1\r\n\r\n";
    // Answers far beyond what the kernel's socket buffers hold on the loopback (a few MiB).
    let n = 300_000;
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut to_server = s.try_clone().unwrap();
    let raw = request.repeat(n);
    // Far more than the server buffers answers for: it stops reading us, so this write
    // blocks until we read.
    let writer = thread::spawn(move || to_server.write_all(raw.as_bytes()).is_ok());
    thread::sleep(Duration::from_millis(300));
    assert!(!writer.is_finished(), "the server stopped reading a client that does not read");
    healthy(&server);
    // Now read: every answer arrives, in order.
    let mut reader = std::io::BufReader::new(s);
    let (mut line, mut answers) = (String::new(), 0);
    while answers < n {
        line.clear();
        use std::io::BufRead;
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("after {answers} answers: {e}"),
        }
        // A body ("OK") has no line break, so each status line after the first follows one.
        answers += line.matches("HTTP/1.1 200 OK").count();
    }
    assert_eq!(answers, n, "nothing lost");
    assert!(writer.join().unwrap());
}

#[test]
fn protected_mode_serves_this_machine() {
    // The default secret: loopback clients are served as before (the remote branch is covered
    // by the unit tests of `proto::Session`, since tests may only use the loopback).
    let server = TestServer::with_config(Config::local(1, "changeme"));
    let mut c = server.connect();
    assert_eq!(c.post("/acquire", "changeme", r#"{"resource":"p","owner":"o"}"#).status, 200);
}

#[test]
fn a_wire_connection_holding_session_locks_is_never_idle() {
    use ringlock_client::{AcquireOptions, Config as ClientConfig, Protocol, blocking::Client};
    let server = tight(1, short_timeouts());
    // Version 1, whose session locks go with the connection (version 2 clients reconnect).
    let config = |owner: &str| ClientConfig {
        addr: server.host_port(),
        owner: owner.into(),
        secret: SECRET.into(),
        protocol: Protocol::Version1,
        ..ClientConfig::default()
    };
    let holder = Client::connect(&config("holder")).unwrap();
    holder.acquire("kept", AcquireOptions { session: true, ..AcquireOptions::default() }).unwrap();
    let bystander = Client::connect(&config("bystander")).unwrap();
    thread::sleep(Duration::from_millis(1200));
    assert!(bystander.ping().is_err(), "an idle connection with no locks was closed");
    let observer = Client::connect(&config("observer")).unwrap();
    let info = observer.inspect("kept").unwrap().expect("still held: closing would have released it");
    assert_eq!(info.owner, "holder");
    holder.ping().expect("the holder's connection is open");
}

#[test]
fn wrong_secrets_close_the_connection_after_five_and_are_counted() {
    let server = TestServer::start(2);
    let body = r#"{"resource":"guarded","owner":"mallory"}"#;
    let unauthorized = plain("401 Unauthorized", "Missing or invalid secret");
    let mut c = server.connect();
    for guess in ["wrong", "", "guess-3", "guess-4"] {
        assert_eq!(c.post("/acquire", guess, body).text(), unauthorized, "{guess:?}: refused, kept open");
    }
    assert_eq!(
        c.post("/acquire", "guess-5", body).text(),
        unauthorized.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n")
    );
    assert!(c.is_closed(), "closed after the fifth");

    // Pipelined guesses: five answers, then nothing more is read.
    let guesses: String = (0..20).map(|i| post("/acquire", &format!("guess-{i}"), body)).collect();
    let replies = exchange(&server, guesses.as_bytes());
    assert_eq!(replies.matches("HTTP/1.1 401 Unauthorized\r\n").count(), 5, "{replies}");

    // Other refusals do not count.
    let mut c = server.connect();
    for _ in 0..6 {
        assert_eq!(c.get("/no-such-path", "wrong").status, 404);
    }
    assert_eq!(c.acquire("guarded", "alice").status, 200, "the lock was never taken, and this one is open");

    // A wire client gets one try.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = PREFACE.to_vec();
    frame::encode_request(&mut hello, 1, &WireRequest::Hello { secret: b"wrong" });
    s.write_all(&hello).unwrap();
    assert_eq!(read_reply(&mut s), (1, "Unauthorized".into()));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"", "closed");

    let metrics = server.connect().call("GET /metrics HTTP/1.1\r\n\r\n").body;
    assert!(metrics.lines().any(|l| l == "ringlock_auth_failures_total 11"), "{metrics}");
}

/// Polls `check` until it holds (the server works on its own time); fails after 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn client(server: &TestServer, owner: &str) -> ringlock_client::blocking::Client {
    let config = ringlock_client::Config {
        addr: server.host_port(),
        owner: owner.into(),
        secret: SECRET.into(),
        ..ringlock_client::Config::default()
    };
    ringlock_client::blocking::Client::connect(&config).unwrap()
}

fn waiters(c: &ringlock_client::blocking::Client, resource: &str) -> u32 {
    c.inspect(resource).unwrap().map_or(0, |info| info.waiters)
}

#[test]
fn session_locks_go_at_once_when_the_server_ends_a_wire_connection() {
    use ringlock_client::AcquireOptions;
    let server = tight(2, short_timeouts());
    let holder = client(&server, "holder");
    // A frame too short to be one (a protocol error), and a frame that never finishes (the
    // header timeout).
    let endings: [(&[u8], &str); 2] = [
        (&[1, 0, 0, 0], "ProtocolError frame shorter than its kind and id"),
        (&[40, 0, 0, 0, frame::kind::PING], "ProtocolError request timeout"),
    ];
    for (i, (ending, error)) in endings.into_iter().enumerate() {
        let (kept, busy) = (format!("kept-{i}"), format!("busy-{i}"));
        holder.acquire(&busy, AcquireOptions::default()).unwrap();
        // `a` holds a session lock, and waits a day for a lock the holder has.
        let mut a = wire_connect(&server);
        let mut f = Vec::new();
        let session = WireRequest::Acquire { resource: &kept, owner: "a", ttl: None, wait: 0, session: true };
        frame::encode_request(&mut f, 2, &session);
        let day =
            WireRequest::Acquire { resource: &busy, owner: "a", ttl: None, wait: 86_400_000, session: false };
        frame::encode_request(&mut f, 3, &day);
        a.write_all(&f).unwrap();
        assert_eq!(read_reply(&mut a).0, 2);
        eventually("a waits", || waiters(&holder, &busy) == 1);
        // `b` waits for the session lock.
        let b = client(&server, "b");
        let opts = AcquireOptions { wait: Some(Duration::from_secs(10)), ..AcquireOptions::default() };
        let kept_b = kept.clone();
        let waiting = thread::spawn(move || b.acquire(&kept_b, opts).map(|lock| lock.token));
        eventually("b waits", || waiters(&holder, &kept) == 1);

        a.write_all(ending).unwrap();
        assert_eq!(read_reply(&mut a), (0, error.into()));
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"", "closed");
        // Before `b`'s ten seconds, not after `a`'s day.
        assert!(waiting.join().unwrap().is_ok(), "{error}: the session lock went with its connection");
        assert_eq!(waiters(&holder, &busy), 0, "{error}: its wait was withdrawn");
    }
    healthy(&server);
}

#[test]
fn an_http_connection_the_server_ends_withdraws_its_waits_at_once() {
    let server = tight(1, short_timeouts());
    let holder = client(&server, "holder");
    holder.acquire("held", ringlock_client::AcquireOptions::default()).unwrap();
    let wait = post("/acquire", SECRET, r#"{"resource":"held","owner":"w","wait":86400}"#);
    // A request line that cannot be framed, and a head that never finishes.
    for (tail, status) in [("GARBAGE\r\n\r\n", 400), ("GET /health HTTP/1.1\r\nX-Slow: ", 408)] {
        let reply = exchange(&server, format!("{wait}{tail}").as_bytes());
        let at = reply.get(1..).and_then(|r| r.find("HTTP/1.1 ")).map_or(reply.len(), |i| i + 1);
        let (first, second) = reply.split_at(at);
        assert_eq!(status_of(first), 409, "the wait is answered first, as one that ran out: {reply}");
        assert!(first.ends_with("\r\n\r\nERR Resource is already locked"), "{reply}");
        assert_eq!(status_of(second), status, "{reply}");
        assert!(second.contains("connection: close\r\n"), "{reply}");
        assert_eq!(waiters(&holder, "held"), 0, "withdrawn");
    }
    healthy(&server);
}

#[test]
fn pipelined_list_calls_that_are_not_read_are_not_parsed() {
    let limits = Limits { max_unsent_bytes: 64 * 1024, ..Limits::default() };
    let server = tight(1, limits);
    let (held, long) = (1000, "n".repeat(1000));
    let mut c = server.connect();
    let body = |i: usize| format!(r#"{{"resource":"{long}/{i:04}","owner":"o"}}"#);
    c.send((0..held).map(|i| post("/acquire", SECRET, &body(i))).collect::<String>());
    for _ in 0..held {
        assert_eq!(c.read().status, 200);
    }
    // A page of 300 of these locks is about 310 KiB, and 60-odd requests fit in one read of 4
    // KiB: parsing all of them at once would owe the client 20 MiB from its first read.
    let calls = 256;
    let list = format!("GET /locks?limit=300 HTTP/1.1\r\nX-LOCKSERVER-SECRET: {SECRET}\r\n\r\n");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive buffer (no autotuning), so that the kernel takes little of the answers.
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut to_server = s.try_clone().unwrap();
    let writer = thread::spawn(move || to_server.write_all(list.repeat(calls).as_bytes()).is_ok());
    // Each list call looks at every one of the 1,000 locks (too few to index), so this counts
    // the calls served. Whenever it is read, it can be no more than what the kernel's buffers
    // (at most 4 MiB sending, here), the unsent limit and one answer hold: some 15.
    let served = || metric(&server, "ringlock_list_visited_total") / held as u64;
    thread::sleep(Duration::from_millis(500));
    let so_far = served();
    assert!(so_far < 30, "{so_far} of {calls} list calls served to a client that reads nothing");
    // Now read: every answer comes, in order, though nothing more is sent.
    let mut reader = std::io::BufReader::new(s);
    for i in 0..calls {
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            use std::io::BufRead;
            reader.read_line(&mut line).unwrap_or_else(|e| panic!("answer {i}: {e}"));
            if let Some(v) = line.strip_prefix("content-length: ") {
                length = v.trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "answer {i}: {head}");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(page["locks"].as_array().unwrap().len(), 300);
        assert_eq!(page["next"].as_str(), Some(format!("{long}/0299").as_str()));
    }
    assert!(writer.join().unwrap());
    assert_eq!(served(), calls as u64);
    healthy(&server);
}

#[test]
fn a_grant_that_never_went_out_is_released_when_its_connection_goes() {
    let server = tight(2, Limits { max_unsent_bytes: 64 << 20, ..Limits::default() });
    let holder = client(&server, "holder");
    holder.acquire("held", ringlock_client::AcquireOptions::default()).unwrap();
    let reset = |s: TcpStream| {
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    };
    let free_again = |resource: &str| {
        let mut c = server.connect();
        let body = format!(r#"{{"resource":"{resource}","owner":"next","wait":10}}"#);
        c.post("/acquire", SECRET, &body).status == 200
    };

    // Queued behind an answer that waits: a grant not yet written when the client resets.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let raw = format!(
        "{}{}",
        post("/acquire", SECRET, r#"{"resource":"held","owner":"q","wait":86400}"#),
        post("/acquire", SECRET, r#"{"resource":"queued","owner":"q"}"#)
    );
    s.write_all(raw.as_bytes()).unwrap();
    eventually("both parsed", || {
        waiters(&holder, "held") == 1 && holder.inspect("queued").unwrap().is_some()
    });
    reset(s);
    assert!(free_again("queued"), "the grant nobody was told of was released");
    assert_eq!(waiters(&holder, "held"), 0);

    // Written, behind 24 MiB of answers the client never takes: not sent when it resets. (One
    // core, so that each list is answered at once: a list waits for the other cores' shares in
    // its mailbox, which the writer, stuck on a client that reads nothing, does not take.)
    let server = tight(1, Limits { max_unsent_bytes: 64 << 20, ..Limits::default() });
    let free_again = |resource: &str| {
        let mut c = server.connect();
        let body = format!(r#"{{"resource":"{resource}","owner":"next","wait":10}}"#);
        c.post("/acquire", SECRET, &body).status == 200
    };
    let long = "n".repeat(1000);
    let mut c = server.connect();
    let acquires: String = (0..1000)
        .map(|i| post("/acquire", SECRET, &format!(r#"{{"resource":"{long}/{i:04}","owner":"o"}}"#)))
        .collect();
    c.send(acquires);
    for _ in 0..1000 {
        assert_eq!(c.read().status, 200);
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive buffer (no autotuning), so that the kernel takes little of the answers.
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    let grants = metric(&server, "ringlock_grants_total");
    let list = format!("GET /locks?limit=1000 HTTP/1.1\r\nX-LOCKSERVER-SECRET: {SECRET}\r\n\r\n");
    let raw =
        format!("{}{}", list.repeat(24), post("/acquire", SECRET, r#"{"resource":"behind","owner":"q"}"#));
    s.write_all(raw.as_bytes()).unwrap();
    eventually("granted", || metric(&server, "ringlock_grants_total") == grants + 1);
    reset(s);
    assert!(free_again("behind"), "the grant that never left was released");
    healthy(&server);
}

#[test]
fn caps_on_locks_and_waiters_answer_503_and_unavailable() {
    use ringlock_client::{AcquireOptions, Error};
    let server = tight(1, Limits { max_locks: 2, max_waiters: 1, ..Limits::default() });
    let mut c = server.connect();
    assert_eq!(c.acquire("a", "o").status, 200);
    assert_eq!(c.acquire("b", "o").status, 200);
    let too_many_locks = "ERR Too many locks: the server holds its limit (--max-locks); try again later";
    assert_eq!(c.acquire("c", "o").text(), plain("503 Service Unavailable", too_many_locks));
    assert_eq!(c.acquire("a", "p").status, 409, "a held name answers as ever");
    let w = client(&server, "w");
    assert!(matches!(w.acquire("c", AcquireOptions::default()), Err(Error::Unavailable)));

    let mut waiter = server.connect();
    waiter.send(post("/acquire", SECRET, r#"{"resource":"a","owner":"w","wait":10}"#));
    eventually("one waits", || metric(&server, "ringlock_waiters{core=\"0\"}") == 1);
    let too_many_waiters =
        "ERR Too many waiters: the server queues its limit (--max-waiters); try again later";
    let r = c.post("/acquire", SECRET, r#"{"resource":"b","owner":"w","wait":10}"#);
    assert_eq!(r.text(), plain("503 Service Unavailable", too_many_waiters));
    let opts = AcquireOptions { wait: Some(Duration::from_secs(1)), ..AcquireOptions::default() };
    assert!(matches!(w.acquire("b", opts), Err(Error::Unavailable)));

    assert_eq!(c.release("a", "o").status, 200);
    assert_eq!(waiter.read().status, 200, "the waiter has it");
    for (name, value) in [
        ("ringlock_refused_locks_total", 2),
        ("ringlock_refused_waiters_total", 2),
        ("ringlock_waiters{core=\"0\"}", 0),
        ("ringlock_held_locks{core=\"0\"}", 2),
        ("ringlock_max_locks{core=\"0\"}", 2),
        ("ringlock_max_waiters{core=\"0\"}", 1),
    ] {
        assert_eq!(metric(&server, name), value, "{name}");
    }
    // Each core holds its share.
    let shared = tight(2, Limits { max_locks: 3, max_waiters: 5, ..Limits::default() });
    for core in ["0", "1"] {
        assert_eq!(metric(&shared, &format!("ringlock_max_locks{{core=\"{core}\"}}")), 2);
        assert_eq!(metric(&shared, &format!("ringlock_max_waiters{{core=\"{core}\"}}")), 3);
    }
}
