//! What a protocol session reads of its server besides lock work.

use std::cell::Cell;

use crate::auth::Secret;
use crate::config::Limits;
use crate::metrics::Histogram;

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
}

impl Context<'_> {
    /// Counts a request refused for its secret.
    pub fn count_auth_failure(&self) {
        self.auth_failures.set(self.auth_failures.get() + 1);
    }
}
