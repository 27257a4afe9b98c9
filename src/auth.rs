//! The shared secret: owns the expected value, the only comparison against it, and how many
//! wrong tries a connection gets. Compared in constant time (with respect to its contents) and
//! never printed.

use std::fmt;

use subtle::ConstantTimeEq;

/// Requests one connection may have refused for a missing or wrong secret; the one that
/// reaches it is answered, and the connection closed. A client with the wrong secret learns so
/// from its first refusal; the few after it are requests it already sent (pipelined, or on a
/// pooled connection), and they get the same clear answer rather than a reset. A guesser, on
/// the other hand, is held to five guesses per TCP handshake instead of thousands per write.
pub const MAX_AUTH_FAILURES: u32 = 5;

/// The secret every client must present (`X-LOCKSERVER-SECRET`, or the wire handshake).
#[derive(Clone)]
pub struct Secret {
    value: Box<[u8]>,
}

/// The reference server's default, and so the one every SDK sends when not told otherwise.
pub use ringlock_client::DEFAULT_SECRET;

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret { value: value.into().into_bytes().into_boxed_slice() }
    }

    /// Whether `presented` is the secret. Takes the same time for every presented value of
    /// the right length (the length itself is not hidden).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.value.ct_eq(presented).into()
    }

    /// The secret itself, to present to a peer (the cluster's handshake). Never logged.
    pub fn as_bytes(&self) -> &[u8] {
        &self.value
    }

    /// Whether this is the well-known default, which anyone can guess.
    pub fn is_default(&self) -> bool {
        self.matches(DEFAULT_SECRET.as_bytes())
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
}
