//! ringlock's binary protocol (`docs/PROTOCOL.md`): its bytes are [`ringlock_client::frame`],
//! the one codec the server, the client and the load generator share; [`session`] drives one
//! connection.

pub mod session;
