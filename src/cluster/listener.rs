//! Answering other members: the consensus port. Each connection is checked first (the secret,
//! then that it is meant for this member: its id and, for consensus, its incarnation), then
//! each call on it is handed to openraft and answered, in order.
//!
//! The incarnation check is what keeps a member that lost its data from acting as if it had
//! it: the others still address it by its old incarnation, which it refuses, so it neither
//! votes nor takes entries until a membership change records the new one.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use tokio::net::{TcpListener, TcpStream};

use super::wire::{self, Described, Hello, Reply, Rpc, Welcome};
use super::{Duplex, Member, PeerTls, TypeConfig};
use crate::auth::Secret;
use crate::log::Level;

/// How long a new connection has to say hello: a peer that connects and says nothing holds a
/// task, not forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who this member is.
pub struct Identity {
    pub id: u64,
    pub member: Member,
    pub secret: Secret,
    /// TLS on the consensus port (`None`: plaintext).
    pub tls: Option<PeerTls>,
}

/// Accepts connections until the runtime ends.
pub async fn serve(listener: TcpListener, raft: Raft<TypeConfig>, me: Arc<Identity>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, raft.clone(), me.clone()));
            }
            Err(e) => {
                crate::log!(Level::Warn, "the consensus port could not accept a connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// What to answer a hello.
async fn welcome(hello: Hello, raft: &Raft<TypeConfig>, me: &Identity) -> Welcome {
    let (secret, target) = match &hello {
        Hello::Raft { secret, target, .. } | Hello::Describe { secret, target } => (secret, *target),
    };
    if !me.secret.matches(secret) {
        return Welcome::Refused("wrong secret".into());
    }
    if target != me.id {
        return Welcome::Refused(format!("this is member {}, not member {target}", me.id));
    }
    match hello {
        Hello::Describe { .. } => Welcome::Described(Described {
            node_id: me.id,
            member: me.member.clone(),
            initialized: raft.is_initialized().await.unwrap_or(true),
        }),
        Hello::Raft { incarnation, .. } if incarnation != me.member.incarnation => Welcome::Refused(format!(
            "member {} has incarnation {:x}, not {incarnation:x}: it lost its data and must be added to the cluster again",
            me.id, me.member.incarnation
        )),
        Hello::Raft { .. } => Welcome::Ok,
    }
}

async fn connection(stream: TcpStream, raft: Raft<TypeConfig>, me: Arc<Identity>) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut stream: Box<dyn Duplex> = match &me.tls {
        None => Box::new(stream),
        Some(tls) => {
            let config = tls.borrow().server.clone();
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => {
                    crate::log!(
                        Level::Warn,
                        "a consensus connection from {peer} failed its TLS handshake: {e}"
                    );
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, wire::read_frame(&mut stream)).await {
        Ok(Ok(body)) => match wire::decode::<Hello>(&body) {
            Ok(hello) => hello,
            Err(e) => {
                crate::log!(Level::Warn, "a consensus connection from {peer} did not open with a hello: {e}");
                return;
            }
        },
        _ => return,
    };
    let welcome = welcome(hello, &raft, &me).await;
    if let Welcome::Refused(why) = &welcome {
        crate::log!(Level::Warn, "refused a consensus connection from {peer}: {why}");
    }
    let go_on = matches!(welcome, Welcome::Ok);
    if wire::write_frame(&mut stream, &welcome).await.is_err() || !go_on {
        return;
    }
    loop {
        // A connection may idle between calls (no entries to send): no timeout here; the
        // caller's own timeouts end a connection that stops answering.
        let Ok(body) = wire::read_frame(&mut stream).await else { return };
        let rpc = match wire::decode::<Rpc>(&body) {
            Ok(rpc) => rpc,
            Err(e) => {
                crate::log!(Level::Warn, "a consensus call from {peer} could not be read: {e}");
                return;
            }
        };
        let reply = match rpc {
            Rpc::Append(r) => Reply::Append(raft.append_entries(r).await),
            Rpc::Vote(r) => Reply::Vote(raft.vote(r).await),
            Rpc::Snapshot(r) => Reply::Snapshot(raft.install_snapshot(r).await),
        };
        if wire::write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}
