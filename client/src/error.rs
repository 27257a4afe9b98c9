//! What a call can fail with: the connection, the protocol, or the server's answer.

use std::fmt;
use std::io;
use std::time::Duration;

/// What can go wrong.
#[derive(Debug)]
pub enum Error {
    /// Could not connect, or the connection failed.
    Io(io::Error),
    /// The client has ended (protocol version 1: its connection closed), or the connection
    /// closed with the request unanswered.
    Closed,
    /// The connection failed (the reason says how) with the request sent and unanswered:
    /// whether the server carried it out is unknown. (Version 2: the client reconnects.)
    Interrupted(String),
    /// The request was not sent: there was no connection to the server to take it (the
    /// client is reconnecting) while it waited this long. The reason is the last attempt's.
    NotConnected { waited: Duration, why: String },
    /// The server did not answer within this long (the call timeout, plus the wait asked
    /// for). The connection has been closed: whatever was still on it is lost with it (with
    /// protocol version 1, session locks included; version 2 reconnects and resumes them).
    CallTimeout(Duration),
    /// The server refused the secret.
    Unauthorized,
    /// The server could not read what we sent, or we could not read what it sent.
    Protocol(String),
    /// The lock is held (and the request did not wait).
    Busy,
    /// The request waited its whole wait time.
    TimedOut,
    /// Too many requests already wait for the lock.
    QueueFull,
    /// Nobody holds the lock.
    NotFound,
    /// Somebody else holds the lock.
    NotHolder,
    /// We hold the lock under another token (a newer grant).
    TokenMismatch,
    /// The server cannot keep changes now (its log cannot be written); nothing was done.
    Unavailable,
    /// The server refused the request's fields (the reason says which).
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "connection failed: {e}"),
            Error::Closed => f.write_str("connection closed"),
            Error::Interrupted(why) => write!(
                f,
                "the connection failed before the answer came ({why}); whether the request was carried out is unknown"
            ),
            Error::NotConnected { waited, why } => write!(
                f,
                "not sent: no connection to the server took the request within {:.3} s (reconnecting; the last attempt: {why})",
                waited.as_secs_f64()
            ),
            Error::CallTimeout(after) => write!(
                f,
                "no answer from the server within {:.3} s; the connection was closed",
                after.as_secs_f64()
            ),
            Error::Unauthorized => f.write_str("the server refused the secret"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
            Error::Busy => f.write_str("the lock is held"),
            Error::TimedOut => f.write_str("timed out waiting for the lock"),
            Error::QueueFull => f.write_str("too many requests wait for the lock"),
            Error::NotFound => f.write_str("nobody holds the lock"),
            Error::NotHolder => f.write_str("another owner holds the lock"),
            Error::TokenMismatch => f.write_str("the lock is held under another token"),
            Error::Unavailable => f.write_str("the server cannot keep changes now; try again later"),
            Error::Invalid(why) => write!(f, "invalid request: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}
