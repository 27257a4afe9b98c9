//! Resumable sessions (wire protocol version 2): a session's locks outlive its connection for
//! its timeout, a client that reconnects in time resumes them (across a server restart too),
//! and one that does not finds them gone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringlock_client::frame::{self, PREFACE_SESSIONS, WireReply, WireRequest};

use crate::support::{Http, Process, SECRET, TempDir, TestServer, ringlock_command};

/// A reply as it came, owned.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Session { session: u64, timeout_ms: u64, resumed: bool },
    Granted(u64),
    Released(u64),
    Busy,
    Lost(u64, String),
    Other(String),
}

/// A raw version 2 connection.
struct V2 {
    s: TcpStream,
    buf: Vec<u8>,
    id: u32,
}

impl V2 {
    /// Connects, and opens (0) or resumes `session`.
    fn open(addr: SocketAddr, session: u64, timeout_ms: u64) -> (V2, Got) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = V2 { s, buf: Vec::new(), id: 0 };
        let mut bytes = PREFACE_SESSIONS.to_vec();
        frame::encode_request(
            &mut bytes,
            0,
            &WireRequest::HelloSession { secret: SECRET.as_bytes(), session, timeout_ms },
        );
        c.s.write_all(&bytes).unwrap();
        let got = c.read();
        (c, got)
    }

    fn call(&mut self, req: &WireRequest<'_>) -> Got {
        self.id += 1;
        let mut bytes = Vec::new();
        frame::encode_request(&mut bytes, self.id, req);
        self.s.write_all(&bytes).unwrap();
        self.read()
    }

    fn read(&mut self) -> Got {
        loop {
            if let Some(n) = frame::check(&self.buf).unwrap() {
                let (_, reply) = frame::parse_reply(&self.buf[..n]).unwrap();
                let got = match reply {
                    WireReply::SessionOk { session, timeout_ms, resumed } => {
                        Got::Session { session, timeout_ms, resumed }
                    }
                    WireReply::Granted { token } => Got::Granted(token),
                    WireReply::Released { token } => Got::Released(token),
                    WireReply::Busy => Got::Busy,
                    WireReply::Lost { token, resource } => Got::Lost(token, resource.to_owned()),
                    other => Got::Other(format!("{other:?}")),
                };
                self.buf.drain(..n);
                return got;
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("a reply");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn acquire<'a>(
    resource: &'a str,
    owner: &'a str,
    ttl: Option<u64>,
    wait: u64,
    session: bool,
) -> WireRequest<'a> {
    WireRequest::Acquire { resource, owner, ttl, wait, session }
}

fn session_of(got: &Got) -> u64 {
    match got {
        Got::Session { session, .. } => *session,
        other => panic!("not a session: {other:?}"),
    }
}

#[test]
fn a_session_outlives_its_connection_and_is_resumed_with_its_locks() {
    let server = TestServer::start(2);
    let (mut a, opened) = V2::open(server.addr, 0, 10_000);
    let id = session_of(&opened);
    assert_eq!(opened, Got::Session { session: id, timeout_ms: 10_000, resumed: false });
    let Got::Granted(token) = a.call(&acquire("kept", "alice", None, 0, true)) else { panic!() };
    drop(a);
    // The connection is gone; its session, and the lock, are not.
    let mut other = Http::connect(server.addr);
    assert_eq!(other.acquire("kept", "bob").status, 409);
    let (mut back, resumed) = V2::open(server.addr, id, 1);
    assert_eq!(
        resumed,
        Got::Session { session: id, timeout_ms: 10_000, resumed: true },
        "the timeout is the session's"
    );
    let release = WireRequest::Release { resource: "kept", owner: "alice", token: Some(token) };
    assert_eq!(back.call(&release), Got::Released(token));
    assert_eq!(other.acquire("kept", "bob").status, 200);
}

#[test]
fn a_session_left_past_its_timeout_ends_and_frees_its_locks() {
    let server = TestServer::start(2);
    let (mut a, opened) = V2::open(server.addr, 0, 300);
    let id = session_of(&opened);
    for name in ["ends-1", "ends-2", "ends-3"] {
        assert!(matches!(a.call(&acquire(name, "alice", None, 0, true)), Got::Granted(_)));
    }
    assert!(matches!(a.call(&acquire("not-the-session's", "alice", None, 0, false)), Got::Granted(_)));
    let left = Instant::now();
    drop(a);
    let mut other = Http::connect(server.addr);
    for name in ["ends-1", "ends-2", "ends-3"] {
        let r =
            other.post("/acquire", SECRET, &format!(r#"{{"resource":"{name}","owner":"bob","wait":10}}"#));
        assert_eq!(r.status, 200, "{name} is freed when the session ends");
    }
    assert!(left.elapsed() >= Duration::from_millis(300), "not before the session's timeout");
    assert_eq!(other.acquire("not-the-session's", "bob").status, 409, "only the session's locks go");
    let (_, late) = V2::open(server.addr, id, 300);
    assert!(matches!(late, Got::Session { resumed: false, session, .. } if session != id), "{late:?}");
}

#[test]
fn a_lease_that_runs_out_is_pushed_to_the_connection_the_session_has_now() {
    let server = TestServer::start(2);
    let (mut a, opened) = V2::open(server.addr, 0, 10_000);
    let id = session_of(&opened);
    let Got::Granted(token) = a.call(&acquire("pushed", "alice", Some(300), 0, true)) else { panic!() };
    drop(a);
    let (mut b, resumed) = V2::open(server.addr, id, 10_000);
    assert!(matches!(resumed, Got::Session { resumed: true, .. }));
    // Granted on the first connection: this one never saw its name.
    assert_eq!(b.read(), Got::Lost(token, String::new()));
    let Got::Granted(again) = b.call(&acquire("pushed", "alice", Some(200), 0, true)) else { panic!() };
    assert_eq!(b.read(), Got::Lost(again, "pushed".into()), "named when granted on this connection");
}

#[test]
fn a_session_is_resumed_after_a_restart_and_ends_its_timeout_after_it() {
    let data = TempDir::new("sessions");
    let start = || {
        let mut cmd = ringlock_command();
        cmd.args(["-b", "127.0.0.1", "-p", "0", "--threads", "2", "--data-dir"])
            .arg(data.path())
            .env("LOCKSERVER_SECRET", SECRET);
        Process::start(cmd)
    };
    let p = start();
    let (mut kept, opened) = V2::open(p.addr, 0, 10_000);
    let kept_id = session_of(&opened);
    let Got::Granted(token) = kept.call(&acquire("resumed", "alice", None, 0, true)) else { panic!() };
    let (mut lapsed, opened) = V2::open(p.addr, 0, 500);
    let lapsed_id = session_of(&opened);
    assert!(matches!(lapsed.call(&acquire("lapsed", "carol", None, 0, true)), Got::Granted(_)));
    p.signal(libc::SIGKILL);
    let _ = p.finish();

    let p = start();
    let mut other = Http::connect(p.addr);
    assert_eq!(other.acquire("resumed", "bob").status, 409, "the session's lock survived the crash");
    let (mut back, resumed) = V2::open(p.addr, kept_id, 10_000);
    assert_eq!(resumed, Got::Session { session: kept_id, timeout_ms: 10_000, resumed: true });
    let release = WireRequest::Release { resource: "resumed", owner: "alice", token: Some(token) };
    assert_eq!(back.call(&release), Got::Released(token));
    // Nobody came back for the other session: it ends its timeout after the restart.
    let r = other.post("/acquire", SECRET, r#"{"resource":"lapsed","owner":"bob","wait":10}"#);
    assert_eq!(r.status, 200);
    let (_, late) = V2::open(p.addr, lapsed_id, 500);
    assert!(
        matches!(late, Got::Session { resumed: false, session, .. } if session > kept_id.max(lapsed_id)),
        "{late:?}: ids are never handed out twice"
    );
}
