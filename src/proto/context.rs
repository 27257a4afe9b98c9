//! What a protocol session reads of its server besides lock work, where it notes the grants
//! it has written, and which client it serves.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;

use crate::auth::Secret;
use crate::config::Limits;
use crate::metrics::Histogram;

use super::unsent::UnsentGrants;

/// The settings, the time and the histogram a session answers with.
pub struct Context<'a> {
    pub limits: &'a Limits,
    pub secret: &'a Secret,
    /// The `Date` header's value now.
    pub date: [u8; 29],
    /// Where the service time of each answered request is recorded.
    pub service_times: &'a Histogram,
    /// Requests this core refused for a missing or wrong secret.
    pub auth_failures: &'a Cell<u64>,
    /// The connection's grants not yet handed to its socket.
    pub unsent: &'a RefCell<UnsentGrants>,
    /// The address of the client the connection serves, for logging what is done at its
    /// request (a forced release). An answer that comes later may be taken in by another
    /// task, so a session keeps what it needs of it with the request.
    pub peer: &'a SocketAddr,
}

impl Context<'_> {
    /// Counts a request refused for its secret.
    pub fn count_auth_failure(&self) {
        self.auth_failures.set(self.auth_failures.get() + 1);
    }

    /// A (non-session) grant of `resource` to `owner` under `token` was written; its answer
    /// ends `end` bytes into the answer buffer. Released if the connection ends before the
    /// answer is sent.
    pub fn granted(&self, end: usize, resource: &str, owner: &str, token: u64) {
        self.unsent.borrow_mut().record(end, resource, owner, token);
    }
}
