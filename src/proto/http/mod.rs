//! HTTP/1.1, the reference server's API and ours: [`head`] frames a request, [`route`] picks
//! its endpoint and checks it, [`body`] reads its JSON, [`response`] writes the answer, and
//! [`session`] drives one connection through them in order.

pub mod body;
pub mod head;
pub mod response;
pub mod route;
pub mod session;
