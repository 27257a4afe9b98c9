//! Clusters: three real server processes on loopback, replicating their locks by Raft. A
//! request may go to any member (a follower passes its connection to the leader); a lock
//! outlives its leader's death, with its token and its lease; a minority grants nothing; a
//! member that was down catches up.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ringlock_client::blocking::Client;
use ringlock_client::{AcquireOptions, Config as ClientConfig};
use serde_json::Value;

use crate::support::{Http, Process, SECRET, TempDir, plain, post, ringlock_command};

/// Members in network namespaces of their own, so that a link can be cut.
mod apart;
/// Faults under load (killed, stopped, cut off, restarted members), checked by the history.
mod faults;
/// Clients spread over the members, and the history they keep.
mod load;

/// How long a test waits for a cluster to agree on a leader: an election takes 300 to 600 ms,
/// and a few rounds may split on a loaded machine.
const ELECTION_WAIT: Duration = Duration::from_secs(15);
/// How many times a cluster is started on new free ports before a taken port fails the test.
const START_ATTEMPTS: usize = 5;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A member's ports and data directory, kept across its restarts.
struct Seat {
    id: u64,
    /// Its client address's IP and port.
    ip: std::net::Ipv4Addr,
    api: u16,
    data: TempDir,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
}

/// Three (or `n`) members on loopback, each a process of its own with one core.
struct Cluster {
    seats: Vec<Seat>,
    /// `--peers`, the same for every member.
    peers: String,
    procs: Vec<Option<Process>>,
    /// Members stopped by SIGSTOP: running, but answering nothing.
    paused: Vec<bool>,
    /// The members' networks, if they are apart (dropped after the members).
    apart: Option<apart::Apart>,
}

impl Cluster {
    fn start(n: u64) -> Cluster {
        // A free port may be taken by another test's connection before the member binds it:
        // then the whole cluster starts again on other ports.
        for _ in 1..START_ATTEMPTS {
            if let Some(cluster) = Cluster::try_start(n) {
                return cluster;
            }
        }
        Cluster::try_start(n).expect("a cluster on free ports")
    }

    fn try_start(n: u64) -> Option<Cluster> {
        let seats: Vec<Seat> = (1..=n)
            .map(|id| Seat {
                id,
                ip: std::net::Ipv4Addr::LOCALHOST,
                api: free_port(),
                data: TempDir::new("member"),
                netns: None,
            })
            .collect();
        let peers =
            seats.iter().map(|s| format!("{}=127.0.0.1:{}", s.id, free_port())).collect::<Vec<_>>().join(",");
        Cluster::run(seats, peers, None)
    }

    /// [`Cluster::start`] with every member in a network namespace of its own, so that its
    /// link to the others can be cut ([`apart::Apart::cut`]).
    fn start_apart(n: u64) -> Cluster {
        let apart = apart::Apart::new(n as usize);
        let seats: Vec<Seat> = (1..=n)
            .map(|id| {
                let i = id as usize - 1;
                Seat {
                    id,
                    ip: apart.client_ip(i),
                    api: 8080,
                    data: TempDir::new("member"),
                    netns: Some(apart.member(i)),
                }
            })
            .collect();
        let peers = (0..n as usize)
            .map(|i| format!("{}={}:7001", i + 1, apart.peer_ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        Cluster::run(seats, peers, Some(apart)).expect("members apart have their ports to themselves")
    }

    /// The members of `seats` started, or `None` if one found its port taken.
    fn run(seats: Vec<Seat>, peers: String, apart: Option<apart::Apart>) -> Option<Cluster> {
        let n = seats.len();
        let mut cluster = Cluster { seats, peers, procs: Vec::new(), paused: vec![false; n], apart };
        for i in 0..n {
            match cluster.try_spawn(i) {
                Ok(p) => cluster.procs.push(Some(p)),
                Err(why) if why.contains("Address already in use") => return None,
                Err(why) => panic!("{why}"),
            }
        }
        Some(cluster)
    }

    fn spawn(&self, i: usize) -> Process {
        self.try_spawn(i).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_spawn(&self, i: usize) -> Result<Process, String> {
        let seat = &self.seats[i];
        let mut cmd = member_command(seat.id, seat.ip, seat.api, &self.peers, seat.data.path());
        if let Some(ns) = &seat.netns {
            // `ip netns exec` enters the namespace and becomes the member (the same process).
            let mut inside = std::process::Command::new("ip");
            inside.args(["netns", "exec", ns]).arg(cmd.get_program()).args(cmd.get_args());
            inside.env_clear().envs(std::env::vars_os().filter(|(k, _)| k == "PATH"));
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => inside.env(k, v),
                    None => inside.env_remove(k),
                };
            }
            inside.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            cmd = inside;
        }
        Process::try_start(cmd)
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.seats[i].ip, self.seats[i].api))
    }

    /// The members running and not paused.
    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.seats.len()).filter(|&i| self.procs[i].is_some() && !self.paused[i])
    }

    /// Stops member `i` (SIGSTOP) as an overloaded host or a long pause would: it keeps its
    /// sockets and its state, and answers nothing until [`Cluster::resume`].
    fn pause(&mut self, i: usize) {
        self.procs[i].as_ref().expect("a running member").signal(libc::SIGSTOP);
        self.paused[i] = true;
    }

    /// Lets member `i` run again (SIGCONT), where it stopped.
    fn resume(&mut self, i: usize) {
        self.procs[i].as_ref().expect("a running member").signal(libc::SIGCONT);
        self.paused[i] = false;
    }

    /// Kills member `i` as a crash would.
    fn kill(&mut self, i: usize) {
        let p = self.procs[i].take().expect("a running member");
        p.signal(libc::SIGKILL);
        self.paused[i] = false;
        let _ = p.finish();
    }

    fn restart(&mut self, i: usize) {
        assert!(self.procs[i].is_none());
        self.procs[i] = Some(self.spawn(i));
    }

    /// Waits until every running member names the same running member as leader and serves
    /// lock requests through it (a new leader serves once its first entry commits); its index.
    fn leader(&self) -> usize {
        self.leader_among(&self.alive().collect::<Vec<_>>())
    }

    /// [`Cluster::leader`] as `members` see it (the others may know no leader: a member that
    /// lost its data waits to be added again).
    fn leader_among(&self, members: &[usize]) -> usize {
        let deadline = Instant::now() + ELECTION_WAIT;
        loop {
            let views: Vec<Option<u64>> =
                members.iter().map(|&i| status(self.addr(i)).and_then(|s| s["leader_id"].as_u64())).collect();
            if let Some(Some(id)) = views.first()
                && views.iter().all(|v| *v == Some(*id))
                && let Some(&i) = members.iter().find(|&&i| self.seats[i].id == *id)
                && members.iter().all(|&m| serves(self.addr(m)))
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no leader agreed on in {ELECTION_WAIT:?}: {views:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every running member but `leader`.
    fn followers(&self, leader: usize) -> Vec<usize> {
        self.alive().filter(|&i| i != leader).collect()
    }
}

fn member_command(
    id: u64,
    ip: std::net::Ipv4Addr,
    api: u16,
    peers: &str,
    data: &Path,
) -> std::process::Command {
    let mut cmd = ringlock_command();
    cmd.args(["-b", &ip.to_string(), "-p", &api.to_string(), "--threads", "1", "--node-id", &id.to_string()])
        .args(["--peers", peers, "--data-dir"])
        .arg(data)
        .env("LOCKSERVER_SECRET", SECRET);
    cmd
}

/// `GET /cluster` from the member at `addr`, if it answers.
fn status(addr: SocketAddr) -> Option<Value> {
    let mut c = Http::try_connect(addr)?;
    let r =
        c.try_call(format!("GET /cluster HTTP/1.1\r\nHost: t\r\nX-LOCKSERVER-SECRET: {SECRET}\r\n\r\n"))?;
    (r.status == 200).then(|| serde_json::from_str(&r.body).expect("GET /cluster is JSON"))
}

/// Whether the member at `addr` answers a lock request with something other than "no leader".
fn serves(addr: SocketAddr) -> bool {
    let Some(mut c) = Http::try_connect(addr) else { return false };
    let probe = format!("GET /locks/probe HTTP/1.1\r\nHost: t\r\nX-LOCKSERVER-SECRET: {SECRET}\r\n\r\n");
    c.try_call(probe).is_some_and(|r| r.status != 503)
}

fn acquire(addr: SocketAddr, resource: &str, owner: &str, expire_s: u64) -> (u16, String, Option<u64>) {
    let body = format!(r#"{{"resource":"{resource}","owner":"{owner}","expire":{expire_s}}}"#);
    let r = Http::connect(addr).call(post("/acquire", SECRET, &body));
    let token = r.header("x-lockserver-token").map(|t| t.parse().unwrap());
    (r.status, r.body, token)
}

/// The lock `resource` as the member at `addr` reports it. A read changes nothing, so one
/// answered "no leader" (a leader that stepped down for a moment on a loaded machine) is asked
/// again, as a client would, until an election's wait has passed.
fn inspect(addr: SocketAddr, resource: &str) -> Value {
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        let r = Http::connect(addr).get(&format!("/locks/{resource}"), SECRET);
        if r.status == 503 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        return serde_json::from_str(&r.body).unwrap();
    }
}

#[test]
fn every_member_serves_the_same_locks_through_the_leader() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader();
    let followers = cluster.followers(leader);
    // Taken through one follower, refused through the other, seen through the leader.
    let (status, body, token) = acquire(cluster.addr(followers[0]), "shared", "a", 30);
    assert_eq!((status, body.as_str()), (200, "OK"));
    let token = token.expect("a grant carries its token");
    let (status, body, _) = acquire(cluster.addr(followers[1]), "shared", "b", 30);
    assert_eq!((status, body.as_str()), (409, "ERR Resource is already locked"));
    let lock = inspect(cluster.addr(leader), "shared");
    assert_eq!((lock["owner"].as_str(), lock["token"].as_u64()), (Some("a"), Some(token)));
    // Released through a follower by its holder, then free for the other.
    let r = Http::connect(cluster.addr(followers[1])).call(post(
        "/release",
        SECRET,
        &format!(r#"{{"resource":"shared","owner":"a","token":{token}}}"#),
    ));
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    let (status, _, next) = acquire(cluster.addr(followers[0]), "shared", "b", 30);
    assert_eq!(status, 200);
    assert!(next.unwrap() > token, "tokens rise: {next:?} after {token}");
}

#[test]
fn the_wire_protocol_goes_through_a_follower_too() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader();
    let follower = cluster.followers(leader)[0];
    let config = |owner: &str| ClientConfig {
        addr: cluster.addr(follower).to_string(),
        owner: owner.into(),
        secret: SECRET.into(),
        ..ClientConfig::default()
    };
    let a = Client::connect(&config("a")).expect("connects through a follower");
    let b = Client::connect(&config("b")).expect("connects through a follower");
    let opts = AcquireOptions { ttl: Some(Duration::from_secs(30)), ..AcquireOptions::default() };
    let lease = a.acquire("wired", opts).expect("granted");
    assert!(b.acquire("wired", opts).is_err(), "one holder at a time");
    let info = b.inspect("wired").unwrap().expect("held");
    assert_eq!((info.owner.as_str(), info.token), ("a", lease.token));
    a.release("wired", Some(lease.token)).unwrap();
    assert_eq!(b.inspect("wired").unwrap(), None);
}

#[test]
fn a_lock_outlives_its_leader_with_its_token_and_its_lease() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let follower = cluster.followers(leader)[0];
    let (status, _, token) = acquire(cluster.addr(follower), "kept", "a", 60);
    assert_eq!(status, 200);
    let token = token.unwrap();
    let left_before = inspect(cluster.addr(leader), "kept")["expires_in_ms"].as_u64().unwrap();
    cluster.kill(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    for i in cluster.alive().collect::<Vec<_>>() {
        let lock = inspect(cluster.addr(i), "kept");
        assert_eq!((lock["owner"].as_str(), lock["token"].as_u64()), (Some("a"), Some(token)));
        // The lease did not end early: what it had left, and the new leader's grace.
        let left = lock["expires_in_ms"].as_u64().unwrap();
        assert!(left > 50_000 && left <= left_before + 1_000, "{left} ms left of {left_before}");
    }
    let (status, body, _) = acquire(cluster.addr(new_leader), "kept", "b", 60);
    assert_eq!((status, body.as_str()), (409, "ERR Resource is already locked"));
    // Tokens never go back: a new lock's is above every token handed out before.
    let (status, _, next) = acquire(cluster.addr(new_leader), "fresh", "b", 60);
    assert_eq!(status, 200);
    assert!(next.unwrap() > token);
}

#[test]
fn a_minority_grants_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let followers = cluster.followers(leader);
    cluster.kill(followers[0]);
    cluster.kill(followers[1]);
    // The lone leader cannot commit: it grants nothing, and once it has heard from no majority
    // for an election timeout it says so rather than leave its clients hanging.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut refused = 0;
    while Instant::now() < deadline {
        let body = r#"{"resource":"alone","owner":"a","expire":30}"#;
        let mut c = Http::connect(cluster.addr(leader));
        c.send(post("/acquire", SECRET, body));
        if let Some(r) = c.try_read() {
            assert_eq!(
                (r.status, r.body.as_str()),
                (503, "ERR No leader: the cluster is electing one; try again"),
                "a minority never grants"
            );
            refused += 1;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(refused > 0, "the member answered nothing in 3 s");
    assert_eq!(status(cluster.addr(leader)).unwrap()["node_id"].as_u64(), Some(cluster.seats[leader].id));
}

#[test]
fn a_member_that_was_down_catches_up() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let late = cluster.followers(leader)[0];
    cluster.kill(late);
    for i in 0..20 {
        assert_eq!(acquire(cluster.addr(leader), &format!("while-down-{i}"), "a", 60).0, 200);
    }
    let committed = status(cluster.addr(leader)).unwrap()["commit_index"].as_u64().unwrap();
    cluster.restart(late);
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        let seen = status(cluster.addr(late)).and_then(|s| s["commit_index"].as_u64()).unwrap_or(0);
        if seen >= committed {
            break;
        }
        assert!(Instant::now() < deadline, "the member caught up to {seen} of {committed}");
        thread::sleep(Duration::from_millis(50));
    }
    // What it caught up with is what it would serve as leader: kill the leader, and if the
    // late member wins, it holds the locks (either survivor must).
    cluster.kill(leader);
    let next = cluster.leader();
    let lock = inspect(cluster.addr(next), "while-down-7");
    assert_eq!(lock["owner"].as_str(), Some("a"));
}

#[test]
fn the_cluster_endpoint_needs_the_secret_and_a_cluster() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader();
    let r = Http::connect(cluster.addr(leader)).call("GET /cluster HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 401);
    let s = status(cluster.addr(leader)).unwrap();
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    // The start-up line says where the locks are.
    let (seat, line) = (&cluster.seats[leader], &cluster.procs[leader].as_ref().unwrap().line);
    let consensus = cluster.peers.split(',').nth(leader).unwrap().split_once('=').unwrap().1;
    assert_eq!(
        line.trim_end(),
        format!(
            "ringlock {} listening on 127.0.0.1:{} with locks replicated by a cluster of 3 (member {}, \
             consensus on {consensus}), log in {} (1 threads, secret set)",
            env!("CARGO_PKG_VERSION"),
            seat.api,
            seat.id,
            seat.data.path().display()
        )
    );
    let roles: Vec<&str> =
        s["members"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{roles:?}");
    // A single server is no cluster.
    let single = crate::support::TestServer::start(1);
    let r = single.connect().get("/cluster", SECRET);
    assert_eq!(r.text(), plain("404 Not Found", "ERR Not a cluster member: this server runs alone"));
}

/// `ringlock cluster ...` against the member at `addr`: its exit status and standard output.
fn cluster_cli(addr: SocketAddr, args: &[&str]) -> (i32, String) {
    let out = ringlock_command()
        .arg("cluster")
        .args(args)
        .env("LOCKSERVER_ADDR", addr.to_string())
        .env("LOCKSERVER_SECRET", SECRET)
        .output()
        .expect("run ringlock cluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "{stderr}");
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap() + &stderr)
}

#[test]
fn a_member_is_replaced_with_no_downtime_through_the_cli() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let follower = cluster.followers(leader)[0];
    assert_eq!(acquire(cluster.addr(leader), "before", "a", 60).0, 200);
    // A fourth member joins: it waits to be added, then catches up and votes.
    let (raft, data) = (free_port(), TempDir::new("member"));
    let api = free_port();
    let peers = format!("{},4=127.0.0.1:{raft}", cluster.peers);
    let mut cmd = member_command(4, std::net::Ipv4Addr::LOCALHOST, api, &peers, data.path());
    cmd.arg("--join");
    let _fourth = Process::start(cmd);
    let fourth = SocketAddr::from(([127, 0, 0, 1], api));
    // Asked of a follower, done by the leader.
    let (code, out) = cluster_cli(cluster.addr(follower), &["add", &format!("4=127.0.0.1:{raft}")]);
    assert_eq!((code, out.as_str()), (0, "member 4 added\n"));
    let s = status(cluster.addr(leader)).unwrap();
    let ids: Vec<u64> = s["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    // The new member serves the locks taken before it came.
    assert_eq!(inspect(fourth, "before")["owner"].as_str(), Some("a"));
    // Another member goes: the cluster no longer counts it.
    let gone = cluster.followers(leader)[1];
    let gone_id = cluster.seats[gone].id;
    let (code, out) = cluster_cli(fourth, &["remove", &gone_id.to_string()]);
    assert_eq!((code, out), (0, format!("member {gone_id} removed\n")));
    cluster.kill(gone);
    let (code, table) = cluster_cli(cluster.addr(leader), &["status"]);
    assert_eq!(code, 0, "{table}");
    let leader_id = cluster.seats[leader].id;
    assert!(table.starts_with(&format!("member {leader_id} sees: leader {leader_id}, term ")), "{table}");
    assert_eq!(table.lines().count(), 1 + 1 + 3, "a header and three members:\n{table}");
    assert!(!table.lines().any(|l| l.starts_with(&format!("{gone_id} "))), "{table}");
    // Three voters, one of them new: still a majority with any one of them gone.
    assert_eq!(acquire(fourth, "after", "b", 60).0, 200);
    // A bad argument is refused before anything is sent.
    let (code, out) = cluster_cli(fourth, &["add", "four"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("\"four\" is not ID=HOST:PORT"), "{out}");
}
