//! The Rust client's reconnects (protocol version 2), against the real server binary killed
//! with SIGKILL and started again on the same port: sessions resumed with their locks, guards
//! held throughout, `ringlock lock` keeping its command (and its lock) across the restart; a
//! session the server no longer has, whose guards are lost at once; calls in flight and calls
//! made while the server is down; a server that stays down, which stops `ringlock lock`'s
//! command before the lease or the session could end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ringlock_client::blocking::Client;
use ringlock_client::{AcquireOptions, Config as ClientConfig, Error, Lost, LostReason};

use crate::support::{Http, Process, SECRET, TempDir, exit_within, ringlock_command};

/// The server binary on a port of its own, which a test can crash and start again there (so
/// that its clients find it), on the same data directory.
struct Restartable {
    data: TempDir,
    port: u16,
    extra: &'static [&'static str],
    process: Option<Process>,
}

impl Restartable {
    /// Starts it, durable, with `extra` flags.
    fn start(extra: &'static [&'static str]) -> Restartable {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Restartable { data: TempDir::new("resume"), port, extra, process: None };
        server.start_again();
        server
    }

    fn start_again(&mut self) {
        let mut cmd = ringlock_command();
        cmd.args(["-b", "127.0.0.1", "-p", &self.port.to_string(), "--threads", "2", "--data-dir"])
            .arg(self.data.path())
            .args(self.extra)
            .env("LOCKSERVER_SECRET", SECRET);
        self.process = Some(Process::start(cmd));
    }

    /// Kills it as a crash would, and waits until it is gone.
    fn crash(&mut self) {
        let p = self.process.take().expect("running");
        p.signal(libc::SIGKILL);
        let _ = p.finish();
    }

    fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn http(&self) -> Http {
        Http::connect(self.host_port().parse().unwrap())
    }
}

fn config(server: &Restartable, owner: &str) -> ClientConfig {
    ClientConfig {
        addr: server.host_port(),
        owner: owner.into(),
        secret: SECRET.into(),
        ..ClientConfig::default()
    }
}

fn client(server: &Restartable, owner: &str) -> Client {
    Client::connect(&config(server, owner)).expect("connect")
}

fn opts(ttl_ms: Option<u64>, session: bool) -> AcquireOptions {
    AcquireOptions { ttl: ttl_ms.map(Duration::from_millis), wait: None, session }
}

/// Calls `f` until it is not refused for want of a connection (the client is reconnecting
/// to a server that just came back), at most 40 times.
fn once_reconnected<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    for _ in 0..40 {
        match f() {
            Err(Error::NotConnected { .. } | Error::Interrupted(_)) => {
                thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
    f()
}

/// The next lost-lock notice, within 10 s.
fn next_lost(rx: &mut tokio::sync::broadcast::Receiver<Lost>) -> Lost {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(lost) => return lost,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("no lost notice: {e:?}"),
        }
    }
}

fn ringlock_lock(server: &Restartable, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlock"));
    cmd.arg("lock")
        .args(args)
        .env("LOCKSERVER_ADDR", server.host_port())
        .env("LOCKSERVER_SECRET", SECRET)
        .env_remove("LOCKSERVER_OWNER");
    cmd
}

#[test]
fn the_lock_command_keeps_its_lock_and_its_command_across_a_server_restart() {
    let mut server = Restartable::start(&[]);
    // The command runs until the test lets it finish, so that the restart surely falls
    // while it runs.
    let script = r#"echo "started $RINGLOCK_TOKEN"; read -r line; echo "done $line""#;
    let mut lock = ringlock_lock(
        &server,
        &["--ttl", "10", "--owner", "restarted", "restart-job", "--", "sh", "-c", script],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(lock.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let token: u64 = line.strip_prefix("started ").and_then(|t| t.trim().parse().ok()).expect("the token");
    let held = client(&server, "observer").inspect("restart-job").unwrap().expect("held while it runs");
    assert_eq!((held.owner.as_str(), held.token), ("restarted", token));
    assert_eq!(server.http().acquire("restart-job", "intruder").status, 409);

    server.crash();
    server.start_again();

    let observer = client(&server, "observer");
    let after = observer.inspect("restart-job").unwrap().expect("held across the restart");
    assert_eq!((after.owner.as_str(), after.token), ("restarted", token), "the same grant, never let go");
    assert_eq!(server.http().acquire("restart-job", "intruder").status, 409, "busy while the command runs");
    // Renewals go on once the session is resumed: the lease is seen to grow again.
    let left = || observer.inspect("restart-job").unwrap().expect("held").expires_in.unwrap();
    let mut last = left();
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        let now_left = left();
        if now_left > last + Duration::from_millis(200) {
            break;
        }
        assert!(Instant::now() < give_up, "no renewal after the restart");
        last = now_left;
        thread::sleep(Duration::from_millis(20));
    }

    lock.stdin.take().unwrap().write_all(b"after the restart\n").unwrap();
    let status = exit_within(&mut lock, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "the command's own status");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done after the restart\n");
    let mut stderr = String::new();
    lock.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(stderr, "", "nothing went wrong");
    assert_eq!(observer.inspect("restart-job").unwrap(), None, "released at the end");
    assert_eq!(server.http().acquire("restart-job", "intruder").status, 200);
}

#[test]
fn a_client_resumes_its_session_after_a_restart_and_its_guards_stay_held() {
    let mut server = Restartable::start(&[]);
    let c = client(&server, "resumer");
    let mut lost = c.lost();
    let leased = c.lock("resumed-leased", opts(Some(20_000), true)).unwrap();
    let forever = c.lock("resumed-forever", opts(None, true)).unwrap();
    let plain = c.lock("resumed-plain", opts(Some(20_000), false)).unwrap();
    let signals = [leased.lost(), forever.lost(), plain.lost()];

    server.crash();
    server.start_again();

    once_reconnected(|| c.ping()).expect("reconnected");
    for (signal, name) in signals.iter().zip(["leased", "forever", "plain"]) {
        assert_eq!(signal.check(), None, "{name}: a dropped connection loses nothing by itself");
    }
    leased.extend(Some(Duration::from_secs(20))).expect("renewed on the new connection");
    plain.extend(Some(Duration::from_secs(20))).expect("renewed on the new connection");
    let observer = client(&server, "observer");
    for (name, guard) in
        [("resumed-leased", &leased), ("resumed-forever", &forever), ("resumed-plain", &plain)]
    {
        let info = observer.inspect(name).unwrap().expect("held across the restart");
        assert_eq!((info.owner.as_str(), info.token), ("resumer", guard.token()), "{name}");
        assert_eq!(server.http().acquire(name, "intruder").status, 409, "{name}");
    }
    assert!(lost.try_recv().is_err(), "no lock was lost");
    drop((leased, forever, plain));
    for name in ["resumed-leased", "resumed-forever", "resumed-plain"] {
        assert_eq!(observer.inspect(name).unwrap(), None, "{name}: released by its guard");
    }
}

#[test]
fn a_session_the_server_no_longer_has_loses_its_guards_at_once() {
    // In memory: the restart forgets every session, and every lock.
    let mut server = Restartable::start(&["--in-memory"]);
    let c = client(&server, "forgotten");
    let mut lost = c.lost();
    let session = c.lock("gone-session", opts(Some(30_000), true)).unwrap();
    let plain = c.lock("gone-plain", opts(Some(30_000), false)).unwrap();
    let mut session_lost = session.lost();

    server.crash();
    server.start_again();

    assert_eq!(session_lost.wait_timeout(Duration::from_secs(10)), Some(LostReason::SessionExpired));
    assert_eq!(
        LostReason::SessionExpired.to_string(),
        "session expired: the server no longer had the session when the client reconnected"
    );
    assert_eq!(next_lost(&mut lost), Lost { resource: "gone-session".into(), token: session.token() });
    // A plain lock does not belong to the session: its guard learns of its loss when it renews.
    assert_eq!(plain.lost().check(), None);
    assert!(matches!(plain.extend(Some(Duration::from_secs(30))), Err(Error::NotFound)));
    assert_eq!(plain.lost().check(), Some(LostReason::Refused("nobody holds the lock".into())));
    // The client goes on in its new session.
    let again = c.lock("gone-session", opts(Some(30_000), true)).expect("free, and taken again");
    assert_eq!(again.lost().check(), None);
    assert_eq!(c.inspect("gone-session").unwrap().map(|i| i.token), Some(again.token()));
}

#[test]
fn calls_in_flight_fail_with_their_outcome_unknown_and_calls_made_while_down_are_not_sent() {
    let mut server = Restartable::start(&[]);
    let holder = client(&server, "holder");
    holder.acquire("in-flight", opts(None, false)).unwrap();
    let call_timeout = Duration::from_millis(500);
    let c = Client::connect(&ClientConfig { call_timeout, ..config(&server, "caller") }).unwrap();
    let waiting = thread::scope(|s| {
        let waiting = s.spawn(|| {
            c.acquire(
                "in-flight",
                AcquireOptions { wait: Some(Duration::from_secs(10)), ..opts(None, false) },
            )
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder.inspect("in-flight").unwrap().unwrap().waiters < 1 {
            assert!(Instant::now() < deadline, "the acquire never queued");
            thread::sleep(Duration::from_millis(5));
        }
        server.crash();
        waiting.join().unwrap()
    });
    let interrupted = waiting.unwrap_err();
    assert!(matches!(interrupted, Error::Interrupted(_)), "{interrupted:?}");
    assert!(
        interrupted.to_string().ends_with("); whether the request was carried out is unknown"),
        "{interrupted}"
    );

    let not_sent = c.ping().unwrap_err();
    assert!(
        matches!(&not_sent, Error::NotConnected { waited, .. } if *waited == call_timeout),
        "{not_sent:?}"
    );
    assert_eq!(
        not_sent.to_string(),
        "not sent: no connection to the server took the request within 0.500 s (reconnecting; the last \
         attempt: connection failed: Connection refused (os error 111))"
    );

    server.start_again();
    once_reconnected(|| c.ping()).expect("reconnected");
    assert_eq!(c.inspect("in-flight").unwrap().map(|i| i.owner), Some("holder".into()));
}

#[test]
fn dropping_a_client_releases_its_session_locks() {
    let server = Restartable::start(&[]);
    let a = client(&server, "a");
    let b = client(&server, "b");
    a.acquire("v2-session", opts(None, true)).unwrap();
    a.acquire("v2-plain", opts(None, false)).unwrap();
    drop(a);
    let got =
        b.acquire("v2-session", AcquireOptions { wait: Some(Duration::from_secs(5)), ..opts(None, false) });
    assert!(got.is_ok(), "released as the client closed, not kept for the session's timeout: {got:?}");
    assert!(matches!(b.acquire("v2-plain", opts(None, false)), Err(Error::Busy)), "only session locks go");
}

#[test]
fn an_idle_client_keeps_its_session_guaranteed_by_its_heartbeats() {
    let server = Restartable::start(&[]);
    let session_timeout = Duration::from_secs(2);
    let c = Client::connect(&ClientConfig { session_timeout, ..config(&server, "idle") }).unwrap();
    let guard = c.lock("idle-session", opts(None, true)).unwrap();
    let lost = guard.lost();
    let first = lost.deadline().expect("a session lock is guaranteed as long as its session");
    // Nothing is asked of the connection for twice the session's timeout: only heartbeats.
    thread::sleep(2 * session_timeout);
    assert_eq!(lost.check(), None);
    assert!(lost.deadline().unwrap() > first, "the heartbeats' answers moved the session's guarantee");
}

#[test]
fn the_lock_command_stops_its_command_before_a_server_that_stays_down_could_end_the_lease() {
    let mut server = Restartable::start(&[]);
    let mut lock =
        ringlock_lock(&server, &["--ttl", "3", "down-job", "--", "sh", "-c", "echo $$; exec sleep 60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let mut pid = String::new();
    BufReader::new(lock.stdout.take().unwrap()).read_line(&mut pid).unwrap();
    let pid: libc::pid_t = pid.trim().parse().expect("the command's pid");

    // Kill the server right after it has renewed the lease, and note when that lease ends at
    // the server at the earliest (were it to come back): when it was asked, plus what was left.
    let observer = client(&server, "observer");
    let left = || observer.inspect("down-job").unwrap().expect("held while it runs").expires_in.unwrap();
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
    server.crash();

    let status = exit_within(&mut lock, Duration::from_secs(10));
    let stopped = Instant::now();
    assert_eq!(status.code(), Some(70), "lost: 70");
    assert!(
        stopped <= lease_end,
        "the command ran {:?} past the moment the lease could end",
        stopped - lease_end
    );
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "the command was stopped and reaped");
    let mut stderr = String::new();
    lock.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(
        stderr,
        "ringlock lock: lost the lock on down-job (no renewal was confirmed in time: by this process's \
         clock, the lease is within its safety margin of its end); stopping the command\n"
    );
}

#[test]
fn the_lock_command_stops_its_command_before_its_session_could_end() {
    let mut server = Restartable::start(&[]);
    // A lease far longer than the session's timeout: the session is what runs out.
    let args =
        ["--ttl", "60", "--session-timeout", "3", "session-job", "--", "sh", "-c", "echo $$; exec sleep 60"];
    let mut lock =
        ringlock_lock(&server, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut pid = String::new();
    BufReader::new(lock.stdout.take().unwrap()).read_line(&mut pid).unwrap();
    let pid: libc::pid_t = pid.trim().parse().expect("the command's pid");
    assert!(client(&server, "observer").inspect("session-job").unwrap().is_some());

    // The server last heard from the command's client before it died: the session cannot have
    // ended there (were it to come back) before 3 s after that.
    let crashed = Instant::now();
    server.crash();

    let status = exit_within(&mut lock, Duration::from_secs(10));
    let stopped = Instant::now();
    assert_eq!(status.code(), Some(70), "lost: 70");
    let session_end = crashed + Duration::from_secs(3);
    assert!(
        stopped <= session_end,
        "the command ran {:?} past the moment the session could end",
        stopped - session_end
    );
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "the command was stopped and reaped");
    let mut stderr = String::new();
    lock.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(
        stderr,
        "ringlock lock: lost the lock on session-job (the server has not answered in time: by this \
         process's clock, the session is within its safety margin of its end); stopping the command\n"
    );
}
