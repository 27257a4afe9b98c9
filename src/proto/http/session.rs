//! Drives one HTTP connection: frames requests out of the read buffer, routes them, submits
//! lock requests to the core, and writes the answers in request order. Pipelining: every
//! complete request in the buffer is served, and answers that are ready leave together; an
//! answer that must wait (a lock wait, another core) holds back only the ones behind it.
//! Records each request's service time in the core's histogram. A connection refused for
//! its secret [`MAX_AUTH_FAILURES`] times is closed after that answer. A forced release is
//! logged at warn with its outcome and the client's address (never the lock's name).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use slab::Slab;

use crate::api::{LockService, Reply, Request};
use crate::auth::MAX_AUTH_FAILURES;
use crate::log::Level;
use crate::proto::context::{self, Context};

use super::body::BodyRequest;
use super::endpoint::{self, gathered_reply, lock_reply};
use super::head::{self, Method};
use super::response::{CONTINUE, Response};
use super::route::{self, Endpoint, Refusal, Routed};

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
}

struct Slot {
    endpoint: Endpoint,
    framing: Framing,
    /// When the request arrived (for its service time).
    since: Instant,
    state: SlotState,
}

enum SlotState {
    /// Its reply has not come yet. A waiting acquire keeps its resource and owner, to withdraw
    /// it if the client goes away; a forced release, the client's address, to log its outcome.
    Pending {
        wait: Option<(Box<str>, Box<str>)>,
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
        while !*close && self.order.len() < cx.limits.max_in_flight {
            let rest = &buf[used..];
            let head = match head::parse(rest, cx.limits.max_head_bytes) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    self.answer(cx, endpoint::bad_head(e), CLOSING, since, out, close);
                    *close = true;
                    break;
                }
            };
            // httparse hands out the target as `&str`, so it is UTF-8.
            let target = std::str::from_utf8(&rest[head.target.clone()]).unwrap_or_default();
            let authorized = || head.secret.clone().is_some_and(|at| cx.secret.matches(&rest[at]));
            if head.content_length > cx.limits.max_body_bytes {
                self.answer(cx, endpoint::too_large(), CLOSING, since, out, close);
                *close = true;
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
                        *close = true;
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
                        *close = true;
                    }
                }
                Routed::Refused(refusal) => {
                    self.answer(cx, endpoint::refused(refusal), framing, since, out, close)
                }
                Routed::Lock(endpoint, req) => {
                    self.submit(svc, cx, endpoint, req, framing, since, out, close)
                }
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

    /// The connection is gone: withdraw whatever still waits. A forced release whose outcome
    /// has not come back is done or not all the same: it is logged as asked for.
    pub fn teardown(&mut self, svc: &mut impl LockService) {
        self.withdraw_waits(svc, || lock_reply(Endpoint::Acquire, &Reply::TimedOut));
        for (_, slot) in self.slots.iter() {
            if let (Endpoint::ForceRelease, SlotState::Pending { forced_by, .. }) =
                (slot.endpoint, &slot.state)
            {
                let by = shown(*forced_by);
                crate::log!(
                    Level::Warn,
                    [peer = &by],
                    "forced release asked by {by}: its client left before its outcome came back"
                );
            }
        }
    }

    fn withdraw_waits(&mut self, svc: &mut impl LockService, answer: impl Fn() -> Response) {
        for (key, slot) in self.slots.iter_mut() {
            if let SlotState::Pending { wait: Some((resource, owner)), .. } = &slot.state {
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
        let state = if req.resource().is_none() {
            let limit = if let Request::List { limit, .. } = &req { *limit } else { 0 };
            match svc.submit_all(key, &req) {
                (mine, 0) => SlotState::Ready(gathered_reply(endpoint, mine.into_iter().collect(), limit)),
                (mine, left) => SlotState::Gathering { left, parts: mine.into_iter().collect(), limit },
            }
        } else {
            let forced_by = (endpoint == Endpoint::ForceRelease).then(context::peer).flatten();
            match svc.submit(key, &req) {
                Some(reply) => {
                    if endpoint == Endpoint::ForceRelease {
                        log_forced(forced_by, &reply);
                    }
                    SlotState::Ready(lock_reply(endpoint, &reply))
                }
                None => SlotState::Pending { wait: waiting(&req), forced_by },
            }
        };
        match state {
            SlotState::Ready(response) if self.order.is_empty() => {
                self.encode(cx, &response, framing, out, close)
            }
            state => {
                let at = self.slots.insert(Slot { endpoint, framing, since, state });
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
            self.encode(cx, &response, framing, out, close);
        } else {
            let slot =
                Slot { endpoint: Endpoint::Acquire, framing, since, state: SlotState::Ready(response) };
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
            if let SlotState::Ready(response) = slot.state {
                self.encode(cx, &response, slot.framing, out, close);
            }
        }
    }

    fn encode(
        &self,
        cx: &Context<'_>,
        response: &Response,
        framing: Framing,
        out: &mut Vec<u8>,
        close: &mut bool,
    ) {
        response.encode(out, framing.keep_alive, framing.head_only, &cx.date);
        if !response.keeps_alive(framing.keep_alive) {
            *close = true;
        }
    }
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

/// What withdrawing a waiting acquire takes, if `req` is one.
fn waiting(req: &BodyRequest<'_>) -> Option<(Box<str>, Box<str>)> {
    match req {
        Request::Acquire { resource, owner, wait, .. } if *wait > 0 => {
            Some((resource.as_ref().into(), owner.as_ref().into()))
        }
        _ => None,
    }
}
