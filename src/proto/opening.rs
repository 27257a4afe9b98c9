//! How a connection to a cluster member opens, read from its first bytes: whether this member
//! answers it, or the leader must. Pure; too few bytes to tell is [`Opening::Incomplete`].
//!
//! A member that does not lead passes a connection to the leader whole (`net::forward`), in
//! either protocol, except for what is about the member itself: `GET`/`HEAD` of `/health`,
//! `/metrics` and `/cluster` (a probe, a scraper or an operator asks this member, not the
//! leader). The connection it opens to the leader starts with [`TUNNEL_PREFACE`], so that a
//! member that thinks another leads never passes it on again (two members with stale views
//! would otherwise pass it to and fro).

/// What a member's tunnel to the leader opens with, before its client's bytes. It starts with
/// the wire protocol's NUL, so no HTTP request is taken for it; no wire client sends it (the
/// wire preface's version byte is 1 or 2).
pub const TUNNEL_PREFACE: [u8; 4] = *b"\0RL\xF0";

/// A request line longer than this is not looked into: the member answers it itself (and
/// refuses it, as any over-long head).
pub const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;

/// The first byte of a TLS handshake record (a ClientHello's record type), which neither
/// protocol starts with: an HTTP request starts with a method's letter, a wire client with NUL.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// What a connection speaks, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// No byte yet.
    Incomplete,
    /// A TLS handshake: HTTP or the wire protocol follow inside it.
    Tls,
    /// The wire protocol in plaintext (its NUL preface, or a member's tunnel).
    Wire,
    /// Anything else is taken for HTTP in plaintext.
    Http,
}

/// Reads what a connection speaks from its first bytes.
pub fn layer(bytes: &[u8]) -> Layer {
    match bytes.first() {
        None => Layer::Incomplete,
        Some(&TLS_HANDSHAKE) => Layer::Tls,
        Some(0) => Layer::Wire,
        Some(_) => Layer::Http,
    }
}

/// Who serves a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Too few bytes to tell.
    Incomplete,
    /// Another member's tunnel: served here (after the preface's bytes), whatever this
    /// member's role.
    Tunnelled,
    /// A request about this member.
    Local,
    /// A request for the leader.
    Leader,
}

/// Reads the opening of a connection from its first bytes.
pub fn classify(bytes: &[u8]) -> Opening {
    match bytes.first() {
        None => Opening::Incomplete,
        Some(0) => {
            let n = bytes.len().min(TUNNEL_PREFACE.len());
            if bytes[..n] != TUNNEL_PREFACE[..n] {
                Opening::Leader
            } else if n < TUNNEL_PREFACE.len() {
                Opening::Incomplete
            } else {
                Opening::Tunnelled
            }
        }
        Some(_) => {
            let Some(end) = bytes.iter().take(MAX_REQUEST_LINE_BYTES).position(|&b| b == b'\n') else {
                return if bytes.len() < MAX_REQUEST_LINE_BYTES {
                    Opening::Incomplete
                } else {
                    Opening::Local
                };
            };
            let mut words = bytes[..end].split(|&b| b == b' ');
            let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
            let path = target.split(|&b| b == b'?').next().unwrap_or_default();
            let about_member = matches!(path, b"/health" | b"/metrics" | b"/cluster");
            if matches!(method, b"GET" | b"HEAD") && about_member { Opening::Local } else { Opening::Leader }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_requests_go_to_the_leader_and_probes_stay() {
        assert_eq!(classify(b"POST /acquire HTTP/1.1\r\n"), Opening::Leader);
        assert_eq!(classify(b"GET /locks/a HTTP/1.1\r\n\r\n"), Opening::Leader);
        assert_eq!(classify(b"GET /health HTTP/1.1\r\n"), Opening::Local);
        assert_eq!(classify(b"HEAD /health HTTP/1.0\n"), Opening::Local);
        assert_eq!(classify(b"GET /metrics?x=1 HTTP/1.1\r\n"), Opening::Local);
        assert_eq!(classify(b"GET /cluster HTTP/1.1\r\n"), Opening::Local);
        // A membership change is the leader's to make.
        assert_eq!(classify(b"POST /cluster/members HTTP/1.1\r\n"), Opening::Leader);
        assert_eq!(classify(b"DELETE /cluster/members/3 HTTP/1.1\r\n"), Opening::Leader);
        assert_eq!(classify(b"POST /health HTTP/1.1\r\n"), Opening::Leader);
    }

    #[test]
    fn partial_openings_are_incomplete() {
        assert_eq!(classify(b""), Opening::Incomplete);
        assert_eq!(classify(b"GET /heal"), Opening::Incomplete);
        assert_eq!(classify(b"\0"), Opening::Incomplete);
        assert_eq!(classify(b"\0RL"), Opening::Incomplete);
        assert_eq!(classify(&[b'G'; MAX_REQUEST_LINE_BYTES - 1]), Opening::Incomplete);
        assert_eq!(classify(&[b'G'; MAX_REQUEST_LINE_BYTES]), Opening::Local);
    }

    #[test]
    fn the_first_byte_tells_tls_from_plaintext() {
        assert_eq!(layer(b""), Layer::Incomplete);
        // A ClientHello record: handshake, TLS 1.0 record version, a length.
        assert_eq!(layer(&[0x16, 0x03, 0x01, 0x02, 0x00]), Layer::Tls);
        assert_eq!(layer(&[0x16]), Layer::Tls);
        assert_eq!(layer(b"\0RL\x01"), Layer::Wire);
        assert_eq!(layer(&TUNNEL_PREFACE), Layer::Wire);
        assert_eq!(layer(b"GET /health HTTP/1.1\r\n"), Layer::Http);
        // Another TLS record type (an alert, 0x15) is no handshake: taken for HTTP, and
        // refused as such.
        assert_eq!(layer(&[0x15, 0x03, 0x03]), Layer::Http);
    }

    #[test]
    fn wire_clients_go_to_the_leader_and_tunnels_stay() {
        assert_eq!(classify(b"\0RL\x01"), Opening::Leader);
        assert_eq!(classify(b"\0RL\x02\x01\x02"), Opening::Leader);
        assert_eq!(classify(b"\0X"), Opening::Leader);
        assert_eq!(classify(b"\0RL\xF0"), Opening::Tunnelled);
        assert_eq!(classify(b"\0RL\xF0GET /health HTTP/1.1\r\n"), Opening::Tunnelled);
    }
}
