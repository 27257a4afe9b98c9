//! ringlock's binary protocol (`docs/PROTOCOL.md`): [`frame`] is its bytes, [`session`]
//! drives one connection.

pub mod frame;
pub mod session;
