//! Drives one HTTP connection: frames requests out of the read buffer, routes them, submits
//! lock requests to the core, and writes the answers in request order. Pipelining: every
//! complete request in the buffer is served, and answers that are ready leave together; an
//! answer that must wait (a lock wait, another core) holds back only the ones behind it.
//! Records each request's service time in the core's histogram. A connection refused for
//! its secret [`MAX_AUTH_FAILURES`] times is closed after that answer.
//!
//! Bounds: it parses no further while [`Limits::max_in_flight`] requests are unanswered, while
//! [`Limits::max_unsent_bytes`] of answers are unsent, or while a request for every core is
//! unanswered ([`MAX_GATHERS_IN_FLIGHT`]); the rest waits in the read buffer.
//!
//! When the connection ends, what it still owes is settled: waits are withdrawn, acquires still
//! on their way abandoned, and grants that were never written out (queued behind an earlier
//! answer) released; the ones written but never sent are the connection's business (see
//! [`crate::proto::unsent`]). When the server ends it (a request it cannot frame, a refusal that
//! closes, a timeout), its waits are withdrawn at once rather than waited for.
//!
//! [`Limits::max_in_flight`]: crate::config::Limits
//! [`Limits::max_unsent_bytes`]: crate::config::Limits
//! its secret [`MAX_AUTH_FAILURES`] times is closed after that answer. A forced release is
//! logged at warn with its outcome and the client's address (never the lock's name).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use slab::Slab;

use crate::api::{LockService, Reply, Request};
use crate::auth::MAX_AUTH_FAILURES;
use crate::config::Limits;
use crate::log::Level;
use crate::proto::context::Context;

use super::body::BodyRequest;
use super::endpoint::{self, gathered_reply, lock_reply};
use super::head::{self, Method};
use super::response::{CONTINUE, Response};
use super::route::{self, Endpoint, Refusal, Routed};

/// Requests for every core (a list page, `/metrics`) that one connection may have parsed and
/// not yet answered. Each gathers up to a page of every core's locks until its answer is
/// written (a page of 1,000 is some 150 KiB), so more pipelined behind it wait in the read
/// buffer, unparsed: 16 clients that pipelined a thousand list calls each and read nothing
/// grew the server by 600 MiB. Answers leave in order anyway, so a pipelining client loses
/// only the overlap of one list's cross-core round trip with the next's.
pub const MAX_GATHERS_IN_FLIGHT: usize = 1;

/// One HTTP connection's requests in flight, in order.
#[derive(Default)]
pub struct Session {
    slots: Slab<Slot>,
    /// Keys of `slots`, oldest request first.
    order: VecDeque<usize>,
    /// The incomplete request at the front of the buffer has been answered `100 Continue`.
    continued: bool,
    /// Requests refused for a missing or wrong secret.
    refused_secrets: u32,
    /// Requests for every core among `slots`.
    gathers: usize,
    /// The server ends the connection (a request it cannot frame, a refusal that closes, a
    /// timeout): its waits are withdrawn, not waited for.
    ending: bool,
}

struct Slot {
    endpoint: Endpoint,
    framing: Framing,
    /// When the request arrived (for its service time).
    since: Instant,
    state: SlotState,
    /// An acquire's resource and owner: to withdraw it, abandon it or release its grant if
    /// the connection ends first.
    names: Option<(Box<str>, Box<str>)>,
}

enum SlotState {
    /// Its reply has not come yet; `waits`: a waiting acquire; `forced_by`: a forced release's
    /// client, to log its outcome.
    Pending {
        waits: bool,
        forced_by: Option<SocketAddr>,
    },
    /// A request for every core (a list, stats), gathering their shares.
    Gathering {
        left: usize,
        parts: Vec<Reply>,
        limit: usize,
    },
    Ready(Response),
}

/// How the answer to one request is to be written.
#[derive(Clone, Copy)]
struct Framing {
    keep_alive: bool,
    head_only: bool,
}

/// The framing of an answer after which the connection closes.
const CLOSING: Framing = Framing { keep_alive: false, head_only: false };

impl Session {
    /// Requests parsed and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.order.len()
    }

    /// Whether another request may be parsed, with `unsent` answer bytes not yet sent.
    pub fn has_room(&self, unsent: usize, limits: &Limits) -> bool {
        self.order.len() < limits.max_in_flight
            && unsent < limits.max_unsent_bytes
            && self.gathers < MAX_GATHERS_IN_FLIGHT
    }

    /// Serves every complete request at the start of `buf`; returns the bytes used. Sets
    /// `close` when the connection is to close once its answers are out (the client asked,
    /// or the stream can no longer be framed).
    pub fn on_bytes(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        buf: &[u8],
        out: &mut Vec<u8>,
        close: &mut bool,
    ) -> usize {
        let since = Instant::now();
        let mut answered = 0;
        let mut used = 0;
        while !*close && self.has_room(out.len(), cx.limits) {
            let rest = &buf[used..];
            let head = match head::parse(rest, cx.limits.max_head_bytes) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    self.answer(cx, endpoint::bad_head(e), CLOSING, since, out, close);
                    (*close, self.ending) = (true, true);
                    break;
                }
            };
            // httparse hands out the target as `&str`, so it is UTF-8.
            let target = ringlock_client::frame::utf8(&rest[head.target.clone()]).unwrap_or_default();
            let authorized = || head.secret.clone().is_some_and(|at| cx.secret.matches(&rest[at]));
            if head.content_length > cx.limits.max_body_bytes {
                self.answer(cx, endpoint::too_large(), CLOSING, since, out, close);
                (*close, self.ending) = (true, true);
                break;
            }
            let end = head.len + head.content_length;
            if rest.len() < end {
                if head.expect_continue && !self.continued {
                    self.continued = true;
                    if let Some(refusal) = route::preflight(head.method, target, authorized) {
                        if refusal == Refusal::Unauthorized {
                            self.refuse_secret(cx);
                        }
                        // Refused before the body was sent: answer, and close rather than
                        // guess whether the client will send the body anyway.
                        self.answer(cx, endpoint::refused(refusal), CLOSING, since, out, close);
                        (*close, self.ending) = (true, true);
                    } else if self.order.is_empty() {
                        out.extend_from_slice(CONTINUE);
                    }
                }
                break;
            }
            self.continued = false;
            used += end;
            answered += 1;
            let framing = Framing { keep_alive: head.keep_alive, head_only: head.method == Method::Head };
            match route::route(head.method, target, &rest[head.len..end], cx.limits, authorized) {
                Routed::Health => self.answer(cx, endpoint::health(), framing, since, out, close),
                Routed::Refused(Refusal::Unauthorized) => {
                    let last = self.refuse_secret(cx);
                    let framing = if last { CLOSING } else { framing };
                    self.answer(cx, endpoint::refused(Refusal::Unauthorized), framing, since, out, close);
                    if last {
                        (*close, self.ending) = (true, true);
                    }
                }
                Routed::Refused(refusal) => {
                    self.answer(cx, endpoint::refused(refusal), framing, since, out, close)
                }
                Routed::Lock(endpoint, req) => {
                    self.submit(svc, cx, endpoint, req, framing, since, out, close)
                }
                Routed::Cluster(op) => match svc.cluster(self.slots.vacant_key(), op) {
                    Some(reply) => {
                        self.answer(cx, lock_reply(Endpoint::Cluster, &reply), framing, since, out, close)
                    }
                    None => {
                        let state = SlotState::Pending { waits: false, forced_by: None };
                        let slot = Slot { endpoint: Endpoint::Cluster, framing, since, state, names: None };
                        let key = self.slots.insert(slot);
                        self.order.push_back(key);
                    }
                },
            }
            if !head.keep_alive {
                *close = true;
            }
        }
        if answered > 0 {
            // One clock reading for the whole batch: what was answered at once took this long
            // (waiting answers are timed when they come).
            cx.service_times.record(since.elapsed(), answered);
        }
        used
    }

    /// Counts a request refused for its secret; returns whether it is the last this
    /// connection may have.
    fn refuse_secret(&mut self, cx: &Context<'_>) -> bool {
        cx.count_auth_failure();
        self.refused_secrets += 1;
        self.refused_secrets >= MAX_AUTH_FAILURES
    }

    /// The reply for `slot` has come.
    pub fn on_reply(
        &mut self,
        cx: &Context<'_>,
        slot: usize,
        reply: Reply,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        let Some(s) = self.slots.get_mut(slot) else { return };
        match &mut s.state {
            SlotState::Pending { forced_by, .. } => {
                if s.endpoint == Endpoint::ForceRelease {
                    log_forced(*forced_by, &reply);
                }
                s.state = SlotState::Ready(lock_reply(s.endpoint, &reply));
            }
            SlotState::Gathering { left, parts, limit } => {
                parts.push(reply);
                *left -= 1;
                if *left == 0 {
                    let parts = std::mem::take(parts);
                    s.state = SlotState::Ready(gathered_reply(s.endpoint, parts, *limit));
                }
            }
            SlotState::Ready(_) => return,
        }
        if matches!(s.state, SlotState::Ready(_)) {
            cx.service_times.record(s.since.elapsed(), 1);
        }
        self.drain(cx, out, close);
    }

    /// The client closed its side: withdraw its waits (they answer 409, as a wait that ran
    /// out would), and let the other answers go out.
    pub fn on_eof(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        self.withdraw_waits(svc, || lock_reply(Endpoint::Acquire, &Reply::TimedOut));
        self.drain(cx, out, close);
    }

    /// The reader has stopped for good: the server ends the connection, or the client asked
    /// to close after its answers. If the server ends it, withdraw the waits (answered 409,
    /// as a wait that ran out) and let the answers go out; else they are still owed.
    pub fn on_end(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        if self.ending {
            self.withdraw_waits(svc, || lock_reply(Endpoint::Acquire, &Reply::TimedOut));
            self.drain(cx, out, close);
        }
    }

    /// A request began to arrive and did not finish in time: answer 408 in its turn, and close.
    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>, close: &mut bool) {
        self.ending = true;
        self.answer(cx, endpoint::timed_out(), CLOSING, Instant::now(), out, close);
        *close = true;
    }

    /// The server is shutting down: withdraw the waits (answered 503), and let the other
    /// answers go out.
    pub fn on_shutdown(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        self.withdraw_waits(svc, endpoint::shutting_down);
        self.drain(cx, out, close);
    }

    /// The connection is gone: withdraw whatever still waits, abandon the acquires still on
    /// their way (a grant that comes is released), and release the grants that never went out.
    /// A forced release whose outcome has not come back is done or not all the same: it is
    /// logged as asked for.
    pub fn teardown(&mut self, svc: &mut impl LockService) {
        for (key, slot) in std::mem::take(&mut self.slots) {
            if let (Endpoint::ForceRelease, SlotState::Pending { forced_by, .. }) =
                (slot.endpoint, &slot.state)
            {
                let by = shown(*forced_by);
                crate::log!(
                    Level::Warn,
                    [peer = &by],
                    "forced release asked by {by}: its client left before its outcome came back"
                );
                continue;
            }
            let Some((resource, owner)) = &slot.names else { continue };
            match slot.state {
                SlotState::Pending { waits: true, .. } => svc.withdraw(key, resource, owner),
                SlotState::Pending { waits: false, .. } => svc.abandon(key, resource, owner),
                SlotState::Ready(Response { token: Some(token), .. })
                    if slot.endpoint == Endpoint::Acquire =>
                {
                    svc.release_for_gone(resource, owner, token)
                }
                _ => {}
            }
        }
        self.order.clear();
        self.gathers = 0;
    }

    fn withdraw_waits(&mut self, svc: &mut impl LockService, answer: impl Fn() -> Response) {
        for (key, slot) in self.slots.iter_mut() {
            if let (SlotState::Pending { waits: true, .. }, Some((resource, owner))) =
                (&slot.state, &slot.names)
            {
                svc.withdraw(key, resource, owner);
                slot.state = SlotState::Ready(answer());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        svc: &mut impl LockService,
        cx: &Context<'_>,
        endpoint: Endpoint,
        req: BodyRequest<'_>,
        framing: Framing,
        since: Instant,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        let key = self.slots.vacant_key();
        let gathers = req.resource().is_none();
        let state = if gathers {
            let limit = if let Request::List { limit, .. } = &req { *limit } else { 0 };
            match svc.submit_all(key, &req) {
                (mine, 0) => SlotState::Ready(gathered_reply(endpoint, mine.into_iter().collect(), limit)),
                (mine, left) => SlotState::Gathering { left, parts: mine.into_iter().collect(), limit },
            }
        } else {
            let forced_by = (endpoint == Endpoint::ForceRelease).then_some(*cx.peer);
            match svc.submit(key, &req) {
                Some(reply) => {
                    if endpoint == Endpoint::ForceRelease {
                        log_forced(forced_by, &reply);
                    }
                    SlotState::Ready(lock_reply(endpoint, &reply))
                }
                None => SlotState::Pending { waits: waits(&req), forced_by },
            }
        };
        let acquired = match &req {
            Request::Acquire { resource, owner, .. } => Some((resource.as_ref(), owner.as_ref())),
            _ => None,
        };
        match state {
            SlotState::Ready(response) if self.order.is_empty() => {
                self.encode(cx, endpoint, &response, framing, acquired, out, close)
            }
            state => {
                self.gathers += usize::from(gathers);
                let names = acquired.map(|(r, o)| (r.into(), o.into()));
                let at = self.slots.insert(Slot { endpoint, framing, since, state, names });
                debug_assert_eq!(at, key);
                self.order.push_back(key);
            }
        }
    }

    /// Answers a request that needs no lock work, in its turn.
    fn answer(
        &mut self,
        cx: &Context<'_>,
        response: Response,
        framing: Framing,
        since: Instant,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        if self.order.is_empty() {
            self.encode(cx, Endpoint::Acquire, &response, framing, None, out, close);
        } else {
            let state = SlotState::Ready(response);
            let slot = Slot { endpoint: Endpoint::Acquire, framing, since, state, names: None };
            let key = self.slots.insert(slot);
            self.order.push_back(key);
        }
    }

    /// Writes out the answers at the front that are ready.
    fn drain(&mut self, cx: &Context<'_>, out: &mut Vec<u8>, close: &mut bool) {
        while let Some(&key) = self.order.front() {
            if !matches!(self.slots[key].state, SlotState::Ready(_)) {
                break;
            }
            self.order.pop_front();
            let slot = self.slots.remove(key);
            self.gathers -= usize::from(matches!(slot.endpoint, Endpoint::List | Endpoint::Metrics));
            if let SlotState::Ready(response) = &slot.state {
                let names = slot.names.as_ref().map(|(r, o)| (&**r, &**o));
                self.encode(cx, slot.endpoint, response, slot.framing, names, out, close);
            }
        }
    }

    /// Writes an answer; a grant is noted with the connection (see [`Context::granted`]).
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        cx: &Context<'_>,
        endpoint: Endpoint,
        response: &Response,
        framing: Framing,
        acquired: Option<(&str, &str)>,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        response.encode(out, framing.keep_alive, framing.head_only, &cx.date);
        if let (Endpoint::Acquire, Some(token), Some((resource, owner))) =
            (endpoint, response.token, acquired)
        {
            cx.granted(out.len(), resource, owner, token);
        }
        if !response.keeps_alive(framing.keep_alive) {
            *close = true;
        }
    }
}

/// Whether `req` is an acquire that may wait.
fn waits(req: &BodyRequest<'_>) -> bool {
    matches!(req, Request::Acquire { wait, .. } if *wait > 0)
}

/// Logs the outcome of a forced release asked by the client at `by`: the lock's name stays
/// out, as in every log line; the token says which lease was ended.
fn log_forced(by: Option<SocketAddr>, reply: &Reply) {
    let by = shown(by);
    match reply {
        Reply::Done { token } => crate::log!(
            Level::Warn,
            [peer = &by, token = *token],
            "forced release asked by {by}: freed a lock (its lease of token {token})"
        ),
        other => {
            let outcome = match other {
                Reply::NotFound => "nobody held the lock",
                Reply::TokenMismatch => "the lock is held under another token",
                Reply::Unavailable => "refused: the log cannot be written",
                _ => "nothing was freed",
            };
            crate::log!(Level::Warn, [peer = &by], "forced release asked by {by}: {outcome}");
        }
    }
}

/// A client's address for a log line.
fn shown(by: Option<SocketAddr>) -> String {
    by.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string())
}
