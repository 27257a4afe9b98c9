//! The open loop: two tasks per connection, a writer that sends each batch at its intended
//! time (see [`schedule`]), late but never early if it cannot keep up, and a reader that
//! measures each reply from that intended time, so a server that falls behind shows in the
//! latency rather than slowing the load.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::conn::{InBuf, Pending, read_some};
use super::shared::Shared;
use crate::proto::Protocol;
use crate::schedule::{self, Wait};
use crate::workload::{Script, Step};

/// Most requests one connection leaves unanswered before it stops sending (and lets the
/// lateness show in the send lag and the latency), so an overloaded server cannot make the
/// generator buffer without bound.
pub const MAX_OPEN_IN_FLIGHT: usize = 4096;

/// How long a connection that hit [`MAX_OPEN_IN_FLIGHT`] waits before looking again.
pub const FULL_BACKOFF: Duration = Duration::from_millis(1);

/// What an open-loop connection's writer and reader share.
struct OpenConn {
    pending: RefCell<VecDeque<Pending>>,
    /// The reader found the connection broken: the writer stops.
    broken: Cell<bool>,
}

/// One open-loop connection's place in the run's schedule.
#[derive(Clone, Copy, Debug)]
pub(super) struct Schedule {
    /// This connection's number.
    pub(super) conn: usize,
    /// Connections in the run.
    pub(super) conns: usize,
    /// The run's requests per second, all connections together.
    pub(super) rate: u64,
    /// Requests per write, due at the same instant.
    pub(super) batch: usize,
}

impl Schedule {
    /// When this connection's `k`-th batch is due, from the start of the run.
    pub(super) fn due(&self, k: u64) -> Duration {
        schedule::due(self.conn, k, self.conns, self.rate, self.batch)
    }
}

/// One open-loop connection: a writer sending on schedule and a reader measuring replies from
/// their intended times. Returns both tasks; the writer ends at the deadline, the reader is
/// ended by the run once nothing is in flight.
pub(super) fn open_loop<P: Protocol + Clone + 'static>(
    proto: P,
    stream: TcpStream,
    script: Script,
    schedule: Schedule,
    shared: Rc<Shared>,
) -> (JoinHandle<()>, JoinHandle<()>) {
    let (mut rd, mut wr) = stream.into_split();
    let state = Rc::new(OpenConn { pending: RefCell::new(VecDeque::new()), broken: Cell::new(false) });
    let reader = {
        let (proto, state, shared) = (proto.clone(), state.clone(), shared.clone());
        tokio::task::spawn_local(async move {
            let mut input = InBuf::new();
            loop {
                let in_flight = state.pending.borrow().len();
                let mut result = read_some(&mut rd, &mut input, in_flight).await;
                if result.is_ok() {
                    let mut pending = state.pending.borrow_mut();
                    result = shared.take_replies(&proto, &mut input, &mut pending, None, Instant::now());
                }
                if let Err(why) = result {
                    shared.lose(&state.pending.borrow(), why);
                    state.pending.borrow_mut().clear();
                    state.broken.set(true);
                    return;
                }
            }
        })
    };
    let writer = tokio::task::spawn_local(async move {
        send_on_schedule(proto, &mut wr, script, schedule, shared, state).await;
        // Dropping the write half would send FIN, and a server may close the connection before
        // it has answered what is in flight; the socket closes when the reader ends.
        wr.forget();
    });
    (writer, reader)
}

/// The open-loop writer: sends each batch when it is due (late, never early, if it cannot
/// keep up), until the run stops.
async fn send_on_schedule<P: Protocol>(
    mut proto: P,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    mut script: Script,
    schedule: Schedule,
    shared: Rc<Shared>,
    state: Rc<OpenConn>,
) {
    let mut out = Vec::with_capacity(4096);
    let mut k = 0u64;
    loop {
        if state.broken.get() {
            return;
        }
        let now = Instant::now();
        let stopping = shared.stopping(now);
        let mut sent = 0u64;
        {
            let mut pending = state.pending.borrow_mut();
            let mut stats = shared.stats.borrow_mut();
            if stopping {
                // Finish the cycle at once, so that no lock is left held.
                if script.mid_cycle()
                    && let Step::Send(op) = script.next(now)
                {
                    let id = proto.encode(&op, &mut out);
                    pending.push_back(Pending { kind: op.kind(), at: now, id });
                    sent += 1;
                }
            } else {
                let since_start = now - shared.start;
                while pending.len() < MAX_OPEN_IN_FLIGHT && shared.budget.get() > 0 {
                    let due = schedule.due(k);
                    if due > since_start {
                        break;
                    }
                    let intended = shared.start + due;
                    for _ in 0..schedule.batch {
                        let Step::Send(op) = script.next(now) else {
                            break;
                        };
                        shared.spend();
                        let id = proto.encode(&op, &mut out);
                        pending.push_back(Pending { kind: op.kind(), at: intended, id });
                        stats.record_lag(now - intended, shared.measured(intended));
                        sent += 1;
                    }
                    k += 1;
                }
            }
        }
        if sent > 0 {
            shared.in_flight.set(shared.in_flight.get() + sent);
            if let Err(e) = wr.write_all(&out).await {
                let mut pending = state.pending.borrow_mut();
                shared.lose(&pending, format!("write: {e}"));
                pending.clear();
                state.broken.set(true);
                return;
            }
            out.clear();
            continue;
        }
        if stopping {
            return;
        }
        if state.pending.borrow().len() >= MAX_OPEN_IN_FLIGHT {
            tokio::time::sleep(FULL_BACKOFF).await;
            continue;
        }
        match schedule::wait(now - shared.start, schedule.due(k)) {
            Wait::Send => {}
            Wait::Spin => tokio::task::yield_now().await,
            Wait::Sleep(until) => {
                let until = (shared.start + until).min(shared.deadline);
                tokio::time::sleep_until(until.into()).await;
            }
        }
    }
}
