//! Drives one wire-protocol connection: reads the preface and frames, holds the connection
//! to its `HELLO`, submits requests to the core and writes each reply as soon as it comes (ids
//! pair them up, so a waiting acquire holds back nothing behind it).
//!
//! Session locks: on a version 1 connection they belong to the connection, are released when
//! it closes, and are reported with a `LOST` push if their lease runs out first. On a version
//! 2 connection they belong to a resumable session (`HELLO_SESSION`), which the core keeps
//! for its timeout after the connection goes; the connection only carries its pushes.

use std::time::Instant;

use slab::Slab;

use ringlock_client::frame::{
    self, FrameError, MAX_SESSION_TIMEOUT_MS, SESSIONS_VERSION, VERSION, WireReply, WireRequest,
};

use crate::api::{self, CONNECTION_SESSION, LockService, NO_SESSION, Reply, Request};
use crate::proto::context::Context;

/// One wire connection's state.
#[derive(Default)]
pub struct Session {
    /// The protocol version its preface named (0: not read yet).
    version: u8,
    /// `HELLO` with the right secret has been seen.
    authorized: bool,
    /// Version 2: the resumable session it belongs to, once the core has said which.
    session: Option<u64>,
    /// Requests waiting for their reply; the key is the ticket's slot.
    pending: Slab<Pending>,
    /// Session locks granted on this connection (version 1: to release when it closes; both:
    /// to name the lock in a `LOST` push).
    held: Vec<Held>,
}

/// Which operation a request was, so its reply can be told apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `HELLO_SESSION`, waiting for its session.
    Hello,
    Acquire,
    Release,
    Extend,
    Inspect,
}

struct Pending {
    id: u32,
    op: Op,
    /// Resource and owner, kept for a waiting or session acquire (to withdraw it, or to
    /// record the session lock) and for a release (to forget a session lock).
    names: Option<(Box<str>, Box<str>)>,
    wait: bool,
    session: bool,
    /// When the request arrived (for its service time).
    since: Instant,
}

struct Held {
    resource: Box<str>,
    owner: Box<str>,
    token: u64,
}

impl Session {
    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether the connection holds session locks that closing it would release (version 2
    /// sessions keep theirs).
    pub fn holds_locks(&self) -> bool {
        self.version == VERSION && !self.held.is_empty()
    }

    /// Serves every complete frame at the start of `buf`; returns the bytes used.
    pub fn on_bytes(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        buf: &[u8],
        out: &mut Vec<u8>,
        close: &mut bool,
    ) -> usize {
        let since = Instant::now();
        let mut used = 0;
        if self.version == 0 {
            match frame::read_preface(buf) {
                Ok(None) => return 0,
                Ok(Some(version)) => {
                    self.version = version;
                    used = frame::PREFACE.len();
                }
                Err(e) => return fatal(e, out, close),
            }
        }
        let mut served = 0;
        while !*close
            && self.pending.len() < cx.limits.max_in_flight
            && out.len() < cx.limits.max_unsent_bytes
        {
            let rest = &buf[used..];
            let n = match frame::check(rest) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return used + fatal(e, out, close),
            };
            used += n;
            served += 1;
            match frame::parse_request(&rest[..n]) {
                Ok((id, req)) => self.serve(svc, cx, id, req, since, out, close),
                Err(FrameError::Invalid { id, reason }) => {
                    frame::encode_reply(out, id, &WireReply::Invalid { reason })
                }
                Err(e) => return used + fatal(e, out, close),
            }
        }
        if served > 0 {
            // One clock reading for the batch; answers that wait are timed when they come.
            cx.service_times.record(since.elapsed(), served);
        }
        used
    }

    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        id: u32,
        req: WireRequest<'_>,
        since: Instant,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        let req = match (self.authorized, req) {
            (false, WireRequest::Hello { .. }) if self.version == SESSIONS_VERSION => {
                fatal(FrameError::Fatal("a version 2 connection opens with HELLO_SESSION"), out, close);
                return;
            }
            (false, WireRequest::HelloSession { .. }) if self.version == VERSION => {
                fatal(FrameError::Fatal("HELLO_SESSION needs the version 2 preface"), out, close);
                return;
            }
            (false, WireRequest::Hello { secret }) if cx.secret.matches(secret) => {
                self.authorized = true;
                return frame::encode_reply(out, id, &WireReply::HelloOk { version: VERSION });
            }
            (false, WireRequest::HelloSession { secret, session, timeout_ms })
                if cx.secret.matches(secret) =>
            {
                self.authorized = true;
                let timeout_ms = timeout_ms.clamp(1, MAX_SESSION_TIMEOUT_MS);
                let slot = self.pending.vacant_key();
                match svc.attach(slot, session, timeout_ms) {
                    Some(reply) => self.answer(cx, id, Op::Hello, None, false, &reply, out),
                    None => {
                        let pending =
                            Pending { id, op: Op::Hello, names: None, wait: false, session: false, since };
                        self.pending.insert(pending);
                    }
                }
                return;
            }
            (false, _) => {
                // A wire client gets one try: it presents the secret once, first thing, so a
                // second would only be a guess.
                cx.count_auth_failure();
                frame::encode_reply(out, id, &WireReply::Unauthorized);
                *close = true;
                return;
            }
            (true, WireRequest::Hello { .. } | WireRequest::HelloSession { .. }) => {
                return frame::encode_reply(out, id, &WireReply::Invalid { reason: "already authorized" });
            }
            (true, WireRequest::Ping) => return frame::encode_reply(out, id, &WireReply::Pong),
            (true, WireRequest::Acquire { resource, owner, ttl, wait, session }) => {
                let session = match (session, self.version, self.session) {
                    (false, ..) => NO_SESSION,
                    (true, VERSION, _) => CONNECTION_SESSION,
                    (true, _, Some(id)) => id,
                    (true, _, None) => {
                        let reason = "the session is not established yet (wait for SESSION_OK)";
                        return frame::encode_reply(out, id, &WireReply::Invalid { reason });
                    }
                };
                Request::Acquire { resource, owner, ttl, wait, session }
            }
            (true, WireRequest::Release { resource, owner, token }) => {
                Request::Release { resource, owner, token }
            }
            (true, WireRequest::Extend { resource, owner, token, ttl }) => {
                Request::Extend { resource, owner, token, ttl }
            }
            (true, WireRequest::Inspect { resource }) => Request::Inspect { resource },
        };
        if let Err(reason) = api::check(&req, cx.limits) {
            return frame::encode_reply(out, id, &WireReply::Invalid { reason: &reason });
        }
        let (op, wait, session) = match &req {
            Request::Acquire { wait, session, .. } => (Op::Acquire, *wait > 0, *session != NO_SESSION),
            Request::Release { .. } | Request::ForceRelease { .. } => (Op::Release, false, false),
            Request::Extend { .. } => (Op::Extend, false, false),
            Request::Inspect { .. } | Request::List { .. } | Request::Stats => (Op::Inspect, false, false),
        };
        let slot = self.pending.vacant_key();
        match svc.submit(slot, &req) {
            // Answered now: the names are read where they lie in the request, never copied.
            Some(reply) => self.answer(cx, id, op, names(&req), session, &reply, out),
            None => {
                // An acquire keeps its names whatever it is: if the connection ends before its
                // answer comes, a grant is released.
                let keep = op == Op::Acquire || (op == Op::Release && !self.held.is_empty());
                let names = if keep { owned_names(&req) } else { None };
                self.pending.insert(Pending { id, op, names, wait, session, since });
            }
        }
    }

    /// News of a session lock has come: a lease that ran out is pushed as `LOST`. On a
    /// version 2 connection the lock may have been granted on an earlier connection of the
    /// session, whose name this one never saw: it is pushed with an empty name (clients match
    /// pushes by token).
    pub fn on_push(&mut self, news: Reply, out: &mut Vec<u8>) {
        let Reply::Lost { token } = news else { return };
        match self.held.iter().position(|h| h.token == token) {
            Some(at) => {
                let held = self.held.swap_remove(at);
                frame::encode_reply(out, 0, &WireReply::Lost { token, resource: &held.resource });
            }
            None if self.version == SESSIONS_VERSION => {
                frame::encode_reply(out, 0, &WireReply::Lost { token, resource: "" })
            }
            None => {}
        }
    }

    /// The reply to the request in `slot` has come.
    pub fn on_reply(&mut self, cx: &Context<'_>, slot: usize, reply: Reply, out: &mut Vec<u8>) {
        let Some(p) = self.pending.try_remove(slot) else { return };
        cx.service_times.record(p.since.elapsed(), 1);
        let names = p.names.as_ref().map(|(r, o)| (&**r, &**o));
        self.answer(cx, p.id, p.op, names, p.session, &reply, out);
    }

    /// Writes the reply to request `id`, and keeps the session's locks up to date (and notes a
    /// plain grant with the connection: see [`Context::granted`]).
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        cx: &Context<'_>,
        id: u32,
        op: Op,
        names: Option<(&str, &str)>,
        session: bool,
        reply: &Reply,
        out: &mut Vec<u8>,
    ) {
        match (op, reply, names) {
            (Op::Hello, Reply::Attached { session, .. }, _) => self.session = Some(*session),
            (Op::Acquire, Reply::Granted { token }, Some((resource, owner))) if session => {
                self.held.push(Held { resource: resource.into(), owner: owner.into(), token: *token });
            }
            (Op::Release, Reply::Done { .. }, Some((resource, owner))) => {
                self.held.retain(|h| !(&*h.resource == resource && &*h.owner == owner));
            }
            _ => {}
        }
        frame::encode_reply(out, id, &wire_reply(op, reply));
        if let (Op::Acquire, Reply::Granted { token }, Some((resource, owner)), false) =
            (op, reply, names, session)
        {
            cx.granted(out.len(), resource, owner, *token);
        }
    }

    /// The client closed its side: withdraw what waits (nobody will read its answer), so the
    /// connection can close at once.
    pub fn on_eof(&mut self, svc: &mut impl LockService) {
        self.withdraw(svc);
    }

    /// The connection is gone: withdraw what waits, and release its session locks (version
    /// 1), or leave them to its session, which outlives it for its timeout (version 2).
    pub fn teardown(&mut self, svc: &mut impl LockService) {
        self.withdraw(svc);
        if self.version == SESSIONS_VERSION {
            if let Some(session) = self.session {
                svc.detach(session);
            }
            return;
        }
        for held in self.held.drain(..) {
            svc.release_for_gone(&held.resource, &held.owner, held.token);
        }
    }

    /// Withdraws every request in flight. A waiting acquire is cancelled, and any other
    /// acquire still on its way is noted, so that a grant that comes anyway is released.
    fn withdraw(&mut self, svc: &mut impl LockService) {
        for (slot, p) in std::mem::take(&mut self.pending) {
            let (Op::Acquire, Some((resource, owner))) = (p.op, &p.names) else { continue };
            if p.wait {
                svc.withdraw(slot, resource, owner);
            } else {
                svc.abandon(slot, resource, owner);
            }
        }
    }
}

/// The resource and owner an acquire or release names.
fn names<S: AsRef<str>>(req: &Request<S>) -> Option<(&str, &str)> {
    match req {
        Request::Acquire { resource, owner, .. } | Request::Release { resource, owner, .. } => {
            Some((resource.as_ref(), owner.as_ref()))
        }
        _ => None,
    }
}

/// [`names`], copied: an answer that comes later outlives the request's bytes.
fn owned_names<S: AsRef<str>>(req: &Request<S>) -> Option<(Box<str>, Box<str>)> {
    names(req).map(|(r, o)| (r.into(), o.into()))
}

/// How a reply to `op` reads on the wire.
fn wire_reply(op: Op, reply: &Reply) -> WireReply<'_> {
    match (op, reply) {
        (_, Reply::Granted { token }) => WireReply::Granted { token: *token },
        (Op::Extend, Reply::Done { token }) => WireReply::Extended { token: *token },
        (_, Reply::Done { token }) => WireReply::Released { token: *token },
        (_, Reply::Busy) => WireReply::Busy,
        (_, Reply::TimedOut) => WireReply::TimedOut,
        (_, Reply::QueueFull) => WireReply::QueueFull,
        (_, Reply::Unavailable | Reply::NoLeader | Reply::Refused(_)) => WireReply::Unavailable,
        (_, Reply::NotFound | Reply::Info(None)) => WireReply::NotFound,
        (_, Reply::NotHolder) => WireReply::NotHolder,
        (_, Reply::TokenMismatch) => WireReply::TokenMismatch,
        (_, Reply::Info(Some(lock))) => WireReply::Lock {
            token: lock.token,
            expires_in: lock.expires_in,
            waiters: u32::try_from(lock.waiters).unwrap_or(u32::MAX),
            owner: &lock.owner,
        },
        (_, Reply::Attached { session, timeout_ms, resumed }) => {
            WireReply::SessionOk { session: *session, timeout_ms: *timeout_ms, resumed: *resumed }
        }
        (
            _,
            Reply::Listed(_)
            | Reply::Lost { .. }
            | Reply::Stats(_)
            | Reply::Cluster(_)
            | Reply::Membership(_),
        ) => WireReply::Invalid { reason: "unexpected reply" },
    }
}

/// Answers a stream that cannot be read further, and asks to close; returns 0 bytes used
/// (nothing after it will be read).
fn fatal(e: FrameError, out: &mut Vec<u8>, close: &mut bool) -> usize {
    let reason = match e {
        FrameError::Fatal(reason) | FrameError::Invalid { reason, .. } => reason,
    };
    frame::encode_reply(out, 0, &WireReply::ProtocolError { reason });
    *close = true;
    0
}
