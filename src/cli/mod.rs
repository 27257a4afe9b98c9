//! The client subcommands of the `ringlock` binary: `ringlock lock NAME -- COMMAND...` runs a
//! command while holding a lock (like `flock(1)`, `etcdctl lock`, `consul lock`), and
//! `ringlock status NAME` shows who holds one; for operators ([`admin`], over HTTP),
//! `ringlock locks` lists the held locks and `ringlock release NAME --force` frees one, and
//! `ringlock cluster status|add|remove` shows a cluster and changes its members ([`cluster`]).
//!
//! `lock` takes a session lock (released by the server if this process dies, once its
//! session times out or its lease ends), renews its lease every third of its length while the
//! command runs, passes the command's exit status through, and releases the lock when the
//! command ends. The command finds the lock's name and fencing token in `RINGLOCK_RESOURCE`
//! and `RINGLOCK_TOKEN`, to fence its writes.
//!
//! It keeps the lease's time on its own clock, with the client's [`ringlock_client::Guard`]:
//! if the lock is lost while the command runs (the lease pushed as lost, a renewal refused,
//! the session found gone after a reconnect) or can no longer be counted on (no renewal
//! confirmed by the send time of the last one plus the lease, or nothing answered by the send
//! time of the last answered request plus the session timeout, less a safety margin: a
//! server that stopped answering or is down, a partition), the command is sent SIGTERM, then
//! SIGKILL if it has not exited `--kill-after` seconds later, since it no longer holds what it
//! thinks it holds. A connection that fails stops nothing by itself: the client reconnects
//! and resumes its session, and the command runs on while the lease and the session are
//! still guaranteed; once resumed, the renewals go on.

use std::ffi::OsString;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use ringlock_client::blocking::Client as BlockingClient;
use ringlock_client::{AcquireOptions, Client, Config, DEFAULT_ADDR, DEFAULT_SESSION_TIMEOUT, Error, Guard};
use tokio::sync::oneshot;

pub mod admin;
pub mod cluster;
mod http;

pub use admin::{LocksArgs, ReleaseArgs, locks, release};
pub use cluster::ClusterArgs;

/// Exit status when the lock cannot be had in time (`EX_TEMPFAIL`).
pub const EXIT_BUSY: u8 = 75;
/// Exit status when the server cannot be reached or refuses us (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status when the command cannot be started (as shells use).
pub const EXIT_NOT_STARTED: u8 = 127;
/// Exit status when the lock was lost while the command ran.
pub const EXIT_LOST: u8 = 70;
/// Seconds a command has to exit after SIGTERM before it gets SIGKILL, by default: the grace
/// `docker stop` gives. Until it exits it may still write, so fence its writes with
/// `RINGLOCK_TOKEN` (or lower `--kill-after`).
pub const DEFAULT_KILL_AFTER_SECS: f64 = 10.0;
/// Pause before a renewal that went unanswered (the client is reconnecting, the server could
/// not write its log) is tried again: soon, since the lease runs on meanwhile, but not in a
/// busy loop against a server that answers at once that it cannot.
const RENEW_RETRY: Duration = Duration::from_millis(100);

/// Where the server is and who we are; the secret comes from `LOCKSERVER_SECRET` only, so
/// that it never shows in a process listing.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// The server, as host:port; a cluster's members comma-separated (host:port,host:port,...).
    #[arg(long, env = "LOCKSERVER_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Owner name to lock as [default: <host>-<pid>].
    #[arg(long, env = "LOCKSERVER_OWNER")]
    pub owner: Option<String>,
    /// Speak TLS, and trust only a server whose certificate chains to this CA (PEM).
    #[arg(long, env = "RINGLOCK_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for a server that requires one (mTLS; with --ca).
    #[arg(long, env = "RINGLOCK_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "RINGLOCK_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<std::path::PathBuf>,
}

impl ClientArgs {
    fn config(&self) -> Config {
        let mut config = Config::from_env();
        config.addr = self.addr.clone();
        if let Some(owner) = &self.owner {
            config.owner = owner.clone();
        }
        // The flags (their variables included) as the client crate reads the variables; a
        // mismatch (a certificate without its key) fails every connection, saying why.
        config.tls = ringlock_client::TlsConfig::resolve(|name| {
            let path = match name {
                "RINGLOCK_CA" => &self.ca,
                "RINGLOCK_CLIENT_CERT" => &self.client_cert,
                "RINGLOCK_CLIENT_KEY" => &self.client_key,
                _ => &None,
            };
            path.as_ref().map(|p| p.display().to_string())
        });
        config
    }
}

/// `ringlock lock`.
#[derive(clap::Args, Debug)]
#[command(after_help = "The command finds the lock's name in RINGLOCK_RESOURCE and its fencing token in \
RINGLOCK_TOKEN. Exit status: the command's own; 75 if the lock could not be had in time; 69 if the \
server could not be reached; 70 if the lock was lost while the command ran (the command is sent \
SIGTERM, then SIGKILL after --kill-after seconds); 127 if the command could not be started. A command \
killed by a signal gives 128 + the signal.")]
pub struct LockArgs {
    /// The lock's name.
    pub name: String,
    /// Wait up to this many seconds for the lock (0: give up at once if it is held).
    #[arg(short, long, default_value_t = 0.0, value_parser = seconds)]
    pub wait: f64,
    /// Lease length in seconds; renewed every third of it while the command runs. If no
    /// renewal is confirmed in time, the command is sent SIGTERM a fifth of the lease (at
    /// least 0.1 s) before the lease could end.
    #[arg(long, default_value_t = 30.0, value_parser = positive_seconds)]
    pub ttl: f64,
    /// Seconds the command has to exit after SIGTERM, once the lock is lost, before SIGKILL.
    #[arg(long, default_value_t = DEFAULT_KILL_AFTER_SECS, value_parser = seconds)]
    pub kill_after: f64,
    /// Seconds the server keeps the session, and the lock, after the connection goes: the
    /// time to reconnect in. If this process dies, the lock goes at the end of it (or of the
    /// lease, if sooner).
    #[arg(long, default_value_t = DEFAULT_SESSION_TIMEOUT.as_secs_f64(), value_parser = positive_seconds)]
    pub session_timeout: f64,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command to run, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `ringlock status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The lock's name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1e9).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds >= 0")),
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds > 0")),
    }
}

fn unavailable(args: &ClientArgs, e: &Error) -> ExitCode {
    eprintln!("ringlock: cannot use the server at {}: {e}", args.addr);
    ExitCode::from(EXIT_UNAVAILABLE)
}

/// Runs `ringlock lock`.
pub fn lock(args: LockArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run_locked(args)),
        Err(e) => {
            eprintln!("ringlock lock: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_locked(args: LockArgs) -> ExitCode {
    let mut config = args.client.config();
    config.session_timeout = Duration::from_secs_f64(args.session_timeout);
    let client = match Client::connect(&config).await {
        Ok(client) => client,
        Err(e) => return unavailable(&args.client, &e),
    };
    let ttl = Duration::from_secs_f64(args.ttl);
    let wait = (args.wait > 0.0).then(|| Duration::from_secs_f64(args.wait));
    let opts = AcquireOptions { ttl: Some(ttl), wait, session: true };
    let guard = match client.lock(&args.name, opts).await {
        Ok(guard) => guard,
        Err(Error::Busy | Error::TimedOut | Error::QueueFull) => {
            let waited =
                if args.wait > 0.0 { format!(" after waiting {} s", args.wait) } else { String::new() };
            eprintln!("ringlock lock: {} is held by someone else{waited}", args.name);
            return ExitCode::from(EXIT_BUSY);
        }
        Err(e) => {
            eprintln!("ringlock lock: cannot take {}: {e}", args.name);
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let forwarder = Forwarder::start();
    let child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("RINGLOCK_RESOURCE", &args.name)
        .env("RINGLOCK_TOKEN", guard.token().to_string())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("ringlock lock: cannot run {:?}: {e}", args.command[0]);
            let _ = guard.release().await;
            return ExitCode::from(EXIT_NOT_STARTED);
        }
    };
    let pid = child.id() as libc::pid_t;
    if let Some(f) = &forwarder {
        f.started(pid);
    }
    let (exited_tx, mut exited) = oneshot::channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });

    let mut lost = guard.lost();
    let outcome = tokio::select! {
        status = &mut exited => Ok(status),
        why = lost.wait() => Err(why),
        never = renew(&guard, ttl) => match never {},
    };
    let status = match outcome {
        Ok(status) => {
            let _ = guard.release().await;
            status
        }
        Err(why) => {
            eprintln!("ringlock lock: lost the lock on {} ({why}); stopping the command", args.name);
            // SAFETY: kill(2) touches no memory of ours. The pid is our child's, which we have
            // not seen exit; it could be another process's only if the waiting thread reaped
            // it this very moment and the pid were reused at once.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let grace = Duration::from_secs_f64(args.kill_after);
            if tokio::time::timeout(grace, &mut exited).await.is_err() {
                eprintln!(
                    "ringlock lock: the command did not exit within {} s of SIGTERM; sending SIGKILL",
                    args.kill_after
                );
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = exited.await;
            }
            // Released without waiting: the server may not answer at all.
            drop(guard);
            return ExitCode::from(EXIT_LOST);
        }
    };
    drop(forwarder);
    match status {
        Ok(Ok(status)) => exit_code(status),
        Ok(Err(e)) => {
            eprintln!("ringlock lock: waiting for the command failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// Renews the lease every third of it, so that one renewal's answer has a third of the lease
/// to come back before the guard's signal would fire. A renewal refused makes the guard lost,
/// which the caller is watching; one that went unanswered (the client is reconnecting) is
/// tried again soon, and waits for the new connection. So this never returns.
async fn renew(guard: &Guard, ttl: Duration) -> std::convert::Infallible {
    let mut pause = ttl / 3;
    loop {
        tokio::time::sleep(pause).await;
        pause = match guard.extend(Some(ttl)).await {
            Ok(()) => ttl / 3,
            Err(_) => RENEW_RETRY.min(ttl / 3),
        };
    }
}

/// The command's exit status as ours: its code, or 128 + the signal that killed it.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from(128u8.wrapping_add(signal as u8)),
        _ => ExitCode::FAILURE,
    }
}

/// Passes SIGINT, SIGTERM and SIGHUP sent to us on to the command, and keeps them from
/// killing us first (which would release the lock while the command still runs).
struct Forwarder {
    /// The command's pid once it runs (0 before).
    child: Arc<AtomicI32>,
    /// A signal that came before the command ran (0: none).
    early: Arc<AtomicI32>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Forwarder {
    /// Starts catching the signals; call before starting the command.
    fn start() -> Option<Forwarder> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (mut int, mut term, mut hup) = {
            let _in_runtime = runtime.enter();
            let catch = |kind| signal(kind).ok();
            (catch(SignalKind::interrupt())?, catch(SignalKind::terminate())?, catch(SignalKind::hangup())?)
        };
        let (child, early) = (Arc::new(AtomicI32::new(0)), Arc::new(AtomicI32::new(0)));
        let (to, pending) = (child.clone(), early.clone());
        std::thread::spawn(move || {
            runtime.block_on(async move {
                loop {
                    let number = tokio::select! {
                        _ = &mut stopped => return,
                        Some(()) = int.recv() => libc::SIGINT,
                        Some(()) = term.recv() => libc::SIGTERM,
                        Some(()) = hup.recv() => libc::SIGHUP,
                    };
                    match to.load(Ordering::SeqCst) {
                        0 => pending.store(number, Ordering::SeqCst),
                        // SAFETY: sending a signal to our own child.
                        pid => unsafe {
                            libc::kill(pid, number);
                        },
                    }
                }
            })
        });
        Some(Forwarder { child, early, _stop: stop })
    }

    /// The command runs as `pid`; passes on a signal that came before it did.
    fn started(&self, pid: libc::pid_t) {
        self.child.store(pid, Ordering::SeqCst);
        let early = self.early.swap(0, Ordering::SeqCst);
        if early != 0 {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(pid, early) };
        }
    }
}

/// Runs `ringlock status`.
pub fn status(args: StatusArgs) -> ExitCode {
    let client = match BlockingClient::connect(&args.client.config()) {
        Ok(client) => client,
        Err(e) => return unavailable(&args.client, &e),
    };
    match client.inspect(&args.name) {
        Ok(None) => println!("{}: free", args.name),
        Ok(Some(info)) => {
            let expires = info
                .expires_in
                .map_or("never expires".to_owned(), |d| format!("expires in {:.3} s", d.as_secs_f64()));
            println!(
                "{}: held by {}, token {}, {expires}, {} waiting",
                args.name, info.owner, info.token, info.waiters
            );
        }
        Err(e) => {
            eprintln!("ringlock status: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    }
    ExitCode::SUCCESS
}
