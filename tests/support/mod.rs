//! Test support: servers on free ports, and a raw HTTP/1.1 client.

pub mod sdks;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringlock::config::Config;
use ringlock::server::Server;

/// The secret test servers use.
pub const SECRET: &str = "test-secret";

/// A server running in this process on a free loopback port; stops when dropped.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl TestServer {
    /// A server with `threads` cores and [`SECRET`].
    pub fn start(threads: usize) -> TestServer {
        Self::with_config(Config::local(threads, SECRET))
    }

    pub fn with_config(config: Config) -> TestServer {
        let server = Server::start(config).expect("server starts");
        let addr = server.local_addr();
        TestServer { server: Some(server), addr }
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

/// A `ringlock` server process, killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Its start-up line.
    pub line: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts the server `cmd` describes and reads its address from the start-up line.
    pub fn start(mut cmd: std::process::Command) -> Process {
        let mut child = cmd.spawn().expect("spawn ringlock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("start-up line {line:?}"))
            .parse()
            .unwrap();
        Process { child, addr, line }
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

/// The `ringlock` binary, with none of its variables inherited from the test's environment.
pub fn ringlock_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringlock"));
    clean_env(&mut cmd);
    cmd
}

/// Pipes `cmd`'s output, and keeps it from inheriting ringlock's variables from the test's
/// environment (a service manager's included).
pub fn clean_env(cmd: &mut std::process::Command) {
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    for var in [
        "LOCKSERVER_BIND_IP",
        "LOCKSERVER_PORT",
        "LOCKSERVER_SECRET",
        "LOCKSERVER_SECRET_FILE",
        "RINGLOCK_THREADS",
        "RINGLOCK_LOG",
        "RINGLOCK_LOG_FORMAT",
        "RINGLOCK_CONFIG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        cmd.env_remove(var);
    }
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
