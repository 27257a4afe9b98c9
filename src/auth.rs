//! The shared secret: owns the expected value, the only comparison against it, how many wrong
//! tries a connection gets, and the count of refusals for `/metrics`. Compared in constant
//! time (with respect to its contents) and never printed.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use subtle::ConstantTimeEq;

/// Requests one connection may have refused for a missing or wrong secret; the one that
/// reaches it is answered, and the connection closed. A client with the wrong secret learns so
/// from its first refusal; the few after it are requests it already sent (pipelined, or on a
/// pooled connection), and they get the same clear answer rather than a reset. A guesser, on
/// the other hand, is held to five guesses per TCP handshake instead of thousands per write.
pub const MAX_AUTH_FAILURES: u32 = 5;

/// The secret every client must present (`X-LOCKSERVER-SECRET`, or the wire handshake).
/// Clones share one count of refusals: a server's cores all add to it.
#[derive(Clone)]
pub struct Secret {
    value: Box<[u8]>,
    /// Requests refused for a missing or wrong secret, every core's. The one thing cores
    /// share besides settings: refusals are rare by construction (at most
    /// [`MAX_AUTH_FAILURES`] per connection), so one shared counter costs nothing, and it
    /// reaches `/metrics` without any core's turn.
    refusals: Arc<AtomicU64>,
}

/// The reference server's default, and so the one every SDK sends when not told otherwise.
pub use ringlock_client::DEFAULT_SECRET;

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret { value: value.into().into_bytes().into_boxed_slice(), refusals: Arc::default() }
    }

    /// Whether `presented` is the secret. Takes the same time for every presented value of
    /// the right length (the length itself is not hidden).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.value.ct_eq(presented).into()
    }

    /// Whether this is the well-known default, which anyone can guess.
    pub fn is_default(&self) -> bool {
        self.matches(DEFAULT_SECRET.as_bytes())
    }

    /// Counts a request refused for a missing or wrong secret.
    pub fn count_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests refused for a missing or wrong secret so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_value_and_never_prints_it() {
        let s = Secret::new("hunter2");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
        assert!(!s.matches(b""));
        assert!(!s.is_default());
        assert!(Secret::new(DEFAULT_SECRET).is_default());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn clones_share_the_count_of_refusals() {
        let s = Secret::new("hunter2");
        let core_copy = s.clone();
        s.count_refusal();
        core_copy.count_refusal();
        assert_eq!((s.refusals(), core_copy.refusals()), (2, 2));
        assert_eq!(Secret::new("hunter2").refusals(), 0, "another server's secret counts apart");
    }
}
