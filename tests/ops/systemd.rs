//! Under systemd: `READY=1`, `WATCHDOG=1` and `STOPPING=1` on the `NOTIFY_SOCKET` (a path, or
//! an abstract `@name`), socket activation (`LISTEN_FDS`, `LISTEN_PID`), and the unit files
//! that `systemd-analyze verify` finds clean.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Http, Process, SECRET, clean_env, scratch_dir, sdks};

use super::ringlock;

/// The messages waiting on `socket`, without blocking.
fn drain(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0; 4096];
    let mut messages = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    messages
}

/// The next message, waiting at most 10 s (a bound on a hung server, not a timing assertion).
fn next(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn ready_watchdog_and_stopping_on_the_notify_socket() {
    let dir = scratch_dir("notify");
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = ringlock();
    // A watchdog of 200 ms: a ping every 100 ms, each after every core answered a probe.
    cmd.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "200000").env("LOCKSERVER_SECRET", SECRET);
    let server = Process::start(cmd);
    assert_eq!(next(&socket), format!("READY=1\nSTATUS=serving on {}", server.addr));
    assert_eq!(
        Http::connect(server.addr).call("GET /health HTTP/1.1\r\n\r\n").status,
        200,
        "ready means serving"
    );
    assert_eq!(next(&socket), "WATCHDOG=1");
    assert_eq!(next(&socket), "WATCHDOG=1");
    server.terminate();
    let (status, _) = server.finish();
    assert!(status.success());
    let mut rest = drain(&socket);
    assert_eq!(rest.pop().as_deref(), Some("STOPPING=1"), "the last word");
    assert!(rest.iter().all(|m| m == "WATCHDOG=1"), "{rest:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_abstract_notify_socket_and_another_process_watchdog() {
    let name = format!("ringlock-test-notify-{}", std::process::id());
    let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let mut cmd = ringlock();
    // WATCHDOG_PID names another process: that watchdog is not ours to ping.
    cmd.env("NOTIFY_SOCKET", format!("@{name}")).env("WATCHDOG_USEC", "20000").env("WATCHDOG_PID", "1");
    let server = Process::start(cmd);
    assert_eq!(next(&socket), format!("READY=1\nSTATUS=serving on {}", server.addr));
    assert_eq!(Http::connect(server.addr).call("GET /health HTTP/1.1\r\n\r\n").status, 200);
    server.terminate();
    let (status, _) = server.finish();
    assert!(status.success());
    assert_eq!(drain(&socket), ["STOPPING=1"]);
}

/// `ringlock` through `sh`, so that `LISTEN_PID` can be its own pid (`exec` keeps it), with
/// `fd` as descriptor 3, as systemd passes a socket.
fn activated(fd: i32, listen_pid: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    clean_env(&mut cmd);
    cmd.arg("-c")
        .arg(format!("LISTEN_PID={listen_pid} LISTEN_FDS=1 exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ringlock"))
        .args(args);
    // SAFETY: dup2 and fcntl are async-signal-safe; between fork and exec they only put the
    // socket at 3, without close-on-exec (which dup2 clears, and a socket already at 3 keeps).
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if ok < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        });
    }
    cmd
}

#[test]
fn socket_activation_serves_the_passed_socket_on_every_core() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // --port 9 and a wrong bind would fail: the passed socket is served instead.
    let mut cmd = activated(listener.as_raw_fd(), "$$", &["-b", "127.0.0.2", "-p", "9", "--threads", "2"]);
    cmd.env("LOCKSERVER_SECRET", SECRET);
    let server = Process::start(cmd);
    assert_eq!(server.addr, addr, "{}", server.line);
    // Many connections, so that both cores take some (they take turns on the one socket).
    let mut clients: Vec<Http> = (0..8).map(|_| Http::connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.acquire(&format!("activated-{i}"), "o").status, 200);
    }
    assert_eq!(clients[0].acquire("activated-3", "p").status, 409, "one lock table");
    let metrics = clients[0].call("GET /metrics HTTP/1.1\r\n\r\n").body;
    let open: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("ringlock_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!((open.len(), open.iter().sum::<u64>()), (2, 8), "{metrics}");
    drop(clients);
    server.terminate();
    let (status, log) = server.finish();
    assert!(status.success(), "{status:?}");
    assert!(
        log.contains(" INFO serving the 1 socket(s) systemd passed; --bind and --port do not apply"),
        "{log}"
    );
    // The socket belongs to whoever passed it (systemd): it outlives the server, and
    // connections queue for the next one.
    assert!(TcpStream::connect(addr).is_ok());
}

#[test]
fn socket_activation_refuses_what_is_not_a_listening_tcp_socket() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = activated(udp.as_raw_fd(), "$$", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ringlock: the socket passed as descriptor 3 is not a listening TCP socket\n"
    );

    // Passed to another process (LISTEN_PID is not ours): ignored, and ringlock binds its own.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Process::start(activated(
        listener.as_raw_fd(),
        "1",
        &["-b", "127.0.0.1", "-p", "0", "--threads", "1"],
    ));
    assert_ne!(server.addr, listener.local_addr().unwrap());
    assert_eq!(Http::connect(server.addr).call("GET /health HTTP/1.1\r\n\r\n").status, 200);
}

/// The unit files `systemd-analyze verify` finds clean: the service with its `ExecStart`
/// pointed at the binary under test (verify checks that the program exists), and the socket
/// as it is.
#[test]
fn the_units_verify_clean_and_are_hardened() {
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    let service = std::fs::read_to_string(packaging.join("ringlock.service")).unwrap();
    let socket = std::fs::read_to_string(packaging.join("ringlock.socket")).unwrap();
    let settings: Vec<(&str, &str)> = service.lines().filter_map(|l| l.split_once('=')).collect();
    let setting = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    for (key, value) in [
        ("Type", "notify"),
        ("ExecStart", "/usr/bin/ringlock --config /etc/ringlock/ringlock.toml"),
        ("User", "ringlock"),
        ("StateDirectory", "ringlock"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("LoadCredential", "secret:/etc/ringlock/secret"),
        ("Environment", "LOCKSERVER_SECRET_FILE=%d/secret"),
        ("WatchdogSec", "30s"),
    ] {
        assert_eq!(setting(key), Some(value), "{key}");
    }
    let nofile: usize = setting("LimitNOFILE").unwrap().parse().unwrap();
    assert!(nofile > ringlock::config::Limits::DEFAULT.max_connections, "LimitNOFILE fits --max-connections");
    assert!(socket.contains("\nListenStream=8080\n") && socket.contains("\nService=ringlock.service\n"));

    let Some(analyze) = sdks::system_tool("systemd-analyze", "systemd") else { return };
    let dir = scratch_dir("units");
    std::fs::write(
        dir.join("ringlock.service"),
        service.replace(
            "ExecStart=/usr/bin/ringlock ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_ringlock")),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("ringlock.socket"), &socket).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(dir.join("ringlock.service"))
        .arg(dir.join("ringlock.socket"))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert_eq!(said, "", "no warning either");
    std::fs::remove_dir_all(dir).unwrap();
}
