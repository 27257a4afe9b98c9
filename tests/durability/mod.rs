//! Durability: the real server binary killed with SIGKILL (a crash) and started again on its
//! data directory. Nothing acknowledged is lost or undone, leases follow the recovery rules,
//! tokens keep rising, and the log's faults get what docs/DURABILITY.md promises: a torn tail
//! is cut, a damaged record stops the start with its file and offset, a second server is kept
//! out, and a full disk refuses changes until it can be written again.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Http, Process, SECRET, TempDir, post, ringlock_command};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server on `port` (0: any) with its locks in `data`.
fn server(data: &Path, port: u16, threads: usize, extra: &[&str]) -> Process {
    Process::start(command(data, port, threads, extra))
}

fn command(data: &Path, port: u16, threads: usize, extra: &[&str]) -> std::process::Command {
    let mut cmd = ringlock_command();
    cmd.args(["-b", "127.0.0.1", "-p", &port.to_string(), "--threads", &threads.to_string(), "--data-dir"])
        .arg(data)
        .args(extra)
        .env("LOCKSERVER_SECRET", SECRET);
    cmd
}

/// Kills the server as a crash would.
fn crash(p: Process) {
    p.signal(libc::SIGKILL);
    let _ = p.finish();
}

fn acquire_body(resource: &str, owner: &str, expire_s: Option<f64>) -> String {
    match expire_s {
        Some(s) => format!(r#"{{"resource":"{resource}","owner":"{owner}","expire":{s}}}"#),
        None => format!(r#"{{"resource":"{resource}","owner":"{owner}"}}"#),
    }
}

/// A lock as `GET /locks` lists it: owner, token, ms of lease left.
type Listed = HashMap<String, (String, u64, Option<u64>)>;

/// Every held lock, page by page.
fn list_all(addr: SocketAddr) -> Listed {
    let mut c = Http::connect(addr);
    let mut all = Listed::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/locks?limit=1000".to_owned()
        } else {
            format!("/locks?limit=1000&after={}", after.replace('/', "%2F"))
        };
        let r = c.get(&path, SECRET);
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        for lock in v["locks"].as_array().unwrap() {
            all.insert(
                lock["resource"].as_str().unwrap().to_owned(),
                (
                    lock["owner"].as_str().unwrap().to_owned(),
                    lock["token"].as_u64().unwrap(),
                    lock["expires_in_ms"].as_u64(),
                ),
            );
        }
        match v["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return all,
        }
    }
}

/// What one worker knows of its own names when the server died.
#[derive(Default)]
struct Known {
    /// Granted and acknowledged, not released: name -> (token, lease ms, when the acquire
    /// was sent).
    held: HashMap<String, (u64, Option<u64>, Instant)>,
    /// Released and acknowledged (and not granted again since).
    freed: Vec<String>,
    /// The name whose request was in flight when the connection died: its fate is unknown.
    unknown: Option<String>,
    max_token: u64,
    acked: u64,
}

/// Acquires and releases its own names over one connection until the connection dies.
fn worker(addr: SocketAddr, id: usize, known: Arc<Mutex<Known>>) {
    let Some(mut c) = Http::try_connect(addr) else { return };
    let owner = format!("w{id}");
    let mut n: u64 = id as u64 * 7919 + 1;
    loop {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let name = format!("crash-{id}-{}", (n >> 33) % 40);
        let holding = known.lock().unwrap().held.contains_key(&name);
        let sent = Instant::now();
        let (request, lease) = if holding {
            (post("/release", SECRET, &format!(r#"{{"resource":"{name}","owner":"{owner}"}}"#)), None)
        } else {
            let lease = (n >> 20).is_multiple_of(2).then_some(60_000);
            (
                post("/acquire", SECRET, &acquire_body(&name, &owner, lease.map(|ms| ms as f64 / 1000.0))),
                lease,
            )
        };
        let Some(r) = c.try_call(request) else {
            known.lock().unwrap().unknown = Some(name);
            return;
        };
        let mut k = known.lock().unwrap();
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        k.acked += 1;
        if holding {
            k.held.remove(&name);
            k.freed.push(name);
        } else {
            let token = r.token();
            k.max_token = k.max_token.max(token);
            k.freed.retain(|f| *f != name);
            k.held.insert(name, (token, lease, sent));
        }
    }
}

#[test]
fn a_crash_under_load_loses_nothing_acknowledged() {
    let data = TempDir::new("crash");
    let p = server(data.path(), 0, 2, &[]);
    let addr = p.addr;
    let knowns: Vec<Arc<Mutex<Known>>> = (0..8).map(|_| Arc::default()).collect();
    let workers: Vec<_> = knowns
        .iter()
        .enumerate()
        .map(|(id, k)| {
            let k = k.clone();
            thread::spawn(move || worker(addr, id, k))
        })
        .collect();
    // A moment that depends on nothing the server does: between 300 and 800 ms into the load.
    let pause = 300 + u64::from(std::process::id() % 500);
    thread::sleep(Duration::from_millis(pause));
    let killed = Instant::now();
    crash(p);
    workers.into_iter().for_each(|w| w.join().unwrap());

    let spawned = Instant::now();
    let p = server(data.path(), 0, 2, &[]);
    let state = list_all(p.addr);
    let queried = Instant::now();
    let (mut held, mut freed, mut acked, mut max_token) = (0, 0, 0, 0);
    for (id, known) in knowns.iter().enumerate() {
        let k = known.lock().unwrap();
        acked += k.acked;
        max_token = max_token.max(k.max_token);
        for (name, (token, lease, sent)) in &k.held {
            if k.unknown.as_ref() == Some(name) {
                continue;
            }
            held += 1;
            let (owner, got, left) =
                state.get(name).unwrap_or_else(|| panic!("acknowledged grant of {name} lost"));
            assert_eq!((owner.as_str(), got), (format!("w{id}").as_str(), token), "{name}");
            if let Some(ms) = lease {
                let left = left.expect("a lease");
                assert!(left <= *ms, "{name}: {left} ms left of a {ms} ms lease");
                // No earlier than what was left at the crash, counted from the restart.
                let at_crash = (*sent + Duration::from_millis(*ms)).saturating_duration_since(killed);
                assert!(
                    Duration::from_millis(left) + queried.duration_since(spawned) >= at_crash,
                    "{name}: {left} ms left after the restart, {at_crash:?} at the crash"
                );
            }
        }
        for name in &k.freed {
            if k.unknown.as_ref() != Some(name) {
                freed += 1;
                assert!(!state.contains_key(name), "acknowledged release of {name} undone");
            }
        }
    }
    assert!(
        acked > 100 && held > 20 && freed > 5,
        "too quiet a run: {acked} acknowledged, {held} held, {freed} freed"
    );
    let mut c = Http::connect(p.addr);
    let r = c.post("/acquire", SECRET, &acquire_body("after-the-crash", "new", None));
    assert_eq!(r.status, 200);
    assert!(r.token() > max_token, "token {} after the crash, {max_token} before", r.token());
}

#[test]
fn a_lease_keeps_what_was_left_of_it_across_the_downtime() {
    let data = TempDir::new("lease");
    let p = server(data.path(), 0, 1, &[]);
    let mut c = Http::connect(p.addr);
    let sent = Instant::now();
    let r = c.post("/acquire", SECRET, &acquire_body("short", "holder", Some(1.5)));
    assert_eq!(r.status, 200);
    let token = r.token();
    thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    crash(p);
    // Down for longer than the whole lease: its wall-clock deadline passes meanwhile.
    thread::sleep(Duration::from_millis(2_000));
    let spawned = Instant::now();
    let p = server(data.path(), 0, 1, &[]);
    let state = list_all(p.addr);
    let queried = Instant::now();
    let (owner, got, left) = state.get("short").expect("the lease survived the downtime").clone();
    assert_eq!((owner.as_str(), got), ("holder", token));
    let left = left.unwrap();
    assert!(left <= 1_500, "no later than the restart plus its full length: {left} ms");
    let at_crash = (sent + Duration::from_millis(1_500)).duration_since(killed);
    assert!(
        Duration::from_millis(left) + queried.duration_since(spawned) >= at_crash,
        "no earlier than what was left at the crash: {left} ms, {at_crash:?}"
    );
    // And it does end.
    thread::sleep(Duration::from_millis(left + 50));
    let mut c = Http::connect(p.addr);
    assert_eq!(c.post("/acquire", SECRET, &acquire_body("short", "next", None)).status, 200);
}

#[test]
fn a_forced_release_survives_a_restart() {
    let data = TempDir::new("forced");
    let p = server(data.path(), 0, 2, &[]);
    let mut c = Http::connect(p.addr);
    let mut tokens = HashMap::new();
    for name in ["kept", "forced/1", "forced/2", "forced/3"] {
        let r = c.post("/acquire", SECRET, &acquire_body(name, "holder", None));
        assert_eq!(r.status, 200);
        tokens.insert(name, r.token());
    }
    for name in ["forced/1", "forced/2", "forced/3"] {
        let body = format!(r#"{{"resource":"{name}","force":true}}"#);
        let r = c.post("/release", SECRET, &body);
        assert_eq!((r.status, r.token()), (200, tokens[name]), "acknowledged once it is durable");
    }
    crash(p);
    let p = server(data.path(), 0, 2, &[]);
    let state = list_all(p.addr);
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state["kept"], ("holder".to_owned(), tokens["kept"], None));
    let mut c = Http::connect(p.addr);
    let r = c.post("/acquire", SECRET, &acquire_body("forced/1", "next", None));
    assert_eq!(r.status, 200, "free after the restart");
    assert!(r.token() > tokens["forced/1"]);
}

/// The segment files of a data directory, biggest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![data.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "wal") {
                found.push(path);
            }
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    found
}

/// Three acquires, each in a batch of its own, on a one-core server; then a crash.
fn three_batches(data: &Path) {
    let p = server(data, 0, 1, &[]);
    let mut c = Http::connect(p.addr);
    for name in ["t-1", "t-2", "t-3"] {
        assert_eq!(c.post("/acquire", SECRET, &acquire_body(name, "o", None)).status, 200);
    }
    crash(p);
}

/// Where a segment's batches end: its last byte that is not zero (the room after the log reads
/// as zeros; the last batch of [`three_batches`] ends with an owner's name).
fn log_end(segment: &[u8]) -> usize {
    segment.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

#[test]
fn the_room_ahead_of_the_log_is_given_back_and_is_not_a_torn_tail() {
    let data = TempDir::new("room");
    three_batches(data.path());
    let segment = segments(data.path()).remove(0);
    let bytes = std::fs::read(&segment).unwrap();
    let end = log_end(&bytes);
    // The segment was given room ahead of its writes (zeros, in blocks it already has), so a
    // sync need not commit a change of size.
    assert_eq!(bytes.len(), 4 * 1024 * 1024, "the room a segment is given");
    assert!((3 * 29..1024).contains(&end), "three grants: {end} bytes");
    let p = server(data.path(), 0, 1, &[]);
    assert_eq!(list_all(p.addr).len(), 3);
    // Recovery read the zeros as the log's end, gave the room back, and cut nothing.
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), end as u64);
    p.terminate();
    let (status, log) = p.finish();
    assert!(status.success());
    assert!(!log.contains("torn"), "{log}");
}

#[test]
fn a_torn_tail_is_cut_off_and_logged() {
    let data = TempDir::new("torn");
    three_batches(data.path());
    let segment = segments(data.path()).remove(0);
    // A crash in the middle of writing a fourth batch: its length promises 100 bytes, 10 came,
    // written where the log ended, in the room the segment had after it.
    let mut bytes = std::fs::read(&segment).unwrap();
    let room = bytes.len();
    let good = log_end(&bytes);
    bytes.truncate(good);
    bytes.extend_from_slice(&[100, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    bytes.resize(room.max(bytes.len()), 0);
    std::fs::write(&segment, &bytes).unwrap();
    let p = server(data.path(), 0, 1, &[]);
    let state = list_all(p.addr);
    assert_eq!(
        state.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(),
        ["t-1", "t-2", "t-3"].into()
    );
    p.terminate();
    let (status, log) = p.finish();
    assert!(status.success());
    assert!(log.contains(&format!("cut off a torn tail of 10 bytes at byte {good}")), "{log}");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good as u64, "the tail is gone from the file");
}

#[test]
fn a_damaged_record_stops_the_start_and_names_file_and_offset() {
    let data = TempDir::new("damaged");
    three_batches(data.path());
    let segment = segments(data.path()).remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    // A bit flipped in the first batch's sequence number, with two good batches after it.
    bytes[8] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let out = command(data.path(), 0, 1, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} is damaged at byte 0 (batch checksum mismatch)", segment.display())),
        "{err}"
    );
}

#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let data = TempDir::new("second");
    let first = server(data.path(), 0, 1, &[]);
    let out = command(data.path(), 0, 1, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "ringlock: the data directory {} is in use by another ringlock (pid {})",
        data.path().display(),
        first.child.id()
    );
    assert!(err.starts_with(&expected), "{err}");
    let mut c = Http::connect(first.addr);
    assert_eq!(c.post("/acquire", SECRET, &acquire_body("still-served", "o", None)).status, 200);
}

/// Sets the server's file size limit: writes past `bytes` fail (EFBIG) as on a full disk.
fn limit_file_size(p: &Process, bytes: libc::rlim_t) {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: prlimit on our own child with a valid struct and no old-value pointer.
    let r = unsafe {
        libc::prlimit(p.child.id() as libc::pid_t, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut())
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn metric(addr: SocketAddr, line_start: &str) -> Option<u64> {
    let r = Http::connect(addr).call("GET /metrics HTTP/1.1\r\n\r\n");
    r.body.lines().find(|l| l.starts_with(line_start)).map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn every_batch_is_counted_by_its_size() {
    let data = TempDir::new("sizes");
    let p = server(data.path(), 0, 1, &[]);
    let mut c = Http::connect(p.addr);
    let counts = || {
        let m = |name: &str| metric(p.addr, name).unwrap();
        let bucket = m("ringlock_log_batch_bytes_bucket{le=\"64\"}");
        let (count, sum) = (m("ringlock_log_batch_bytes_count"), m("ringlock_log_batch_bytes_sum"));
        // The histogram counts every batch and sums every byte the counters count.
        assert_eq!((count, sum), (m("ringlock_log_batches_total"), m("ringlock_log_bytes_total")));
        (bucket, count, sum)
    };
    assert_eq!(c.post("/acquire", SECRET, &acquire_body("a", "o", None)).status, 200);
    let (bucket, count, sum) = counts();
    assert!(count >= 1);
    // One more grant alone is a batch of its own: one `Grant` record, 29 bytes and the two
    // names, in the first bucket.
    assert_eq!(c.post("/acquire", SECRET, &acquire_body("b", "o", None)).status, 200);
    assert_eq!(counts(), (bucket + 1, count + 1, sum + 31));
    // 64 grants of longer names (75 bytes each), pipelined on one connection: each batch they
    // make is above the first bucket, and every byte is counted.
    let name = |n: usize| format!("b{n:03}-{}", "x".repeat(40));
    let requests: String =
        (0..64).map(|n| post("/acquire", SECRET, &acquire_body(&name(n), "o", None))).collect();
    c.send(requests);
    for _ in 0..64 {
        assert_eq!(c.read().status, 200);
    }
    let (small, after, total) = counts();
    assert_eq!((small, total), (bucket + 1, sum + 31 + 64 * 75));
    assert!((count + 2..=count + 65).contains(&after), "{after} batches after {count}");
}

#[test]
fn a_full_disk_refuses_changes_keeps_answering_and_recovers_by_itself() {
    let data = TempDir::new("full");
    let p = server(data.path(), 0, 1, &[]);
    let addr = p.addr;
    let mut c = Http::connect(addr);
    assert_eq!(c.post("/acquire", SECRET, &acquire_body("before", "o", None)).status, 200);
    limit_file_size(&p, 1);
    // This change is made in memory, but its batch cannot be written: its answer waits.
    let waiting = thread::spawn(move || {
        Http::connect(addr).post("/acquire", SECRET, &acquire_body("during", "o", None))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(addr, "ringlock_log_failing{core=\"0\"}") != Some(1) {
        assert!(Instant::now() < deadline, "the failing write was never noticed");
        thread::sleep(Duration::from_millis(20));
    }
    let refused = c.post("/acquire", SECRET, &acquire_body("refused", "o", None));
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (503, "ERR Storage unavailable: the server cannot write its log now; try again later")
    );
    assert_eq!(c.post("/release", SECRET, r#"{"resource":"before","owner":"o"}"#).status, 503);
    assert_eq!(c.call("GET /health HTTP/1.1\r\n\r\n").status, 200);
    assert_eq!(c.get("/locks/before", SECRET).status, 200, "inspection still answers");
    assert!(!waiting.is_finished(), "nothing is acknowledged before it is on disk");
    limit_file_size(&p, libc::RLIM_INFINITY);
    let during = waiting.join().unwrap();
    assert_eq!(during.status, 200, "written once the disk takes writes again");
    assert_eq!(c.post("/acquire", SECRET, &acquire_body("after", "o", None)).status, 200);
    assert_eq!(metric(addr, "ringlock_log_failing{core=\"0\"}"), Some(0));
    assert!(metric(addr, "ringlock_log_write_errors_total").unwrap() > 0);
    crash(p);
    let p = server(data.path(), 0, 1, &[]);
    let state = list_all(p.addr);
    let mut names: Vec<&str> = state.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["after", "before", "during"]);
}

#[test]
fn in_memory_keeps_nothing() {
    let data = TempDir::new("memory");
    let dir = data.path().join("never-made");
    let p = server(&dir, 0, 1, &["--in-memory"]);
    assert!(p.line.contains(" with locks in memory only ("), "{}", p.line);
    let mut c = Http::connect(p.addr);
    assert_eq!(c.post("/acquire", SECRET, &acquire_body("m", "a", None)).status, 200);
    crash(p);
    assert!(!dir.exists(), "nothing on disk");
    let p = server(&dir, 0, 1, &["--in-memory"]);
    let mut c = Http::connect(p.addr);
    assert_eq!(
        c.post("/acquire", SECRET, &acquire_body("m", "b", None)).status,
        200,
        "a restart frees every lock"
    );
}

#[test]
fn the_start_up_line_says_where_the_locks_are() {
    let data = TempDir::new("line");
    let p = server(data.path(), 0, 1, &["--fsync", "never"]);
    assert!(
        p.line.contains(&format!(
            " with locks durable in {}, fsync never (1 threads, secret set)",
            data.path().display()
        )),
        "{}",
        p.line
    );
}

/// Holds seen by the checker across a restart: (token, start, end) per resource.
type Holds = Arc<Mutex<HashMap<String, Vec<(u64, Instant, Instant)>>>>;

/// Contends for a few names over HTTP with leases, waits and releases, reconnecting whenever
/// the server is down; a lock it holds across the restart is still its own after it.
fn contender(addr: SocketAddr, id: u64, holds: Holds, until: Instant, grants: Arc<AtomicU64>) {
    let owner = format!("x{id}");
    let mut n = id * 104_729 + 7;
    let mut conn: Option<Http> = None;
    let call = |conn: &mut Option<Http>, raw: String| -> Option<crate::support::Resp> {
        if conn.is_none() {
            *conn = Http::try_connect(addr);
        }
        let r = conn.as_mut()?.try_call(raw);
        if r.is_none() {
            *conn = None;
        }
        r
    };
    while Instant::now() < until {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let name = format!("x-{}", (n >> 33) % 3);
        let ttl_ms = 50 + (n >> 40) % 400;
        let body = format!(
            r#"{{"resource":"{name}","owner":"{owner}","expire":{},"wait":0.2}}"#,
            ttl_ms as f64 / 1000.0
        );
        let sent = Instant::now();
        let Some(r) = call(&mut conn, post("/acquire", SECRET, &body)) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        if r.status != 200 {
            continue;
        }
        let start = Instant::now();
        grants.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis((n >> 50) % 80));
        let lease_end = sent + Duration::from_millis(ttl_ms);
        let released = Instant::now();
        let release = format!(r#"{{"resource":"{name}","owner":"{owner}"}}"#);
        // Whether it is answered or not (the server died with it in flight), the release may
        // have been applied: the hold ends, at the earliest, when it was sent.
        let _ = call(&mut conn, post("/release", SECRET, &release));
        let end = released.min(lease_end);
        holds.lock().unwrap().entry(name).or_default().push((r.token(), start, end));
    }
}

#[test]
fn mutual_exclusion_holds_across_a_restart() {
    let data = TempDir::new("exclusion");
    let port = free_port();
    let p = server(data.path(), port, 2, &[]);
    let addr = p.addr;
    let holds: Holds = Arc::default();
    let grants = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let until = begun + Duration::from_millis(2_500);
    let workers: Vec<_> = (1..=6)
        .map(|id| {
            let (holds, grants) = (holds.clone(), grants.clone());
            thread::spawn(move || contender(addr, id, holds, until, grants))
        })
        .collect();
    thread::sleep(Duration::from_millis(900));
    let killed_at = begun.elapsed().as_millis() as i64;
    crash(p);
    let before = grants.load(Ordering::Relaxed);
    // Started again on the same port, so that the clients find it.
    let p = server(data.path(), port, 2, &[]);
    workers.into_iter().for_each(|w| w.join().unwrap());
    let after = grants.load(Ordering::Relaxed) - before;
    assert!(before > 20 && after > 20, "too quiet a run: {before} grants before the crash, {after} after");
    for (name, mut holds) in holds.lock().unwrap().clone() {
        holds.sort_by_key(|h| h.0);
        for pair in holds.windows(2) {
            let ((ta, sa, ea), (tb, sb, _)) = (pair[0], pair[1]);
            assert!(ta < tb, "{name}: token {ta} granted twice");
            let at = |t: Instant| t.saturating_duration_since(begun).as_millis() as i64 - killed_at;
            assert!(
                ea <= sb,
                "{name}: token {ta} held {:?} after token {tb} was granted (ms from the crash: {ta} {}..{}, {tb} {}..{})",
                ea - sb,
                at(sa),
                at(ea),
                at(sb),
                at(pair[1].2)
            );
            if ea > sa {
                assert!(sa <= sb, "{name}: token {ta} granted after token {tb}");
            }
        }
    }
    drop(p);
}
