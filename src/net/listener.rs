//! Listening sockets: one per core on the same address (`SO_REUSEPORT`), so the kernel spreads
//! new connections over the cores, or the sockets a service manager passed (socket activation);
//! and each core's accept loop.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::rc::Rc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::log::Level;
use crate::runtime::{Core, panic};

use super::{Settings, conn};

/// Connections the kernel may queue per listener before we accept them.
const BACKLOG: i32 = 4096;
/// Pause after a failed accept (out of descriptors, say) before trying again.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);
/// How long a start waits for its address to come free. A server that was just killed holds
/// its listening sockets a little longer than its process lives (its io_uring's pending
/// accepts are cancelled by the kernel after the exit, measured at tens of milliseconds), so
/// a supervisor's immediate restart would otherwise fail; a server that is really running
/// there keeps it for good, and is reported after this wait.
const BIND_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Between tries while waiting for the address.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Binds `n` listeners to `addr` (port 0: one free port for all of them).
///
/// `SO_REUSEPORT` would also let a second server started on the same port by the same user
/// quietly share its connections, splitting the lock table in two and granting every lock
/// twice. So the address is first probed with a plain bind (with `SO_REUSEADDR`, which still
/// fails on a live listener), and an address already served is refused.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        let deadline = std::time::Instant::now() + BIND_WAIT;
        loop {
            let probe = socket(addr)?;
            match probe.bind(&addr.into()) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                    std::thread::sleep(BIND_RETRY);
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {addr}: {e} (is another server running there?)"),
                    ));
                }
            }
        }
    }
    let mut listeners = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let s = socket(addr)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        s.listen(BACKLOG)?;
        let l: TcpListener = s.into();
        addr = l.local_addr()?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Takes over listening sockets a service manager made (systemd's socket activation), for `n`
/// cores: every core gets its own descriptor of every socket (a `dup`), and accepts on all of
/// them. A passed socket is one accept queue that the cores take turns on, where `SO_REUSEPORT`
/// sockets of our own would give each core its own; but it is the manager's socket, bound
/// before we ran and kept across our restarts, and it need not allow `SO_REUSEPORT`. Each must
/// be a listening TCP socket.
pub fn adopt(sockets: Vec<OwnedFd>, n: usize) -> io::Result<Vec<Vec<TcpListener>>> {
    let mut listeners = Vec::with_capacity(sockets.len());
    for fd in sockets {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // Through `TcpListener` (socket2 0.4 takes no `OwnedFd`); its kind is checked next.
        let s = Socket::from(TcpListener::from(fd));
        let tcp = matches!(s.r#type(), Ok(Type::STREAM))
            && s.local_addr().ok().and_then(|a| a.as_socket()).is_some()
            && s.is_listener().unwrap_or(false);
        if !tcp {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the socket passed as descriptor {raw} is not a listening TCP socket"),
            ));
        }
        listeners.push(TcpListener::from(s));
    }
    if listeners.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no socket was passed"));
    }
    (0..n).map(|_| listeners.iter().map(TcpListener::try_clone).collect()).collect()
}

fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    Ok(s)
}

/// Accepts connections until the core stops, serving each on its own task; past this core's
/// share of the connection limit, new ones are refused.
pub async fn accept_loop(core: Rc<Core>, settings: Rc<Settings>, listener: tokio_uring::net::TcpListener) {
    let per_core = settings.limits.max_connections.div_ceil(core.cores()).max(1);
    while !core.stopping() {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = core.stopped() => return,
        };
        match accepted {
            Ok((stream, _)) if core.conn_count() >= per_core => {
                crate::log!(
                    Level::Warn,
                    "refused a connection: {per_core} open on this core (--max-connections)"
                );
                panic::spawn_vital(core.id(), "a refused connection", conn::refuse(stream));
            }
            Ok((stream, peer)) => {
                let serve = conn::serve(core.clone(), settings.clone(), stream, peer);
                panic::spawn_vital(core.id(), "a connection", serve);
            }
            // Out of descriptors or memory, or a connection reset before we took it: keep
            // serving the connections we have and try again.
            Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
        }
    }
}
