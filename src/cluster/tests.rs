//! Members in one process, on loopback ports: bootstrap and election, order of application,
//! failover with the leader's start, restarts with and without data, membership changes. Each
//! wait is bounded ([`WAIT`]); nothing asserts how long anything took.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::network::{CallError, describe};
use super::wire::{self, Hello, Welcome};
use super::{Batch, ClusterConfig, Handle, HeldLock, LEAD_GRACE_MS, LeaderStart, NotLeader, Role, start};
use crate::auth::Secret;
use crate::store::record::{self, Record};

/// The longest any one wait may take before the test fails: far above an election on a loaded
/// two-core machine, so that only a real failure reaches it.
const WAIT: Duration = Duration::from_secs(30);
/// Between two looks at a condition that has no event to wait on.
const POLL: Duration = Duration::from_millis(10);

/// The cluster tests run one at a time: several clusters electing at once on two cores would
/// test the machine, not the code.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A directory under the system's temporary one, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ringlock-cluster-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `f`, failing the test after [`WAIT`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
}

/// Looks at `f` until it gives something, failing the test after [`WAIT`].
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    within(what, async {
        loop {
            if let Some(t) = f().await {
                return t;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Cluster {
    peers: BTreeMap<u64, String>,
    dirs: BTreeMap<u64, TempDir>,
    running: BTreeMap<u64, Handle>,
    /// Every member's clock, set by the test.
    now: Arc<AtomicU64>,
    snapshot_every: u64,
}

impl Cluster {
    fn new(name: &str, members: u64) -> Cluster {
        let peers: BTreeMap<u64, String> = (1..=members).map(|id| (id, free_port())).collect();
        let dirs = peers.keys().map(|&id| (id, TempDir::new(&format!("{name}-{id}")))).collect();
        Cluster {
            peers,
            dirs,
            running: BTreeMap::new(),
            now: Arc::new(AtomicU64::new(1_000)),
            snapshot_every: super::SNAPSHOT_EVERY_ENTRIES,
        }
    }

    fn config(&self, id: u64) -> ClusterConfig {
        let now = self.now.clone();
        let mut config = ClusterConfig::new(
            id,
            self.peers.clone(),
            format!("127.0.0.1:{}", 9000 + id),
            Secret::new("cluster-secret"),
            self.dirs[&id].0.clone(),
            Arc::new(move || now.load(Ordering::SeqCst)),
        );
        config.snapshot_every = self.snapshot_every;
        config
    }

    fn start(&mut self, id: u64) {
        let handle = start(self.config(id)).unwrap();
        self.running.insert(id, handle);
    }

    fn start_all(&mut self) {
        for id in self.peers.keys().copied().collect::<Vec<_>>() {
            self.start(id);
        }
    }

    fn stop(&mut self, id: u64) {
        self.running.remove(&id).expect("running").shutdown();
    }

    fn set_clock(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    fn handle(&self, id: u64) -> &Handle {
        &self.running[&id]
    }

    /// The one leader, once every running member follows it.
    async fn leader(&self) -> (u64, Arc<LeaderStart>) {
        until("one leader that every running member follows", async || {
            let roles: Vec<(u64, Role)> =
                self.running.iter().map(|(&id, h)| (id, h.roles().borrow().clone())).collect();
            let mut leaders = roles.iter().filter_map(|(id, r)| match r {
                Role::Leader(start) => Some((*id, start.clone())),
                Role::Follower { .. } => None,
            });
            let (id, start) = leaders.next()?;
            let followed = roles.iter().all(|(other, r)| match r {
                Role::Leader(_) => *other == id,
                Role::Follower { leader } => leader.as_ref().is_some_and(|m| m.raft_addr == self.peers[&id]),
            });
            followed.then_some((id, start))
        })
        .await
    }

    /// Waits until every running member has applied what `id` has, and returns its state.
    async fn same_state_as(&self, id: u64) -> Vec<u8> {
        let (applied, state) = self.handle(id).digest().await;
        for (&other, h) in &self.running {
            let theirs = until(&format!("member {other} applies up to {applied:?}"), async || {
                let (a, s) = h.digest().await;
                (a >= applied).then_some((a, s))
            })
            .await;
            if theirs.0 == applied {
                assert!(
                    theirs.1 == state,
                    "member {other} has another state than member {id} at {applied:?}"
                );
            }
        }
        state
    }
}

fn records(rs: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    rs.iter().for_each(|r| record::encode(&mut out, r));
    out
}

fn grant(token: u64, deadline: Option<u64>, resource: &str) -> Record<'_> {
    Record::Grant { token, deadline, session: 0, resource, owner: "w" }
}

/// Submits every batch at once (queued in order), then waits for every answer.
async fn submit_all(h: &Handle, batches: Vec<Batch>) -> Vec<Result<(), NotLeader>> {
    let pending: Vec<_> = batches.into_iter().map(|b| tokio::spawn(h.submit(b))).collect();
    let mut answers = Vec::new();
    for p in pending {
        answers.push(within("a submission's answer", p).await.unwrap());
    }
    answers
}

#[test]
fn the_handle_goes_to_any_thread() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Handle>();
}

#[tokio::test]
async fn three_members_elect_one_leader_and_apply_batches_in_the_same_order() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new("three", 3);
    c.start_all();
    let (lid, start) = c.leader().await;
    assert_eq!((start.locks.len(), start.next_token, start.at), (0, 1, 1_000));
    let leader = c.handle(lid);
    assert_eq!(leader.node_id(), lid);

    // Grants and releases in one order: r0 is granted, released and granted again, so the
    // state depends on the order (token 2 would be lost if the release came last).
    let batches: Vec<Batch> = (0..20u64)
        .map(|i| {
            let name = format!("r{}", i % 5);
            let body = if i % 5 == i % 10 {
                records(&[grant(i + 1, None, &name)])
            } else {
                records(&[Record::Release { token: i + 1 - 5 }, grant(i + 1, Some(60_000), &name)])
            };
            Batch { term: start.term, at: 1_000 + i, records: body }
        })
        .collect();
    assert!(submit_all(leader, batches).await.iter().all(Result::is_ok));
    let state = c.same_state_as(lid).await;
    assert!(!state.is_empty());

    // A follower refuses, naming the leader.
    let follower = c.running.keys().copied().find(|&id| id != lid).unwrap();
    let refused = c.handle(follower).submit(Batch {
        term: start.term,
        at: 0,
        records: records(&[grant(99, None, "x")]),
    });
    let NotLeader { leader: named } = within("a follower's refusal", refused).await.unwrap_err();
    assert_eq!(named.map(|m| m.raft_addr), Some(c.peers[&lid].clone()));

    // The status names the leader and three voters; the leader knows how far each is behind.
    let status = leader.status();
    assert_eq!((status.node_id, status.leader_id), (lid, Some(lid)));
    assert_eq!(status.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(status.members.iter().all(|m| m.behind.is_some() && m.role != "learner"));
    assert!(serde_json::to_string(&status).unwrap().contains("\"leader_id\":"));
    assert_eq!(c.handle(follower).status().members[0].behind, None);

    // Reads: the leader passes the barrier, a follower does not.
    within("the leader's read barrier", leader.ensure_linearizable()).await.unwrap();
    assert!(within("a follower's read barrier", c.handle(follower).ensure_linearizable()).await.is_err());

    // The consensus port refuses a wrong secret and a wrong node id.
    let wrong = describe(&c.peers[&lid], lid, &Secret::new("guess"), None).await.unwrap_err();
    assert!(matches!(&wrong, CallError::Refused(why) if why == "wrong secret"), "{wrong}");
    let other = describe(&c.peers[&lid], lid + 10, &Secret::new("cluster-secret"), None).await.unwrap_err();
    assert!(matches!(other, CallError::Refused(_)));
    let me = describe(&c.peers[&lid], lid, &Secret::new("cluster-secret"), None).await.unwrap();
    assert!(me.initialized);
    // And consensus with another incarnation than its own: refused before any call.
    let hello =
        |incarnation| Hello::Raft { secret: b"cluster-secret".to_vec(), from: 99, target: lid, incarnation };
    for (incarnation, welcomed) in [(me.member.incarnation ^ 1, false), (me.member.incarnation, true)] {
        let mut stream = tokio::net::TcpStream::connect(&c.peers[&lid]).await.unwrap();
        wire::write_frame(&mut stream, &hello(incarnation)).await.unwrap();
        let welcome: Welcome = wire::decode(&wire::read_frame(&mut stream).await.unwrap()).unwrap();
        assert_eq!(matches!(welcome, Welcome::Ok), welcomed, "{welcome:?}");
    }

    for id in c.running.keys().copied().collect::<Vec<_>>() {
        c.stop(id);
    }
}

#[tokio::test]
async fn a_new_leader_starts_from_every_committed_lock_with_the_grace() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new("failover", 3);
    c.start_all();
    let (old, start) = c.leader().await;
    let leader = c.handle(old);
    let term = start.term;
    // At 1000: a has a lease to 6000, b none, c a lease to 1500. At 3000: b is released (and
    // c has run out, unlogged: only a leader's expiry or a new leader ends it).
    let first = Batch {
        term,
        at: 1_000,
        records: records(&[grant(1, Some(6_000), "a"), grant(2, None, "b"), grant(3, Some(1_500), "c")]),
    };
    let second = Batch { term, at: 3_000, records: records(&[Record::Release { token: 2 }]) };
    assert!(submit_all(leader, vec![first, second]).await.iter().all(Result::is_ok));

    // The leader stops; the clock of the next reads 10000 when it leads.
    c.set_clock(10_000);
    c.stop(old);
    let (new, start2) = c.leader().await;
    assert_ne!(new, old);
    assert!(start2.term > term);
    assert_eq!(start2.at, 10_000);
    // a had 3000 ms left at the last batch (3000); it runs them again from 10000, plus the grace.
    let a = HeldLock {
        resource: "a".into(),
        owner: "w".into(),
        token: 1,
        deadline: Some(10_000 + 3_000 + LEAD_GRACE_MS),
        session: 0,
    };
    assert_eq!(start2.locks, vec![a]);
    assert_eq!(start2.next_token, 4, "above every token handed out");

    // The old leadership's batches are refused; the new one's are applied.
    let stale = Batch { term, at: 10_000, records: records(&[grant(4, None, "d")]) };
    assert!(within("a stale batch", c.handle(new).submit(stale)).await.is_err());
    let fresh =
        Batch { term: start2.term, at: 10_001, records: records(&[grant(start2.next_token, None, "d")]) };
    within("a new leader's batch", c.handle(new).submit(fresh)).await.unwrap();
    c.same_state_as(new).await;

    // The old leader comes back with its data: it follows, and its state is the cluster's.
    c.start(old);
    let (again, _) = c.leader().await;
    assert_eq!(again, new);
    c.same_state_as(new).await;
    for id in c.running.keys().copied().collect::<Vec<_>>() {
        c.stop(id);
    }
}

#[tokio::test]
async fn a_member_restarted_with_its_data_catches_up() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new("restart", 3);
    c.start_all();
    let (lid, start) = c.leader().await;
    let batch = |i: u64| Batch {
        term: start.term,
        at: 1_000 + i,
        records: records(&[grant(i, None, &format!("k{i}"))]),
    };
    assert!(submit_all(c.handle(lid), (1..=5).map(batch).collect()).await.iter().all(Result::is_ok));
    let follower = c.running.keys().copied().find(|&id| id != lid).unwrap();
    c.stop(follower);
    assert!(submit_all(c.handle(lid), (6..=10).map(batch).collect()).await.iter().all(Result::is_ok));
    c.start(follower);
    c.same_state_as(lid).await;
    let caught_up = c.handle(follower).digest().await;
    assert_eq!(caught_up.0, c.handle(lid).digest().await.0);
    for id in c.running.keys().copied().collect::<Vec<_>>() {
        c.stop(id);
    }
}

#[tokio::test]
async fn a_member_restarted_empty_is_refused_and_never_votes_until_it_is_added_again() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new("empty", 3);
    c.start_all();
    let (lid, start) = c.leader().await;
    let batch = |i: u64| Batch {
        term: start.term,
        at: 1_000 + i,
        records: records(&[grant(i, None, &format!("k{i}"))]),
    };
    assert!(submit_all(c.handle(lid), (1..=3).map(batch).collect()).await.iter().all(Result::is_ok));
    let others: Vec<u64> = c.running.keys().copied().filter(|&id| id != lid).collect();
    let (lost, kept) = (others[0], others[1]);
    let old = describe(&c.peers[&lost], lost, &Secret::new("cluster-secret"), None).await.unwrap();

    // It loses its data and comes back: another incarnation, and no cluster of its own.
    c.stop(lost);
    std::fs::remove_dir_all(&c.dirs[&lost].0).unwrap();
    c.start(lost);
    let new = describe(&c.peers[&lost], lost, &Secret::new("cluster-secret"), None).await.unwrap();
    assert_ne!(new.member.incarnation, old.member.incarnation);
    assert!(!new.initialized);

    // The leader goes on with the member that kept its data; the empty one takes nothing.
    assert!(submit_all(c.handle(lid), (4..=6).map(batch).collect()).await.iter().all(Result::is_ok));
    let m = c.handle(lost).metrics().borrow().clone();
    assert_eq!((m.last_log_index, m.vote.leader_id.term), (None, 0));

    // Without the leader, the member with data cannot win an election: the empty one is not
    // asked as itself, and refuses. It tries several terms; the empty one never votes.
    let stopped_at = c.handle(kept).metrics().borrow().current_term;
    c.stop(lid);
    let mut kept_metrics = c.handle(kept).metrics();
    within("three elections without a winner", kept_metrics.wait_for(|m| m.current_term >= stopped_at + 3))
        .await
        .unwrap();
    let m = c.handle(kept).metrics().borrow().clone();
    assert_ne!(m.current_leader, Some(kept));
    let m = c.handle(lost).metrics().borrow().clone();
    assert_eq!(
        (m.vote.leader_id.term, m.current_term, m.last_log_index),
        (0, 0, None),
        "the empty member voted"
    );

    // The leader comes back; the empty member is added again with its new incarnation.
    c.start(lid);
    let leader = until("a leader among the members with data", async || {
        [lid, kept].into_iter().find(|&id| matches!(&*c.handle(id).roles().borrow(), Role::Leader(_)))
    })
    .await;
    within("adding the member again", c.handle(leader).add_member(lost, c.peers[&lost].clone()))
        .await
        .unwrap();
    let (_, start) = c.leader().await;
    let status = c.handle(leader).status();
    let entry = status.members.iter().find(|m| m.id == lost).unwrap();
    assert_eq!(entry.role, "follower");
    assert!(
        submit_all(
            c.handle(leader),
            vec![Batch { term: start.term, at: 5_000, records: records(&[grant(7, None, "k7")]) }]
        )
        .await
        .iter()
        .all(Result::is_ok)
    );
    c.same_state_as(leader).await;
    for id in c.running.keys().copied().collect::<Vec<_>>() {
        c.stop(id);
    }
}

#[tokio::test]
async fn members_are_added_and_removed_through_joint_consensus() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new("membership", 4);
    // Snapshots every few entries, so the new member catches up from one (the log it would
    // need is purged).
    c.snapshot_every = 8;
    for id in 1..=3 {
        let mut config = c.config(id);
        config.peers.remove(&4);
        c.running.insert(id, start(config).unwrap());
    }
    let (lid, start_) = c.leader().await;
    let batch = |i: u64| Batch {
        term: start_.term,
        at: 1_000 + i,
        records: records(&[grant(i, None, &format!("k{i}"))]),
    };
    for chunk in (1..=40).collect::<Vec<_>>().chunks(10) {
        assert!(
            submit_all(c.handle(lid), chunk.iter().map(|&i| batch(i)).collect())
                .await
                .iter()
                .all(Result::is_ok)
        );
    }
    let mut m = c.handle(lid).metrics();
    within("a snapshot, and the log it covers purged", m.wait_for(|m| m.purged.is_some())).await.unwrap();

    // A follower cannot change the membership.
    let follower = c.running.keys().copied().find(|&id| id != lid).unwrap();
    let refused = c.handle(follower).add_member(4, c.peers[&4].clone()).await;
    assert!(matches!(refused, Err(super::MembershipError::NotLeader(_))), "{refused:?}");

    // Member 4 joins: it never forms a cluster of its own, and is added.
    let mut config = c.config(4);
    config.join = true;
    c.running.insert(4, start(config).unwrap());
    within("adding member 4", c.handle(lid).add_member(4, c.peers[&4].clone())).await.unwrap();
    let status = c.handle(lid).status();
    assert_eq!(
        status.members.iter().map(|m| (m.id, m.role != "learner")).collect::<Vec<_>>(),
        [(1, true), (2, true), (3, true), (4, true)]
    );
    assert!(submit_all(c.handle(lid), (41..=45).map(batch).collect()).await.iter().all(Result::is_ok));
    c.same_state_as(lid).await;
    assert!(c.handle(4).metrics().borrow().snapshot.is_some(), "member 4 was sent a snapshot");
    // Adding it again, as it is, changes nothing.
    within("adding member 4 again", c.handle(lid).add_member(4, c.peers[&4].clone())).await.unwrap();

    // A follower is removed; the other three go on.
    within("removing a member", c.handle(lid).remove_member(follower)).await.unwrap();
    let status = c.handle(lid).status();
    assert!(status.members.iter().all(|m| m.id != follower));
    assert_eq!(status.members.len(), 3);
    c.stop(follower);
    assert!(submit_all(c.handle(lid), (46..=50).map(batch).collect()).await.iter().all(Result::is_ok));
    c.same_state_as(lid).await;
    within("removing it again", c.handle(lid).remove_member(follower)).await.unwrap();
    for id in c.running.keys().copied().collect::<Vec<_>>() {
        c.stop(id);
    }
}
