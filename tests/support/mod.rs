//! Test support: servers on free ports, and a raw HTTP/1.1 client.

pub mod history;
pub mod sdks;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use std::path::{Path, PathBuf};

use ringlock::config::{Config, Fsync, Storage};
use ringlock::server::Server;

/// The secret test servers use.
pub const SECRET: &str = "test-secret";

/// A server running in this process on a free loopback port; stops when dropped (and its
/// data directory, if it has one of its own, is removed).
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
    data: Option<TempDir>,
}

impl TestServer {
    /// A server with `threads` cores and [`SECRET`], durable (the default) in a data
    /// directory of its own.
    pub fn start(threads: usize) -> TestServer {
        let data = TempDir::new("server");
        let mut config = Config::local(threads, SECRET);
        config.storage = Storage::Durable { dir: data.path().to_owned(), fsync: Fsync::Always };
        let mut server = Self::with_config(config);
        server.data = Some(data);
        server
    }

    pub fn with_config(config: Config) -> TestServer {
        // In-process servers share the test's standard error: only what goes wrong.
        ringlock::log::set_level(ringlock::log::Level::Warn);
        let server = Server::start(config).expect("server starts");
        let addr = server.local_addr();
        TestServer { server: Some(server), addr, data: None }
    }

    /// A new client connection.
    pub fn connect(&self) -> Http {
        Http::connect(self.addr)
    }

    /// `host:port`, as the SDKs take it.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        self.data.take();
    }
}

/// A directory of its own for one test under `target/test-data/`, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory named after `what`.
    pub fn new(what: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("test-data")
            .join(format!("{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a test directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A response as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    /// The whole head, with the `date` header's value replaced by `<date>`.
    pub head: String,
    pub body: String,
}

impl Resp {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The fencing token of a grant.
    pub fn token(&self) -> u64 {
        self.header("x-lockserver-token").expect("token header").parse().expect("numeric token")
    }

    /// The whole response as text, date masked.
    pub fn text(&self) -> String {
        format!("{}{}", self.head, self.body)
    }
}

/// A raw HTTP/1.1 client connection.
pub struct Http {
    reader: BufReader<TcpStream>,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        Http { reader: BufReader::new(stream) }
    }

    /// Gives up a read after `limit` (10 s unless set): a member that was stopped or cut off
    /// answers nothing, and its clients move on.
    pub fn set_timeout(&mut self, limit: Duration) {
        self.reader.get_ref().set_read_timeout(Some(limit)).expect("a connected socket");
    }

    /// This end's address, as the server sees the client.
    pub fn local_addr(&self) -> SocketAddr {
        self.reader.get_ref().local_addr().expect("a connected socket")
    }

    /// A connection, or `None` if the server cannot be reached (it is down).
    pub fn try_connect(addr: SocketAddr) -> Option<Http> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Http { reader: BufReader::new(stream) })
    }

    /// Sends a request and reads its response; `None` if the connection failed first (the
    /// request's fate is then unknown).
    pub fn try_call(&mut self, raw: impl AsRef<[u8]>) -> Option<Resp> {
        self.reader.get_mut().write_all(raw.as_ref()).ok()?;
        self.try_read()
    }

    /// Sends raw bytes.
    pub fn send(&mut self, raw: impl AsRef<[u8]>) {
        self.reader.get_mut().write_all(raw.as_ref()).expect("send");
    }

    /// Reads one response.
    pub fn read(&mut self) -> Resp {
        self.try_read().expect("a response")
    }

    /// Reads the head of an answer to `HEAD` (which has no body).
    pub fn read_head_only(&mut self) -> Resp {
        self.read_response(true).expect("a response")
    }

    /// Reads one response, or `None` if the server closed the connection first.
    pub fn try_read(&mut self) -> Option<Resp> {
        self.read_response(false)
    }

    fn read_response(&mut self, head_only: bool) -> Option<Resp> {
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("date") {
                    line = format!("{name}: <date>\r\n");
                } else if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let status = head[9..12].parse().unwrap();
        if status == 100 || head_only {
            return Some(Resp { status, head, body: String::new() });
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        Some(Resp { status, head, body: String::from_utf8(body).unwrap() })
    }

    /// Whether the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }

    /// Sends a request and reads its response.
    pub fn call(&mut self, raw: impl AsRef<[u8]>) -> Resp {
        self.send(raw);
        self.read()
    }

    pub fn post(&mut self, path: &str, secret: &str, body: &str) -> Resp {
        self.call(post(path, secret, body))
    }

    pub fn get(&mut self, path: &str, secret: &str) -> Resp {
        self.call(format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-LOCKSERVER-SECRET: {secret}\r\n\r\n"))
    }

    pub fn acquire(&mut self, resource: &str, owner: &str) -> Resp {
        self.post("/acquire", SECRET, &format!(r#"{{"resource":"{resource}","owner":"{owner}"}}"#))
    }

    pub fn release(&mut self, resource: &str, owner: &str) -> Resp {
        self.post("/release", SECRET, &format!(r#"{{"resource":"{resource}","owner":"{owner}"}}"#))
    }
}

/// A `POST` request with a body of any bytes (invalid UTF-8 included).
pub fn post_bytes(path: &str, secret: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nX-LOCKSERVER-SECRET: {secret}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A `ringlock` server process, killed when dropped (and the data directory
/// [`ringlock_command`] gave it removed).
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Its start-up line.
    pub line: String,
    data: Option<TempDir>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.take();
    }
}

impl Process {
    /// Starts the server `cmd` describes and reads its address from the start-up line.
    pub fn start(cmd: std::process::Command) -> Process {
        Process::try_start(cmd).unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Process::start`], or why the server did not start (its standard error).
    pub fn try_start(mut cmd: std::process::Command) -> Result<Process, String> {
        let data = cmd
            .get_envs()
            .find(|(k, _)| *k == "RINGLOCK_DATA_DIR")
            .and_then(|(_, v)| v)
            .map(|dir| TempDir(PathBuf::from(dir)));
        let mut child = cmd.spawn().expect("spawn ringlock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.split_whitespace().skip_while(|w| *w != "on").nth(1) else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no start-up line but {line:?}; standard error:\n{err}"));
        };
        let addr = addr.parse().unwrap();
        Ok(Process { child, addr, line, data })
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Waits for it to exit; returns its status and everything it wrote to standard error.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let mut log = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (status, log)
    }
}

/// The real server binary on a free loopback port with [`SECRET`] and one core, which a test
/// can freeze with SIGSTOP: to its clients it then looks like a stalled machine or a
/// partition (its kernel still accepts connections and acknowledges bytes; nothing answers).
/// Resumed and stopped when dropped.
pub struct FreezableServer {
    process: Process,
}

impl FreezableServer {
    pub fn start() -> FreezableServer {
        let mut cmd = ringlock_command();
        cmd.args(["-b", "127.0.0.1", "-p", "0", "--threads", "1"]).env("LOCKSERVER_SECRET", SECRET);
        FreezableServer { process: Process::start(cmd) }
    }

    /// `host:port`.
    pub fn host_port(&self) -> String {
        self.process.addr.to_string()
    }

    /// Stops the server process (SIGSTOP), and returns once the kernel says it is stopped
    /// (a signal is delivered asynchronously: a busy process may answer a little longer).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.process.child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // The state is the field after the parenthesised command name.
        while std::fs::read_to_string(&stat)
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
            != Some(true)
        {
            assert!(std::time::Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets it run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child process, which has not been reaped.
        assert_eq!(unsafe { libc::kill(self.process.child.id() as libc::pid_t, signal) }, 0);
    }
}

impl Drop for FreezableServer {
    fn drop(&mut self) {
        // Then `Process` kills it, by its pid.
        self.thaw();
    }
}

/// Waits up to `limit` for `child` to exit; kills it (by its pid) and fails the test if it
/// does not.
pub fn exit_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `ringlock` binary, with none of its variables inherited from the test's environment,
/// and a data directory of its own (removed with the [`Process`] that runs it).
pub fn ringlock_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringlock"));
    clean_env(&mut cmd);
    cmd
}

/// Pipes `cmd`'s output, keeps it from inheriting ringlock's variables from the test's
/// environment (a service manager's included), and gives it a data directory of its own.
pub fn clean_env(cmd: &mut std::process::Command) {
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    for var in [
        "LOCKSERVER_BIND_IP",
        "LOCKSERVER_PORT",
        "LOCKSERVER_SECRET",
        "LOCKSERVER_SECRET_FILE",
        "RINGLOCK_THREADS",
        "RINGLOCK_LOG",
        "RINGLOCK_IN_MEMORY",
        "RINGLOCK_FSYNC",
        "RINGLOCK_LOG_FORMAT",
        "RINGLOCK_CONFIG",
        "RINGLOCK_TLS_CERT",
        "RINGLOCK_TLS_KEY",
        "RINGLOCK_TLS_CLIENT_CA",
        "RINGLOCK_TLS_PEER_CA",
        "RINGLOCK_TLS_ALLOW_PLAINTEXT",
        "RINGLOCK_CA",
        "RINGLOCK_CLIENT_CERT",
        "RINGLOCK_CLIENT_KEY",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        cmd.env_remove(var);
    }
    // A data directory of its own, removed by the `Process` that runs a server with it (the
    // server makes it; TempDir::new makes it now only to clear it).
    let data = TempDir::new("process");
    cmd.env("RINGLOCK_DATA_DIR", data.path());
    std::mem::forget(data);
}

/// The value of the `/metrics` line of the server at `addr` that starts with `name` and a
/// space (`name` may carry labels, as `ringlock_waiters{core="0"}`).
pub fn metric_at(addr: SocketAddr, name: &str) -> u64 {
    let body = Http::connect(addr).call("GET /metrics HTTP/1.1\r\n\r\n").body;
    let prefix = format!("{name} ");
    let line =
        body.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} in\n{body}"));
    line[prefix.len()..].parse().unwrap()
}

/// [`metric_at`] of a test server.
pub fn metric(server: &TestServer, name: &str) -> u64 {
    metric_at(server.addr, name)
}

/// A scratch directory for one test, empty.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringlock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `POST` request as the SDKs send it.
pub fn post(path: &str, secret: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nX-LOCKSERVER-SECRET: {secret}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The text of a plain-text response with `status` and `body`, as ringlock sends it.
pub fn plain(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ndate: <date>\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
