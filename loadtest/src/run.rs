//! A run: connects, drives every connection from one thread (a current-thread tokio runtime,
//! so the generator is exactly one core however many connections it has), prints a progress
//! line each second, stops by itself at the deadline or the request bound, and gathers the
//! [`Report`].
//!
//! The closed loop is one task per connection: top up to `depth` requests in flight in one
//! write, read, take every complete reply, repeat. The open loop is two tasks per
//! connection: a writer that sends each request at its intended time (see [`schedule`]) and a
//! reader that measures each reply from that time. Replies are matched to requests by order,
//! as HTTP/1.1 and RESP answer, or by id, as the wire protocol may answer out of order.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, LocalSet};

use crate::cli::{Load, Plan, Target};
use crate::cpu;
use crate::proto::http::HttpClient;
use crate::proto::redis::{self, RedisClient, Value};
use crate::proto::wire::{self, WireClient};
use crate::proto::{IN_ORDER, Outcome, Protocol};
use crate::schedule::{self, Wait};
use crate::stats::{Latency, Report, Stats, describe_reply, progress_line};
use crate::workload::{Event, Op, OpKind, Script, Step, Workload};

/// Bytes each connection reads into; at least one whole reply of the largest kind accepted
/// (an HTTP head of 8 KiB plus a body of 64 KiB).
pub const READ_BUF_BYTES: usize = 128 * 1024;

/// Below this much free space at the end of the read buffer, unparsed bytes move to its front
/// before the next read, so reads stay large.
pub const MIN_READ_BYTES: usize = 16 * 1024;

/// How long a run waits, after it stops sending, for the replies still in flight; those that
/// do not come count as errors (a server that stopped answering).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for one connection to be accepted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Open loop: most requests one connection leaves unanswered before it stops sending (and
/// lets the lateness show in the send lag and the latency), so an overloaded server cannot
/// make the generator buffer without bound.
pub const MAX_OPEN_IN_FLIGHT: usize = 4096;

/// Open loop: how long a connection that hit [`MAX_OPEN_IN_FLIGHT`] waits before looking
/// again.
pub const FULL_BACKOFF: Duration = Duration::from_millis(1);

/// Why a run could not be made at all (as opposed to errors counted during it).
#[derive(Debug)]
pub enum RunError {
    /// The runtime could not be built.
    Runtime(io::Error),
    /// A connection could not be opened.
    Connect(SocketAddr, io::Error),
    /// Preparing the server failed (loading the Redis release script).
    Setup(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            RunError::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            RunError::Setup(why) => write!(f, "cannot prepare the server: {why}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs `plan` to the end on the calling thread and reports.
pub fn run(plan: &Plan) -> Result<Report, RunError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RunError::Runtime)?;
    LocalSet::new().block_on(&runtime, drive(plan))
}

async fn drive(plan: &Plan) -> Result<Report, RunError> {
    match plan.target {
        Target::Http | Target::Health => {
            let (host, secret, ttl, wait) =
                (plan.host.clone(), plan.secret.clone(), plan.ttl_ms, plan.wait_ms);
            drive_with(plan, move |conn| HttpClient::new(&host, &secret, ttl, wait, conn)).await
        }
        Target::Redis => {
            let ttl = plan.ttl_ms.unwrap_or(redis::DEFAULT_TTL_MS);
            drive_with(plan, move |conn| RedisClient::new(ttl, conn)).await
        }
        Target::Wire => {
            let (ttl, wait) = (plan.ttl_ms, plan.wait_ms);
            drive_with(plan, move |conn| WireClient::new(ttl, wait, conn)).await
        }
    }
}

/// A request in flight: what it was, when it was sent (closed loop) or due (open loop), and
/// the id its reply will carry.
#[derive(Clone, Copy, Debug)]
struct Pending {
    kind: OpKind,
    at: Instant,
    id: u32,
}

/// Where in `pending` (oldest first) the request a reply with `id` answers is.
fn answered(pending: &VecDeque<Pending>, id: u32) -> Option<usize> {
    if id == IN_ORDER {
        (!pending.is_empty()).then_some(0)
    } else {
        // Out-of-order answers are few: the one sought is nearly always at the front.
        pending.iter().position(|p| p.id == id)
    }
}

/// A CPU sample at the start of the measured window.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: Instant,
    server: Option<cpu::CpuTime>,
    generator: Option<cpu::CpuTime>,
    machine: Option<cpu::MachineTime>,
}

impl CpuSample {
    fn take(pid: Option<u32>) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            server: pid.and_then(cpu::process_cpu),
            generator: cpu::own_cpu(),
            machine: cpu::machine_cpu(),
        }
    }
}

/// What every task of a run shares (one thread: `Cell`s and a `RefCell`, never borrowed across
/// an `.await`).
struct Shared {
    start: Instant,
    warmup_end: Instant,
    deadline: Instant,
    /// Requests the run may still send.
    budget: Cell<u64>,
    /// Requests sent and not yet answered (or given up on).
    in_flight: Cell<u64>,
    /// When the last reply of the measured window arrived.
    last_reply: Cell<Option<Instant>>,
    /// Hold-and-release: each hot name's hand-off in progress.
    names: RefCell<Vec<HotName>>,
    stats: RefCell<Stats>,
}

/// A hot name of the hold-and-release workload, as the hand-off measurement follows it.
#[derive(Clone, Copy, Debug, Default)]
struct HotName {
    /// When its release was sent while another connection was trying for it (and not granted
    /// since): a release nobody waits for starts no hand-off, or the next grant, whenever
    /// someone comes along, would count the idle time between.
    released_at: Option<Instant>,
    /// Connections trying for it: between a cycle's first acquire and its grant.
    contenders: u32,
}

impl Shared {
    /// Whether new cycles should no longer start.
    fn stopping(&self, now: Instant) -> bool {
        now >= self.deadline || self.budget.get() == 0
    }

    /// Counts one request sent against the budget (requests finishing a cycle are sent even
    /// when it is spent, so the budget can be overrun by one per connection).
    fn spend(&self) {
        self.budget.set(self.budget.get().saturating_sub(1));
    }

    fn measured(&self, at: Instant) -> bool {
        at >= self.warmup_end
    }

    /// Follows a script's change of the name it tries for (from `before` to `after`).
    fn note_wants(&self, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        let mut names = self.names.borrow_mut();
        if let Some(n) = before.and_then(|k| names.get_mut(k as usize)) {
            n.contenders -= 1;
        }
        if let Some(n) = after.and_then(|k| names.get_mut(k as usize)) {
            n.contenders += 1;
        }
    }

    /// Gives up on `pending` requests of a connection that failed.
    fn lose(&self, pending: &VecDeque<Pending>, why: String) {
        let lost = pending.len() as u64;
        let measured = pending.iter().filter(|p| self.measured(p.at)).count() as u64;
        self.in_flight.set(self.in_flight.get() - lost);
        self.stats.borrow_mut().record_lost(lost, measured, || why);
    }

    /// Takes every complete reply at the front of `input`, each for the request in `pending`
    /// it answers (the oldest, or the one its id names). Errors end the connection: the bytes
    /// after a bad one cannot be trusted.
    fn take_replies<P: Protocol>(
        &self,
        proto: &P,
        input: &mut InBuf,
        pending: &mut VecDeque<Pending>,
        script: Option<&mut Script>,
        now: Instant,
    ) -> Result<(), String> {
        let mut stats = self.stats.borrow_mut();
        let mut script = script;
        while !pending.is_empty() {
            let kind_of = |id| answered(pending, id).map(|i| pending[i].kind);
            let (reply, p) = match proto.parse(input.data(), kind_of) {
                Ok(Some(reply)) => {
                    let i = answered(pending, reply.id).expect("the parser found its request");
                    (reply, pending.remove(i).expect("an index in range"))
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(format!("unparsable reply ({e}): {}", describe_reply(input.data())));
                }
            };
            let measured = self.measured(p.at);
            stats.record(p.kind, reply.outcome, now.saturating_duration_since(p.at), measured);
            if reply.outcome == Outcome::Error {
                stats.note_error(|| describe_reply(&input.data()[..reply.len]));
            }
            if let Some(script) = script.as_deref_mut() {
                let wanted = script.wants();
                let event = script.on_reply(p.kind, reply.outcome, now);
                self.note_wants(wanted, script.wants());
                match event {
                    Some(Event::Granted { key, waited }) => {
                        stats.record_wait(waited, measured);
                        if let Some(freed) = self.names.borrow_mut()[key as usize].released_at.take() {
                            stats.record_handoff(now.saturating_duration_since(freed), measured);
                        }
                    }
                    Some(Event::Released { .. }) | None => {}
                }
            }
            if measured {
                self.last_reply.set(Some(now));
            }
            input.consume(reply.len);
            self.in_flight.set(self.in_flight.get() - 1);
        }
        if pending.is_empty() && !input.data().is_empty() {
            return Err(format!("bytes with no request in flight: {}", describe_reply(input.data())));
        }
        Ok(())
    }
}

/// A connection's read buffer: bytes `start..end` are read and not yet parsed.
struct InBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl InBuf {
    fn new() -> InBuf {
        InBuf { buf: vec![0; READ_BUF_BYTES].into_boxed_slice(), start: 0, end: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into, or `None` if one unparsed reply fills the whole buffer.
    fn spare(&mut self) -> Option<&mut [u8]> {
        if self.buf.len() - self.end < MIN_READ_BYTES && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return None;
        }
        Some(&mut self.buf[self.end..])
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

/// Reads once into `input`; `Err` describes why the connection is over.
async fn read_some<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    input: &mut InBuf,
    in_flight: usize,
) -> Result<(), String> {
    let Some(spare) = input.spare() else {
        return Err(format!("a reply larger than {READ_BUF_BYTES} bytes"));
    };
    match reader.read(spare).await {
        Ok(0) => Err(format!("server closed the connection with {in_flight} requests in flight")),
        Ok(n) => {
            input.filled(n);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, RunError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| RunError::Connect(addr, io::ErrorKind::TimedOut.into()))?
        .map_err(|e| RunError::Connect(addr, e))?;
    // Requests must leave when written, not when Nagle's algorithm decides.
    stream.set_nodelay(true).map_err(|e| RunError::Connect(addr, e))?;
    Ok(stream)
}

/// Loads the Redis release script, checking that Redis names it [`redis::RELEASE_SHA1`] as
/// the `EVALSHA` requests do.
async fn load_release_script(stream: &mut TcpStream) -> Result<(), RunError> {
    let setup = |e: String| RunError::Setup(format!("SCRIPT LOAD: {e}"));
    stream.write_all(&redis::script_load_request()).await.map_err(|e| setup(e.to_string()))?;
    let mut input = InBuf::new();
    loop {
        read_some(stream, &mut input, 1).await.map_err(setup)?;
        let data = input.data();
        match redis::parse(data) {
            Ok(None) => continue,
            Ok(Some(f)) => {
                return match f.value {
                    Value::Bulk { start, end } if &data[start..end] == redis::RELEASE_SHA1.as_bytes() => {
                        Ok(())
                    }
                    _ => Err(setup(format!("unexpected reply {}", describe_reply(data)))),
                };
            }
            Err(e) => return Err(setup(e.to_string())),
        }
    }
}

/// Opens a wire-protocol connection: the preface and `HELLO`, answered `HELLO_OK`.
async fn hello(stream: &mut TcpStream, secret: &str) -> Result<(), RunError> {
    let setup = |e: String| RunError::Setup(format!("HELLO: {e}"));
    stream.write_all(&wire::handshake(secret)).await.map_err(|e| setup(e.to_string()))?;
    let mut input = InBuf::new();
    loop {
        read_some(stream, &mut input, 1).await.map_err(setup)?;
        if let Some(n) = wire::hello_answered(input.data()).map_err(setup)? {
            if input.data().len() > n {
                return Err(setup("bytes after HELLO_OK".into()));
            }
            return Ok(());
        }
    }
}

async fn drive_with<P, F>(plan: &Plan, make: F) -> Result<Report, RunError>
where
    P: Protocol + Clone + 'static,
    F: Fn(usize) -> P,
{
    let conns = plan.load.connections();
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        streams.push(connect(plan.addr).await?);
    }
    let releases = matches!(
        plan.workload,
        Workload::Uncontended { .. } | Workload::Contended { .. } | Workload::Hold { .. }
    );
    if plan.target == Target::Redis && releases {
        load_release_script(&mut streams[0]).await?;
    }
    if plan.target == Target::Wire {
        for stream in &mut streams {
            hello(stream, &plan.secret).await?;
        }
    }

    let start = Instant::now();
    let warmup_end = start + plan.warmup;
    let shared = Rc::new(Shared {
        start,
        warmup_end,
        deadline: warmup_end + plan.duration,
        budget: Cell::new(plan.max_requests),
        in_flight: Cell::new(0),
        last_reply: Cell::new(None),
        names: RefCell::new(match plan.workload {
            Workload::Hold { hot, .. } => vec![HotName::default(); hot as usize],
            _ => Vec::new(),
        }),
        stats: RefCell::new(Stats::new()),
    });

    let first_sample = Rc::new(Cell::new(None));
    let sampler = {
        let (first_sample, pid) = (first_sample.clone(), plan.server_pid);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(warmup_end.into()).await;
            first_sample.set(Some(CpuSample::take(pid)));
        })
    };
    let progress = plan.progress.then(|| tokio::task::spawn_local(report_progress(shared.clone())));

    let mut tasks = Vec::with_capacity(conns);
    let mut readers = Vec::new();
    for (conn, stream) in streams.into_iter().enumerate() {
        let script = Script::new(plan.workload, plan.seed, conn);
        match plan.load {
            Load::Closed { depth, .. } => tasks.push(tokio::task::spawn_local(closed_loop(
                make(conn),
                stream,
                script,
                depth,
                shared.clone(),
            ))),
            Load::Open { rate, batch, .. } => {
                let schedule = Schedule { conn, conns, rate, batch };
                let (writer, reader) = open_loop(make(conn), stream, script, schedule, shared.clone());
                tasks.push(writer);
                readers.push(reader);
            }
        }
    }

    // Senders stop by themselves at the deadline; give replies DRAIN_TIMEOUT more.
    let hard_stop = tokio::time::Instant::from_std(shared.deadline + DRAIN_TIMEOUT);
    for task in &mut tasks {
        if tokio::time::timeout_at(hard_stop, &mut *task).await.is_err() {
            task.abort();
        }
    }
    while shared.in_flight.get() > 0 && tokio::time::Instant::now() < hard_stop {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for task in readers.iter().chain(progress.iter()).chain([&sampler]) {
        task.abort();
    }
    let lost = shared.in_flight.get();
    if lost > 0 {
        shared.in_flight.set(0);
        shared.stats.borrow_mut().record_lost(lost, lost, || {
            format!("{lost} requests unanswered {} s after the run stopped", DRAIN_TIMEOUT.as_secs())
        });
    }
    let end = CpuSample::take(plan.server_pid);
    Ok(report(plan, &shared, first_sample.get(), end))
}

fn report(plan: &Plan, shared: &Shared, first: Option<CpuSample>, end: CpuSample) -> Report {
    let stats = shared.stats.borrow();
    let elapsed = shared
        .last_reply
        .get()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(shared.warmup_end))
        .as_secs_f64();
    let requests = stats.measured.replies;
    let cpu_delta = |a: Option<cpu::CpuTime>, b: Option<cpu::CpuTime>| Some(b?.since(a?));
    let window = first.map(|f| end.at.saturating_duration_since(f.at).as_secs_f64());
    let server_cpu = first.and_then(|f| cpu_delta(f.server, end.server));
    let generator_cpu = first.and_then(|f| cpu_delta(f.generator, end.generator));
    let machine = first.and_then(|f| Some(end.machine?.since(f.machine?)));
    let share = |d: Duration| window.filter(|&w| w > 0.0).map(|w| d.as_secs_f64() / w);
    // Processes other than the server and the generator: the machine's process time less
    // theirs (without a server PID, the server counts as "other").
    let others = machine.map(|m| {
        let ours = server_cpu.map_or(Duration::ZERO, |t| t.total())
            + generator_cpu.map_or(Duration::ZERO, |t| t.total());
        m.processes.saturating_sub(ours)
    });
    let (connections, depth, rate) = match plan.load {
        Load::Closed { connections, depth } => (connections, depth, None),
        Load::Open { connections, rate, batch } => (connections, batch, Some(rate)),
    };
    Report {
        label: plan.label.clone(),
        target: plan.target.name(),
        addr: plan.addr.to_string(),
        workload: plan.workload.name(),
        mode: if rate.is_some() { "open" } else { "closed" },
        connections,
        depth,
        rate,
        ttl_ms: match plan.target {
            Target::Redis => Some(plan.ttl_ms.unwrap_or(redis::DEFAULT_TTL_MS)),
            _ => plan.ttl_ms,
        },
        warmup_s: plan.warmup.as_secs_f64(),
        elapsed_s: elapsed,
        requests,
        throughput: if elapsed > 0.0 { requests as f64 / elapsed } else { 0.0 },
        counts: stats.measured,
        first_error: stats.first_error.clone(),
        acquire_us: Latency::of(&stats.acquire),
        all_us: Latency::of(&stats.all),
        wait_us: Latency::of(&stats.wait),
        handoff_us: Latency::of(&stats.handoff),
        send_lag_us: Latency::of(&stats.send_lag),
        server_cpu_s: server_cpu.map(|t| t.total().as_secs_f64()),
        server_cpu_us_per_request: server_cpu
            .filter(|_| requests > 0)
            .map(|t| t.total().as_secs_f64() * 1e6 / requests as f64),
        server_user_us_per_request: server_cpu
            .filter(|_| requests > 0)
            .map(|t| t.user.as_secs_f64() * 1e6 / requests as f64),
        generator_cpu_share: generator_cpu
            .zip(window)
            .filter(|&(_, w)| w > 0.0)
            .map(|(t, w)| t.total().as_secs_f64() / w),
        generator_user_share: generator_cpu
            .zip(window)
            .filter(|&(_, w)| w > 0.0)
            .map(|(t, w)| t.user.as_secs_f64() / w),
        others_cpu_share: others.and_then(share),
        steal_share: machine.and_then(|m| share(m.steal)),
    }
}

/// Prints one progress line to stderr each second until aborted.
async fn report_progress(shared: Rc<Shared>) {
    let second = Duration::from_secs(1);
    let mut ticks = tokio::time::interval_at((shared.start + second).into(), second);
    let mut last = 0;
    loop {
        let now = ticks.tick().await.into_std();
        let stats = shared.stats.borrow();
        let replies = stats.all_time.replies;
        eprintln!("{}", progress_line(now - shared.start, replies - last, &stats, now < shared.warmup_end));
        last = replies;
    }
}

/// One closed-loop connection: keeps up to `depth` requests in flight until the run stops
/// and its script is between cycles.
async fn closed_loop<P: Protocol>(
    mut proto: P,
    mut stream: TcpStream,
    mut script: Script,
    depth: usize,
    shared: Rc<Shared>,
) {
    let mut out = Vec::with_capacity(4096);
    let mut input = InBuf::new();
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(depth);
    loop {
        let now = Instant::now();
        let stopping = shared.stopping(now);
        let before = pending.len();
        let mut wait = None;
        let mut releasing = None;
        while pending.len() < depth && (!stopping || script.mid_cycle()) {
            let wanted = script.wants();
            let step = script.next(now);
            shared.note_wants(wanted, script.wants());
            match step {
                Step::Send(op) => {
                    shared.spend();
                    if let Op::Release { key } = op {
                        releasing = Some(key);
                    }
                    let id = proto.encode(&op, &mut out);
                    pending.push_back(Pending { kind: op.kind(), at: now, id });
                }
                Step::Wait(d) => {
                    wait = Some(d);
                    break;
                }
                Step::AwaitReply => break,
            }
        }
        if pending.len() > before {
            let sent = Instant::now();
            for p in pending.range_mut(before..) {
                p.at = sent;
            }
            if let Some(key) = releasing {
                // Hold-and-release (the only workload that tracks names): the hand-off runs
                // from here, since the next holder's grant may well be read before this
                // release's own reply (the server answers both in one turn).
                if let Some(name) = shared.names.borrow_mut().get_mut(key as usize) {
                    name.released_at = (name.contenders > 0).then_some(sent);
                }
            }
            shared.in_flight.set(shared.in_flight.get() + (pending.len() - before) as u64);
            if let Err(e) = stream.write_all(&out).await {
                shared.lose(&pending, format!("write: {e}"));
                return;
            }
            out.clear();
        }
        if pending.is_empty() {
            match wait {
                Some(d) => {
                    tokio::time::sleep(d).await;
                    continue;
                }
                None => return,
            }
        }
        if let Err(why) = read_some(&mut stream, &mut input, pending.len()).await {
            shared.lose(&pending, why);
            return;
        }
        let now = Instant::now();
        if let Err(why) = shared.take_replies(&proto, &mut input, &mut pending, Some(&mut script), now) {
            shared.lose(&pending, why);
            return;
        }
    }
}

/// What an open-loop connection's writer and reader share.
struct OpenConn {
    pending: RefCell<VecDeque<Pending>>,
    /// The reader found the connection broken: the writer stops.
    broken: Cell<bool>,
}

/// One open-loop connection's place in the run's schedule.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    conn: usize,
    conns: usize,
    rate: u64,
    batch: usize,
}

impl Schedule {
    /// When this connection's `k`-th batch is due, from the start of the run.
    fn due(&self, k: u64) -> Duration {
        schedule::due(self.conn, k, self.conns, self.rate, self.batch)
    }
}

/// One open-loop connection: a writer sending on schedule and a reader measuring replies from
/// their intended times. Returns both tasks; the writer ends at the deadline, the reader is
/// ended by the run once nothing is in flight.
fn open_loop<P: Protocol + Clone + 'static>(
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
