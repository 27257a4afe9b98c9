//! HTTP/1.1, the reference server's API and ours, in the order a request meets them: [`head`]
//! frames a request, [`route`] picks its endpoint and checks it, [`body`] reads its JSON (a
//! plain body through `flat`), [`endpoint`] says how the answer reads, [`response`] encodes it,
//! and [`session`] drives one connection through them in order.

pub mod body;
pub mod endpoint;
mod flat;
pub mod head;
pub mod response;
pub mod route;
pub mod session;
