//! Where a client connects and who it is, configured as the reference server's SDKs are:
//! `LOCKSERVER_ADDR`, `LOCKSERVER_OWNER`, `LOCKSERVER_SECRET`, from the environment or `.env`.

use std::fmt;

/// Where the SDKs connect when `LOCKSERVER_ADDR` is not set.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The reference server's default secret, and so the one every SDK sends when not told
/// otherwise.
pub const DEFAULT_SECRET: &str = "changeme";

/// Where and who: the server's address, this client's owner name, the shared secret.
#[derive(Clone)]
pub struct Config {
    /// `host:port`.
    pub addr: String,
    pub owner: String,
    pub secret: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config").field("addr", &self.addr).field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl Config {
    /// `LOCKSERVER_ADDR` (default `127.0.0.1:8080`), `LOCKSERVER_OWNER` (default
    /// `<host>-<pid>`, unique to this process) and `LOCKSERVER_SECRET` (default `changeme`),
    /// from the environment, or from `.env` for what the environment does not set.
    pub fn from_env() -> Config {
        let _ = dotenvy::dotenv();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Config {
            addr: var("LOCKSERVER_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned()),
            owner: var("LOCKSERVER_OWNER").unwrap_or_else(default_owner),
            secret: var("LOCKSERVER_SECRET").unwrap_or_else(|| DEFAULT_SECRET.to_owned()),
        }
    }
}

/// This host's name and this process's id: an owner name no other process shares.
fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}", if host.is_empty() { "ringlock" } else { host }, std::process::id())
}
