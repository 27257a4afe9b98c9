//! The members' wire format: frames of a `u32` little-endian length and a bincode body, and the
//! messages they carry. Checking and encoding are pure; the two async helpers at the end only
//! move whole frames.
//!
//! A connection starts with the caller's [`Hello`] and the callee's [`Welcome`]; after a
//! welcome to [`Hello::Raft`], the caller sends [`Rpc`]s and reads one [`Reply`] for each, in
//! order.
//!
//! bincode (1.x) because its encoding is compact (fixed-width integers, no field names) and
//! fixed within its major version, and it serializes openraft's messages through their serde
//! derives as they are.

use std::io;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Member, TypeConfig};

/// Bytes of a frame's length field.
pub const LEN_BYTES: usize = 4;
/// Largest frame body accepted, in bytes: an append of [`super::node::MAX_PAYLOAD_ENTRIES`]
/// batches, each far below `store::record::MAX_BATCH_BYTES` in practice, or one snapshot chunk;
/// a length above it is a peer that is not ringlock (or is broken), and the connection ends.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// The first frame on a connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Hello {
    /// "I am `from`, and I want to talk consensus with member `target` of incarnation
    /// `incarnation`."
    Raft { secret: Vec<u8>, from: u64, target: u64, incarnation: u64 },
    /// "Who are you?" (asked of the member expected to be `target`).
    Describe { secret: Vec<u8>, target: u64 },
}

/// The answer to a [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Welcome {
    /// Go on.
    Ok,
    /// The answer to [`Hello::Describe`]; the connection then ends.
    Described(Described),
    /// Not for this member (why); the connection then ends.
    Refused(String),
}

/// Who a member is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Described {
    pub node_id: u64,
    pub member: Member,
    /// Whether it belongs to a cluster already (it has a log or a vote).
    pub initialized: bool,
}

/// A consensus call.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to an [`Rpc`] of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is above [`MAX_FRAME_BYTES`].
    TooLarge(usize),
    /// The body does not decode as the message expected.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "a frame of {n} bytes (at most {MAX_FRAME_BYTES})"),
            FrameError::Malformed(e) => write!(f, "a malformed frame: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// `msg` as one whole frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let len = bincode::serialized_size(msg).expect("every message serializes") as usize;
    let mut out = Vec::with_capacity(LEN_BYTES + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    bincode::serialize_into(&mut out, msg).expect("every message serializes");
    out
}

/// The length of the body of the frame at the start of `buf`, once the length field is there:
/// `Ok(None)` while it is not (partial input is not an error).
pub fn check(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(head) = buf.first_chunk::<LEN_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*head) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some(len))
}

/// A frame's body as the message it carries.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    bincode::deserialize(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads one whole frame's body (allocated once its length is known and checked).
pub async fn read_frame<S: AsyncReadExt + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let mut head = [0; LEN_BYTES];
    stream.read_exact(&mut head).await?;
    let len = check(&head)?.expect("a whole length field");
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes `msg` as one frame.
pub async fn write_frame<S: AsyncWriteExt + Unpin, T: Serialize>(stream: &mut S, msg: &T) -> io::Result<()> {
    stream.write_all(&encode(msg)).await
}

/// Serde for a batch's records as one byte string (bincode: a length and the bytes, copied at
/// once, rather than a sequence of `u8`s each decoded on its own).
pub mod bytes {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Batch;

    #[test]
    fn frames_are_checked_before_they_are_read() {
        let hello = Hello::Describe { secret: b"s".to_vec(), target: 3 };
        let frame = encode(&hello);
        for end in 0..LEN_BYTES {
            assert_eq!(check(&frame[..end]), Ok(None), "prefix of {end}");
        }
        let len = check(&frame).unwrap().unwrap();
        assert_eq!(LEN_BYTES + len, frame.len());
        match decode::<Hello>(&frame[LEN_BYTES..]).unwrap() {
            Hello::Describe { secret, target } => assert_eq!((secret, target), (b"s".to_vec(), 3)),
            other => panic!("{other:?}"),
        }
        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        assert_eq!(check(&huge), Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1)));
        assert!(matches!(decode::<Hello>(&[9, 9]), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn a_batch_is_a_length_and_its_bytes() {
        let batch = Batch { term: 2, at: 7, records: vec![1, 2, 3] };
        let bytes = bincode::serialize(&batch).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            2, 0, 0, 0, 0, 0, 0, 0, // term
            7, 0, 0, 0, 0, 0, 0, 0, // at
            3, 0, 0, 0, 0, 0, 0, 0, // records: length
            1, 2, 3,                // and bytes
        ];
        assert_eq!(bytes, expected);
        assert_eq!(bincode::deserialize::<Batch>(&bytes).unwrap(), batch);
    }
}
