//! Living under systemd: the readiness protocol (`sd_notify(3)`: `READY=1`, `STOPPING=1`,
//! `WATCHDOG=1`, `STATUS=` as datagrams to the unix socket named by `NOTIFY_SOCKET`, a path or
//! an abstract `@name`) and socket activation (`sd_listen_fds(3)`: the listening sockets
//! passed from descriptor 3 on, `LISTEN_FDS` of them, for the process `LISTEN_PID`). Both are
//! a few lines of protocol, written here rather than taken from a crate. Outside systemd (no
//! such variables) each is a no-op.
//!
//! Nothing here knows the server: the watchdog asks a closure whether every core answers.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::log::Level;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// Most sockets we take over; a unit passes one or two (IPv4 and IPv6, say).
const MAX_LISTEN_FDS: usize = 64;

/// Where readiness messages go.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, if it names one.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(name) if !name.is_empty() => Notifier::new(&name).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket `name`: a path, or `@` and an abstract name.
    pub fn new(name: &str) -> io::Result<Notifier> {
        let addr = socket_addr(name)?;
        Ok(Notifier { socket: UnixDatagram::unbound()?, addr })
    }

    /// Sends one message: lines of `VARIABLE=value`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr).map(drop)
    }
}

fn socket_addr(name: &str) -> io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name)
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={name:?} is neither a path nor an abstract @name"),
        ))
    }
}

/// The watchdog's period, from `WATCHDOG_USEC` (and `WATCHDOG_PID`, if set, naming `me`): half
/// the time systemd waits, as `sd_watchdog_enabled(3)` advises, so one late ping is not fatal.
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.parse() != Ok(me)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|&us| us > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// How many sockets systemd passed to `me`: `LISTEN_FDS` if `LISTEN_PID` is `me`, else 0.
pub fn listen_fds(pid: Option<&str>, fds: Option<&str>, me: u32) -> io::Result<usize> {
    if pid.and_then(|p| p.parse().ok()) != Some(me) {
        return Ok(0);
    }
    match fds.map(str::parse::<usize>) {
        None => Ok(0),
        Some(Ok(n)) if n <= MAX_LISTEN_FDS => Ok(n),
        Some(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "LISTEN_FDS={:?}: expected a number of sockets up to {MAX_LISTEN_FDS}",
                fds.unwrap_or("")
            ),
        )),
    }
}

/// Takes the sockets systemd passed (socket activation), and removes the variables that passed
/// them, so that no child process takes them for its own. Call it before any thread starts
/// (it changes the environment). Empty when the process was not socket-activated.
pub fn take_listen_fds() -> io::Result<Vec<OwnedFd>> {
    let var = |name| std::env::var(name).ok();
    let n = listen_fds(var("LISTEN_PID").as_deref(), var("LISTEN_FDS").as_deref(), std::process::id())?;
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the caller starts no thread before this, so nothing reads the environment
        // meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    let mut fds = Vec::with_capacity(n);
    for fd in (LISTEN_FDS_START..).take(n) {
        // SAFETY: systemd passed descriptors 3 to 3 + LISTEN_FDS - 1 to this very process
        // (LISTEN_PID), and nothing else in it owns them: they are ours to take.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::other(format!(
                "LISTEN_FDS: descriptor {fd}: {}",
                io::Error::last_os_error()
            )));
        }
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(fds)
}

/// The service's side of systemd's supervision, from readiness to stopping.
pub struct Service {
    notifier: Option<Notifier>,
    /// Stops the watchdog thread (by being dropped), and the thread.
    watchdog: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Service {
    /// Tells systemd the service is ready (`READY=1`, with `status` as its `STATUS=`), and,
    /// when it asks for a watchdog (`WATCHDOG_USEC`), starts a thread that sends `WATCHDOG=1`
    /// every half period, each time only once `alive(timeout)` has seen every core answer.
    /// A server that stops serving thus stops the pings, and systemd restarts it.
    pub fn ready(status: &str, alive: impl FnMut(Duration) -> bool + Send + 'static) -> Service {
        let notifier = match Notifier::from_env() {
            Ok(notifier) => notifier,
            Err(e) => {
                crate::log!(Level::Warn, "cannot notify systemd: {e}");
                None
            }
        };
        let Some(notifier) = notifier else { return Service { notifier: None, watchdog: None } };
        send(&notifier, &format!("READY=1\nSTATUS={status}"));
        let var = |name| std::env::var(name).ok();
        let period = watchdog_period(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        let watchdog = period.and_then(|period| {
            let pinger = Notifier { socket: notifier.socket.try_clone().ok()?, addr: notifier.addr.clone() };
            let (stop, stopped) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("ringlock-watchdog".into())
                .spawn(move || watch(&pinger, period, &stopped, alive))
                .ok()?;
            Some((stop, thread))
        });
        Service { notifier: Some(notifier), watchdog }
    }

    /// Tells systemd a shutdown has begun (`STOPPING=1`), and stops the watchdog pings.
    pub fn stopping(self) {
        if let Some((stop, thread)) = self.watchdog {
            drop(stop);
            let _ = thread.join();
        }
        if let Some(notifier) = &self.notifier {
            send(notifier, "STOPPING=1");
        }
    }
}

fn send(notifier: &Notifier, state: &str) {
    if let Err(e) = notifier.notify(state) {
        crate::log!(Level::Warn, "cannot notify systemd: {e}");
    }
}

/// The watchdog thread: every `period`, a ping if every core answered within half of it.
fn watch(
    pinger: &Notifier,
    period: Duration,
    stopped: &mpsc::Receiver<()>,
    mut alive: impl FnMut(Duration) -> bool,
) {
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
        if alive(period / 2) {
            failing = false;
            send(pinger, "WATCHDOG=1");
        } else if !failing {
            failing = true;
            crate::log!(Level::Error, "a core did not answer the watchdog's probe; not pinging systemd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_periods() {
        assert_eq!(watchdog_period(Some("30000000"), None, 7), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_period(Some("30000000"), Some("7"), 7), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_period(Some("30000000"), Some("8"), 7), None, "another process's watchdog");
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, None, 7), None);
    }

    #[test]
    fn listen_fds_for_this_process_only() {
        assert_eq!(listen_fds(Some("7"), Some("2"), 7).unwrap(), 2);
        assert_eq!(listen_fds(Some("8"), Some("2"), 7).unwrap(), 0, "passed to another process");
        assert_eq!(listen_fds(None, Some("2"), 7).unwrap(), 0);
        assert_eq!(listen_fds(Some("7"), None, 7).unwrap(), 0);
        assert!(listen_fds(Some("7"), Some("x"), 7).is_err());
        assert!(listen_fds(Some("7"), Some("1000"), 7).is_err());
    }

    #[test]
    fn the_watchdog_pings_only_once_every_core_answered() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = std::env::temp_dir().join(format!("ringlock-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let pinger = Notifier::new(path.to_str().unwrap()).unwrap();
        let probes = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = mpsc::channel();
        let counted = probes.clone();
        let thread = std::thread::spawn(move || {
            // The first two probes find a core that does not answer.
            watch(&pinger, Duration::from_millis(1), &stopped, |_| {
                counted.fetch_add(1, Ordering::SeqCst) >= 2
            })
        });
        let mut buf = [0; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(probes.load(Ordering::SeqCst) >= 3, "no ping before a probe every core answered");
        drop(stop);
        thread.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn notify_a_path_and_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("ringlock-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap()).unwrap().notify("READY=1").unwrap();
        let mut buf = [0; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("ringlock-notify-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        Notifier::new(&format!("@{name}")).unwrap().notify("STOPPING=1").unwrap();
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(Notifier::new("relative").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
