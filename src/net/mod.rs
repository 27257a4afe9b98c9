//! Sockets: the per-core listeners and the connection loops, where bytes come in and go out.
//! A connection's protocol session ([`crate::proto`]) makes its answers; the core
//! ([`crate::runtime::Core`]) serves its lock requests in turns and leaves later answers in its
//! mailbox.

pub mod conn;
mod forward;
mod gate;
pub mod listener;
pub mod tls;

use crate::auth::Secret;
use crate::config::Limits;

/// What the connections of a server are served with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub secret: Secret,
    pub limits: Limits,
    /// TLS on the shared port (`None`: plaintext only).
    pub tls: Option<tls::TlsSettings>,
}
