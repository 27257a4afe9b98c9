//! The closed loop: one task per connection that tops up to `depth` requests in flight in one
//! write, reads, takes every complete reply, and repeats, until the run stops and its script
//! is between cycles. Latency runs from the write; the server sets the pace.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::conn::{InBuf, Pending, Stream, read_some};
use super::shared::Shared;
use crate::op::Op;
use crate::proto::Protocol;
use crate::workload::{Script, Step};

/// One closed-loop connection: keeps up to `depth` requests in flight until the run stops
/// and its script is between cycles.
pub(super) async fn closed_loop<P: Protocol>(
    mut proto: P,
    mut stream: Stream,
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
                shared.note_release_sent(key, sent);
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
