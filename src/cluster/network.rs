//! Calling other members: openraft's `RaftNetworkFactory` and `RaftNetwork` over TCP, and the
//! `Describe` call. A client connects on its first call, presents the secret and the id and
//! incarnation it expects of the target ([`Hello::Raft`]), and keeps the connection until a
//! call fails or times out; the next call connects again. Every call is bounded by openraft's
//! time-to-live for it.

use std::io;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetwork, RaftNetworkFactory};
use tokio::net::TcpStream;

use super::wire::{self, Described, Hello, Reply, Rpc, Welcome};
use super::{Duplex, Member, PeerTls, TypeConfig};
use crate::auth::Secret;

/// How long a `Describe` may take, connection included: a member that does not answer in this
/// is as good as absent for bootstrap (which asks again) and for adding it.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The first pause, in ms, before a member that could not be reached is called again (by
/// openraft's replication to it): a member back from a restart catches up within about this,
/// rather than openraft's default half second, so it is soon a candidate with the whole log.
const UNREACHABLE_RETRY_FIRST_MS: u64 = 50;
/// The longest pause, in ms, between calls to a member that stays unreachable (the pause
/// doubles from [`UNREACHABLE_RETRY_FIRST_MS`] to this): a dead member costs a connection
/// attempt about twice a second.
const UNREACHABLE_RETRY_MAX_MS: u64 = 500;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    Io(io::Error),
    /// The target refused the handshake: it is not the member expected (another id, or another
    /// incarnation: it lost its data), or the secret is wrong.
    Refused(String),
    /// It answered something that is not the answer to the call.
    Protocol(&'static str),
    Timeout(Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Io(e) => e.fmt(f),
            CallError::Refused(why) => write!(f, "refused: {why}"),
            CallError::Protocol(what) => write!(f, "a protocol error: {what}"),
            CallError::Timeout(d) => write!(f, "no answer in {} ms", d.as_millis()),
        }
    }
}

impl std::error::Error for CallError {}

impl From<io::Error> for CallError {
    fn from(e: io::Error) -> CallError {
        CallError::Io(e)
    }
}

impl From<wire::FrameError> for CallError {
    fn from(e: wire::FrameError) -> CallError {
        CallError::Io(e.into())
    }
}

/// Connects to `addr` (over TLS with `tls`) and says `hello`; the answer.
async fn handshake(
    addr: &str,
    hello: &Hello,
    tls: Option<&PeerTls>,
) -> Result<(Box<dyn Duplex>, Welcome), CallError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut stream: Box<dyn Duplex> = match tls {
        None => Box::new(stream),
        Some(tls) => {
            let config = tls.borrow().peer.clone();
            let name = crate::tls::server_name(addr).map_err(CallError::Refused)?;
            Box::new(tokio_rustls::TlsConnector::from(config).connect(name, stream).await?)
        }
    };
    wire::write_frame(&mut stream, hello).await?;
    let welcome = wire::decode(&wire::read_frame(&mut stream).await?)?;
    Ok((stream, welcome))
}

/// Asks the member at `addr`, expected to be `target`, who it is.
pub async fn describe(
    addr: &str,
    target: u64,
    secret: &Secret,
    tls: Option<&PeerTls>,
) -> Result<Described, CallError> {
    let hello = Hello::Describe { secret: secret.as_bytes().to_vec(), target };
    let asked = tokio::time::timeout(DESCRIBE_TIMEOUT, handshake(addr, &hello, tls))
        .await
        .map_err(|_| CallError::Timeout(DESCRIBE_TIMEOUT))??;
    match asked.1 {
        Welcome::Described(d) if d.node_id == target => Ok(d),
        Welcome::Described(_) => {
            Err(CallError::Refused(format!("the member at {addr} is not member {target}")))
        }
        Welcome::Refused(why) => Err(CallError::Refused(why)),
        Welcome::Ok => Err(CallError::Protocol("a welcome where a description was asked for")),
    }
}

/// Makes a [`Peer`] for each target openraft replicates to or asks for votes.
pub struct Network {
    pub me: u64,
    pub secret: Secret,
    pub tls: Option<PeerTls>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Peer {
        Peer {
            me: self.me,
            target,
            member: node.clone(),
            secret: self.secret.clone(),
            tls: self.tls.clone(),
            conn: None,
        }
    }
}

/// Calls to one member, over one connection at a time, made when first needed.
pub struct Peer {
    me: u64,
    target: u64,
    member: Member,
    secret: Secret,
    tls: Option<PeerTls>,
    conn: Option<Box<dyn Duplex>>,
}

impl Peer {
    async fn call(&mut self, rpc: Rpc, ttl: Duration) -> Result<Reply, CallError> {
        let called = tokio::time::timeout(ttl, self.exchange(&rpc)).await;
        let result = called.unwrap_or(Err(CallError::Timeout(ttl)));
        if result.is_err() {
            // Whatever state the stream is in (a reply half read, a frame half sent), it is
            // not used again.
            self.conn = None;
        }
        result
    }

    async fn exchange(&mut self, rpc: &Rpc) -> Result<Reply, CallError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let hello = Hello::Raft {
                    secret: self.secret.as_bytes().to_vec(),
                    from: self.me,
                    target: self.target,
                    incarnation: self.member.incarnation,
                };
                match handshake(&self.member.raft_addr, &hello, self.tls.as_ref()).await? {
                    (stream, Welcome::Ok) => self.conn.insert(stream),
                    (_, Welcome::Refused(why)) => return Err(CallError::Refused(why)),
                    (_, Welcome::Described(_)) => {
                        return Err(CallError::Protocol("a description where a welcome was due"));
                    }
                }
            }
        };
        wire::write_frame(conn, rpc).await?;
        Ok(wire::decode(&wire::read_frame(conn).await?)?)
    }

    fn error<E: std::error::Error>(&self, e: CallError, action: RPCTypes) -> RPCError<u64, Member, E> {
        match e {
            CallError::Timeout(timeout) => {
                RPCError::Timeout(Timeout { action, id: self.me, target: self.target, timeout })
            }
            // Openraft pauses (`backoff` below) before calling an unreachable member again.
            CallError::Io(_) | CallError::Refused(_) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Protocol(_) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<u64, Member, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.member.clone(), e))
    }
}

/// The pauses between calls to a member that stays unreachable: doubling from
/// [`UNREACHABLE_RETRY_FIRST_MS`] to [`UNREACHABLE_RETRY_MAX_MS`], then that, without end.
fn unreachable_pauses() -> impl Iterator<Item = Duration> + Send + 'static {
    std::iter::successors(Some(UNREACHABLE_RETRY_FIRST_MS), |ms| Some((ms * 2).min(UNREACHABLE_RETRY_MAX_MS)))
        .map(Duration::from_millis)
}

const MISMATCH: CallError = CallError::Protocol("an answer of another kind");

impl RaftNetwork<TypeConfig> for Peer {
    fn backoff(&self) -> Backoff {
        Backoff::new(unreachable_pauses())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self.call(Rpc::Append(rpc), option.hard_ttl()).await {
            Ok(Reply::Append(answer)) => answer.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.error(MISMATCH, RPCTypes::AppendEntries)),
            Err(e) => Err(self.error(e, RPCTypes::AppendEntries)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>>
    {
        match self.call(Rpc::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Reply::Snapshot(answer)) => answer.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.error(MISMATCH, RPCTypes::InstallSnapshot)),
            Err(e) => Err(self.error(e, RPCTypes::InstallSnapshot)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self.call(Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(answer)) => answer.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.error(MISMATCH, RPCTypes::Vote)),
            Err(e) => Err(self.error(e, RPCTypes::Vote)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn an_unreachable_member_is_called_again_after_pauses_that_double_to_half_a_second() {
        let pauses: Vec<Duration> = super::unreachable_pauses().take(7).collect();
        let want = [50, 100, 200, 400, 500, 500, 500].map(Duration::from_millis);
        assert_eq!(pauses, want);
    }
}
