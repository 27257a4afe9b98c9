//! Where a client connects and who it is, configured as the reference server's SDKs are:
//! `LOCKSERVER_ADDR`, `LOCKSERVER_OWNER`, `LOCKSERVER_SECRET`, from the environment or `.env`;
//! how long it waits for the server before it gives up on the connection; and which version
//! of the protocol it speaks, with how long its session outlives a lost connection.

use std::fmt;
use std::time::Duration;

/// Where the SDKs connect when `LOCKSERVER_ADDR` is not set.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The reference server's default secret, and so the one every SDK sends when not told
/// otherwise.
pub const DEFAULT_SECRET: &str = "changeme";
/// How long a call waits for its answer (beyond the wait it asked the server for) before the
/// connection is given up. A healthy server answers in well under a millisecond; 5 s rides out
/// a lost packet or two (TCP's first retransmission comes after 1 s) and a busy machine, and
/// still finds a stopped or cut-off server long before a lease of the usual tens of seconds
/// ends.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server keeps the client's session, and its session locks, after the
/// connection goes, by default. Long enough to ride out what a reconnect comes back from: a
/// server restart (a second or two, recovery included), a network blip, a few reconnect
/// attempts; short enough that the session locks of a client that died go 10 s after it
/// did, well within the tens of seconds a lease usually runs.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Which version of the wire protocol a client speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Version 2: session locks belong to a session that outlives a connection for
    /// [`Config::session_timeout`]; when the connection fails, the client reconnects by
    /// itself and resumes its session, session locks included.
    #[default]
    Version2,
    /// Version 1, for servers older than version 2: session locks belong to the connection,
    /// and the client to it too: when the connection ends, for any reason, the client has
    /// ended (its calls fail with [`Error::Closed`](crate::Error::Closed), its guards are
    /// lost).
    Version1,
}

/// Where and who: the server's address, this client's owner name, the shared secret; and how
/// long to wait for answers.
#[derive(Clone)]
pub struct Config {
    /// `host:port`; for a cluster, its members' comma-separated (`a:1,b:2,c:3`): the client
    /// connects to the first that answers, and reconnects to the next one when a connection
    /// fails or a member has no leader to serve through.
    pub addr: String,
    pub owner: String,
    pub secret: String,
    /// How long connecting, and each call, may wait for the server; an acquire that waits
    /// server-side gets its wait on top. A call that runs out fails with
    /// [`Error::CallTimeout`](crate::Error::CallTimeout) and closes the connection: a server
    /// that stopped answering cannot be trusted with the requests still on it.
    pub call_timeout: Duration,
    /// How long the server keeps this client's session, and its session locks, after its
    /// connection goes (protocol version 2; at most an hour, which the server holds it to).
    /// The client reconnects within it to keep them; a session lock's guard counts it too,
    /// from the last moment the server is known to have had the session.
    pub session_timeout: Duration,
    /// The protocol version spoken ([`Protocol::Version2`] unless the server is older).
    pub protocol: Protocol,
    /// TLS (`None`: plaintext): `RINGLOCK_CA`, `RINGLOCK_CLIENT_CERT`, `RINGLOCK_CLIENT_KEY`.
    pub tls: Option<crate::tls::TlsConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("owner", &self.owner)
            .field("call_timeout", &self.call_timeout)
            .field("session_timeout", &self.session_timeout)
            .field("protocol", &self.protocol)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    /// The defaults of [`Config::from_env`], without reading the environment.
    fn default() -> Config {
        Config {
            addr: DEFAULT_ADDR.to_owned(),
            owner: default_owner(),
            secret: DEFAULT_SECRET.to_owned(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            protocol: Protocol::default(),
            tls: None,
        }
    }
}

impl Config {
    /// `LOCKSERVER_ADDR` (default `127.0.0.1:8080`; a cluster's members comma-separated),
    /// `LOCKSERVER_OWNER` (default
    /// `<host>-<pid>`, unique to this process) and `LOCKSERVER_SECRET` (default `changeme`),
    /// from the environment, or from `.env` for what the environment does not set; the call
    /// timeout is [`DEFAULT_CALL_TIMEOUT`], the session timeout [`DEFAULT_SESSION_TIMEOUT`],
    /// the protocol version 2; TLS if `RINGLOCK_CA` is set (see [`crate::TlsConfig::from_vars`]).
    pub fn from_env() -> Config {
        let _ = dotenvy::dotenv();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Config {
            addr: var("LOCKSERVER_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned()),
            owner: var("LOCKSERVER_OWNER").unwrap_or_else(default_owner),
            secret: var("LOCKSERVER_SECRET").unwrap_or_else(|| DEFAULT_SECRET.to_owned()),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            protocol: Protocol::default(),
            tls: crate::tls::TlsConfig::from_env(),
        }
    }
}

impl Config {
    /// The members [`Config::addr`] names, in its order (empty entries skipped; none: the
    /// address as it is, for the connection to fail on).
    pub fn members(&self) -> Vec<&str> {
        let members: Vec<&str> = self.addr.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
        if members.is_empty() { vec![self.addr.as_str()] } else { members }
    }
}

/// This host's name and this process's id: an owner name no other process shares.
fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}", if host.is_empty() { "ringlock" } else { host }, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::Config;

    fn members(addr: &str) -> Vec<String> {
        let config = Config { addr: addr.into(), ..Config::default() };
        config.members().into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn an_address_names_one_member_or_several_comma_separated() {
        assert_eq!(members("127.0.0.1:8080"), ["127.0.0.1:8080"]);
        assert_eq!(members("a:1,b:2,c:3"), ["a:1", "b:2", "c:3"]);
        assert_eq!(members(" a:1 , ,b:2,"), ["a:1", "b:2"]);
        assert_eq!(members(""), [""], "nothing to connect to: the connection fails on it");
    }
}
