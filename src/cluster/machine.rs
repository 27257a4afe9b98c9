//! The state machine every member applies: recovery's fold ([`Replay`]) over committed
//! batches, with the rule that a batch counts only under the leadership it was decided in (the
//! module docs of [`super`]). openraft's `RaftStateMachine`, with its snapshots.
//!
//! # Snapshots
//! A snapshot is the state at a log index, in the single server's snapshot format
//! ([`encode_snapshot`]: `Tokens`, sessions, every lock's `Grant`, `SnapshotEnd`) behind one
//! header batch (bincode: last applied log id, membership, the leadership term of the last
//! `Lead`), all in `store::record`'s batch framing. Locks go in token order and sessions in id
//! order, so two members with the same state write the same bytes. The current snapshot is
//! kept in `DATA_DIR/raft/snapshot`, replaced atomically (write, sync, rename, sync the
//! directory) before openraft is told it exists, since openraft purges the log it covers; on
//! start the state machine is that snapshot, and the log after it is applied again as it
//! commits.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{HeldLock, LeaderStart, Member, TypeConfig};
use crate::log::Level;
use crate::store::dir::{StoreError, encode_snapshot, sync_dir, write_durably};
use crate::store::record::{self, CONNECTION_SESSION, Record, Records};
use crate::store::recovery::Replay;

/// The current snapshot's file.
const SNAPSHOT: &str = "snapshot";

type Id = LogId<u64>;

/// The state machine: shared between openraft (which applies and snapshots) and the handle
/// (which reads a new leader's start).
#[derive(Clone)]
pub struct Machine {
    state: Arc<tokio::sync::Mutex<State>>,
    /// Serializes snapshot files, and holds the last one's log id.
    files: Arc<tokio::sync::Mutex<Option<Id>>>,
    dir: Arc<PathBuf>,
}

/// What the machine holds.
#[derive(Default)]
pub struct State {
    replay: Replay,
    /// The term of the last `Lead` applied (0: none yet).
    lead_term: u64,
    last_applied: Option<Id>,
    membership: StoredMembership<u64, Member>,
    current: Option<Stored>,
}

/// The current snapshot.
#[derive(Clone)]
struct Stored {
    meta: SnapshotMeta<u64, Member>,
    bytes: Arc<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    last_applied: Option<Id>,
    membership: StoredMembership<u64, Member>,
    lead_term: u64,
}

/// Whether a batch's records begin with `Lead`.
fn is_lead(records: &[u8]) -> bool {
    matches!(Records::new(records).next(), Some(Ok(Record::Lead { .. })))
}

impl State {
    /// Applies one committed entry.
    pub fn apply(&mut self, entry: &Entry<TypeConfig>) {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone())
            }
            EntryPayload::Normal(batch) => {
                // Decided under another leadership than the one that logged it (a deposed
                // leader's batch, re-proposed after it led again), or under one whose `Lead`
                // is not the last: dropped, alike on every member.
                if entry.log_id.leader_id.term != batch.term {
                    return;
                }
                if is_lead(&batch.records) {
                    self.lead_term = batch.term;
                } else if batch.term != self.lead_term {
                    return;
                }
                let folded = self.replay.batch(&record::Batch {
                    seq: entry.log_id.index,
                    at: batch.at,
                    body: &batch.records,
                });
                if let Err(reason) = folded {
                    // The records before the bad one were applied, the same on every member.
                    crate::log!(
                        Level::Error,
                        "log entry {} holds a record that cannot be read: {reason}",
                        entry.log_id
                    );
                }
            }
        }
    }

    /// The whole state as snapshot bytes (deterministic).
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            lead_term: self.lead_term,
        };
        let mut out = Vec::new();
        record::encode_batch(&mut out, 0, 0, &bincode::serialize(&header).expect("the header serializes"));
        let mut grants: Vec<Record<'_>> = self.replay.grants().collect();
        grants.sort_by_key(|g| match g {
            Record::Grant { token, .. } => *token,
            _ => 0,
        });
        let mut sessions: Vec<(u64, u64)> = self.replay.sessions().collect();
        sessions.sort_unstable();
        let max = self.replay.max_session();
        let ended = (max > 0 && !sessions.iter().any(|&(id, _)| id == max)).then_some(max);
        out.extend(encode_snapshot(
            grants.into_iter(),
            sessions.into_iter(),
            ended,
            self.replay.next_token(),
            self.replay.clock(),
        ));
        out
    }

    /// A state from snapshot bytes.
    pub fn decode(bytes: &[u8]) -> Result<State, String> {
        let decoded =
            record::decode_file(bytes).map_err(|d| format!("damaged at byte {} ({})", d.offset, d.reason))?;
        if decoded.good < bytes.len() {
            return Err(format!("cut short at byte {}", decoded.good));
        }
        let (head, batches) = decoded.batches.split_first().ok_or("empty")?;
        let header: Header = bincode::deserialize(head.body).map_err(|e| format!("a bad header: {e}"))?;
        let whole = batches.last().is_some_and(|b| {
            Records::new(b.body).last().is_some_and(|r| matches!(r, Ok(Record::SnapshotEnd { .. })))
        });
        if !whole {
            return Err("not a whole snapshot (no end record)".into());
        }
        let mut replay = Replay::new();
        for b in batches {
            replay.batch(b).map_err(|e| format!("a record that cannot be read: {e}"))?;
        }
        Ok(State {
            replay,
            lead_term: header.lead_term,
            last_applied: header.last_applied,
            membership: header.membership,
            current: None,
        })
    }

    fn meta(&self) -> SnapshotMeta<u64, Member> {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: snapshot_id(self.last_applied),
        }
    }

    /// A new leader's start: everything held now, which (right after its `Lead`) is in the
    /// `Lead`'s clock.
    pub fn leader_start(&self, term: u64) -> LeaderStart {
        let at = self.replay.clock();
        let mut locks: Vec<HeldLock> = self
            .replay
            .grants()
            .filter_map(|g| match g {
                Record::Grant { token, deadline, session, resource, owner }
                    if session != CONNECTION_SESSION && deadline.is_none_or(|d| d > at) =>
                {
                    Some(HeldLock {
                        resource: resource.into(),
                        owner: owner.into(),
                        token,
                        deadline,
                        session,
                    })
                }
                _ => None,
            })
            .collect();
        locks.sort_unstable_by_key(|l| l.token);
        let mut sessions: Vec<(u64, u64)> = self.replay.sessions().collect();
        sessions.sort_unstable();
        LeaderStart {
            term,
            at,
            locks,
            sessions,
            next_token: self.replay.next_token(),
            max_session: self.replay.max_session(),
        }
    }

    /// The last entry applied.
    pub fn last_applied(&self) -> Option<Id> {
        self.last_applied
    }
}

/// Names a snapshot by the log id it reaches: equal states, equal names.
fn snapshot_id(last: Option<Id>) -> String {
    match last {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => "empty".into(),
    }
}

/// Opens the state machine of `dir` (the raft directory): its snapshot, if it has one.
pub fn open(dir: &Path) -> Result<Machine, StoreError> {
    let path = dir.join(SNAPSHOT);
    let mut state = State::default();
    match std::fs::read(&path) {
        Ok(bytes) => {
            state = State::decode(&bytes).map_err(|reason| StoreError::Unreadable {
                path: path.clone(),
                reason: format!("not a snapshot this version reads: {reason}"),
            })?;
            state.current = Some(Stored { meta: state.meta(), bytes: Arc::new(bytes) });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(StoreError::Io { path, error }),
    }
    let last = state.last_applied;
    Ok(Machine {
        state: Arc::new(tokio::sync::Mutex::new(state)),
        files: Arc::new(tokio::sync::Mutex::new(last)),
        dir: Arc::new(dir.to_owned()),
    })
}

fn snapshot_error(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageError::from_io_error(
        ErrorSubject::Snapshot(None),
        ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

impl Machine {
    /// Whether it holds nothing at all (no snapshot, nothing applied).
    pub async fn is_empty(&self) -> bool {
        self.state.lock().await.last_applied.is_none()
    }

    /// A new leader's start, read off the thread (a pass over every lock).
    pub async fn leader_start(&self, term: u64) -> LeaderStart {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.blocking_lock().leader_start(term))
            .await
            .expect("reading the leader's start panicked")
    }

    /// The state's snapshot bytes and the last entry applied (tests compare members by them).
    #[cfg(test)]
    pub async fn digest(&self) -> (Option<Id>, Vec<u8>) {
        let st = self.state.lock().await;
        (st.last_applied, st.encode())
    }

    /// Makes `bytes` the snapshot file, unless a newer one is there already; returns whether
    /// it did.
    async fn persist(&self, last: Option<Id>, bytes: Arc<Vec<u8>>) -> Result<bool, StorageError<u64>> {
        let mut files = self.files.lock().await;
        if files.is_some() && *files > last {
            return Ok(false);
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
            write_durably(&tmp, &bytes)?;
            let path = dir.join(SNAPSHOT);
            std::fs::rename(&tmp, &path).map_err(|error| StoreError::Io { path, error })?;
            sync_dir(&dir)
        })
        .await
        .map_err(snapshot_error)?
        .map_err(snapshot_error)?;
        *files = last;
        Ok(true)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let state = self.state.clone();
        // A pass over every lock: off the consensus thread, which keeps heartbeating.
        let (meta, bytes) = tokio::task::spawn_blocking(move || {
            let st = state.blocking_lock();
            (st.meta(), Arc::new(st.encode()))
        })
        .await
        .map_err(snapshot_error)?;
        // Durable before openraft learns of it: it purges the log the snapshot covers.
        self.persist(meta.last_log_id, bytes.clone()).await?;
        let mut st = self.state.lock().await;
        if st.current.as_ref().is_none_or(|c| c.meta.last_log_id <= meta.last_log_id) {
            st.current = Some(Stored { meta: meta.clone(), bytes: bytes.clone() });
        }
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes.to_vec())) })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<Id>, StoredMembership<u64, Member>), StorageError<u64>> {
        let st = self.state.lock().await;
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.state.lock().await;
        let mut applied = Vec::new();
        for entry in entries {
            st.apply(&entry);
            applied.push(());
        }
        Ok(applied)
    }

    async fn get_snapshot_builder(&mut self) -> Machine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = Arc::new(snapshot.into_inner());
        let decoding = bytes.clone();
        let mut state = tokio::task::spawn_blocking(move || State::decode(&decoding))
            .await
            .map_err(snapshot_error)?
            .map_err(|e| snapshot_error(format!("the snapshot received is {e}")))?;
        if state.last_applied != meta.last_log_id {
            return Err(snapshot_error("the snapshot received does not reach the log id it names"));
        }
        self.persist(meta.last_log_id, bytes.clone()).await?;
        state.current = Some(Stored { meta: meta.clone(), bytes });
        *self.state.lock().await = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let st = self.state.lock().await;
        Ok(st
            .current
            .as_ref()
            .map(|c| Snapshot { meta: c.meta.clone(), snapshot: Box::new(Cursor::new(c.bytes.to_vec())) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::cluster::{Batch, LEAD_GRACE_MS};

    fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload }
    }

    fn batch(term: u64, at: u64, rs: &[Record<'_>]) -> EntryPayload<TypeConfig> {
        let mut records = Vec::new();
        rs.iter().for_each(|r| record::encode(&mut records, r));
        EntryPayload::Normal(Batch { term, at, records })
    }

    fn lead(term: u64, at: u64) -> EntryPayload<TypeConfig> {
        batch(term, at, &[Record::Lead { at, grace_ms: LEAD_GRACE_MS }])
    }

    fn grant(token: u64, deadline: Option<u64>, resource: &str) -> Record<'_> {
        Record::Grant { token, deadline, session: 0, resource, owner: "o" }
    }

    fn log() -> Vec<Entry<TypeConfig>> {
        let members = Membership::new(vec![[1, 2].into()], None);
        vec![
            entry(1, 1, EntryPayload::Membership(members)),
            entry(1, 2, EntryPayload::Blank),
            entry(1, 3, lead(1, 100)),
            entry(1, 4, batch(1, 100, &[grant(5, Some(400), "b"), grant(1, None, "a")])),
            entry(
                1,
                5,
                batch(1, 200, &[Record::SessionOpen { id: 3, timeout_ms: 9_000 }, grant(7, Some(250), "c")]),
            ),
        ]
    }

    #[test]
    fn equal_logs_give_equal_bytes_and_the_bytes_fold_back_into_the_state() {
        let (mut one, mut two) = (State::default(), State::default());
        for e in log() {
            one.apply(&e);
        }
        // The same entries, applied one by one in another state: the same bytes.
        log().iter().for_each(|e| two.apply(e));
        let bytes = one.encode();
        assert!(bytes == two.encode());
        let back = State::decode(&bytes).unwrap();
        assert!(back.encode() == bytes);
        assert_eq!(back.last_applied(), one.last_applied());
        assert_eq!(back.leader_start(1), one.leader_start(1));
        // Cut short or damaged: refused.
        assert!(State::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(State::decode(&[]).is_err());
    }

    #[test]
    fn a_batch_counts_only_under_the_leadership_it_was_decided_in() {
        let mut st = State::default();
        log().iter().for_each(|e| st.apply(e));
        let tokens = |st: &State| st.leader_start(0).locks.iter().map(|l| l.token).collect::<Vec<_>>();
        assert_eq!(tokens(&st), [1, 5, 7]);
        // Logged in term 2 but decided in term 1 (a deposed leader that led again): dropped.
        st.apply(&entry(2, 6, batch(1, 210, &[Record::Release { token: 1 }])));
        // Decided in term 2, but no Lead of term 2 yet: dropped.
        st.apply(&entry(2, 7, batch(2, 210, &[Record::Release { token: 1 }])));
        // A Lead logged in another term than its own: dropped too.
        st.apply(&entry(3, 8, lead(2, 300)));
        assert_eq!(tokens(&st), [1, 5, 7]);
        // Term 3's Lead, then its batch: applied.
        st.apply(&entry(3, 9, lead(3, 1_000)));
        st.apply(&entry(3, 10, batch(3, 1_000, &[Record::Release { token: 1 }])));
        assert_eq!(tokens(&st), [5, 7]);
        assert_eq!(st.last_applied().map(|l| l.index), Some(10));
    }

    #[test]
    fn a_leader_s_start_gives_every_running_lease_what_it_had_left_plus_the_grace() {
        let mut st = State::default();
        log().iter().for_each(|e| st.apply(e));
        // The last batch was at 200: b had 200 ms left, c 50; the new leader's clock reads 7.
        st.apply(&entry(2, 6, lead(2, 7)));
        let start = st.leader_start(2);
        assert_eq!((start.term, start.at, start.next_token, start.max_session), (2, 7, 8, 3));
        assert_eq!(start.sessions, [(3, 9_000)]);
        let deadlines: Vec<(u64, Option<u64>)> = start.locks.iter().map(|l| (l.token, l.deadline)).collect();
        assert_eq!(
            deadlines,
            [(1, None), (5, Some(7 + 200 + LEAD_GRACE_MS)), (7, Some(7 + 50 + LEAD_GRACE_MS))]
        );
    }
}
