//! The HTTP API over real connections: the reference server's answers byte for byte, then
//! framing (keep-alive, pipelining, close, 100-continue), expiry, waits and the newer endpoints.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Http, SECRET, TestServer, metric, plain, post, post_bytes};

const LOCKED: &str = "ERR Resource is already locked";
const NOT_FOUND: &str = "ERR Resource not found";

fn granted(token: u64) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\n\
         X-Lockserver-Token: {token}\r\n\r\nOK"
    )
}

#[test]
fn every_row_of_the_reference_table() {
    let s = TestServer::start(2);
    let mut c = s.connect();
    let r = c.acquire("table", "alice");
    assert_eq!(r.text(), granted(r.token()), "lock free: 200 OK");
    assert_eq!(c.acquire("table", "bob").text(), plain("409 Conflict", LOCKED), "held by another");
    assert_eq!(c.acquire("table", "alice").text(), plain("409 Conflict", LOCKED), "held by the same owner");
    assert_eq!(c.release("table", "bob").text(), plain("409 Conflict", LOCKED), "release by another owner");
    assert_eq!(c.release("table", "alice").text(), plain("200 OK", "OK"), "release by the holder");
    assert_eq!(
        c.release("table", "alice").text(),
        plain("409 Conflict", NOT_FOUND),
        "release of a free lock"
    );
    let body = r#"{"resource":"table","owner":"alice"}"#;
    let unauthorized = plain("401 Unauthorized", "Missing or invalid secret");
    assert_eq!(c.post("/acquire", "wrong", body).text(), unauthorized);
    let no_secret = format!("POST /acquire HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    assert_eq!(c.call(no_secret).text(), unauthorized);
    assert_eq!(c.post("/release", "", body).text(), unauthorized);
}

#[test]
fn unauthenticated_requests_never_touch_a_lock_and_their_bodies_are_not_read() {
    let s = TestServer::start(1);
    let mut c = s.connect();
    assert_eq!(c.post("/acquire", "wrong", r#"{"resource":"x","owner":"mallory"}"#).status, 401);
    assert_eq!(c.post("/acquire", "wrong", "this is not JSON").status, 401, "the secret is checked first");
    assert_eq!(c.acquire("x", "alice").status, 200, "the lock was never taken");
    assert_eq!(c.post("/release", "wrong", r#"{"resource":"x","owner":"alice"}"#).status, 401);
    assert_eq!(c.acquire("x", "bob").status, 409, "still alice's");
    assert_eq!(c.get("/locks/x", "wrong").status, 401);
    assert_eq!(c.get("/locks", "").status, 401);
}

#[test]
fn bad_bodies_get_a_one_line_400_and_the_connection_stays_usable() {
    let s = TestServer::start(1);
    let mut c = s.connect();
    let cases = [
        ("{", "ERR Bad request: EOF while parsing an object at line 1 column 1"),
        ("", "ERR Bad request: EOF while parsing a value at line 1 column 0"),
        (r#"{"resource":"r"}"#, "ERR Bad request: missing field `owner` at line 1 column 16"),
        (r#"{"owner":"o"}"#, "ERR Bad request: missing field `resource` at line 1 column 13"),
        (
            r#"{"resource":5,"owner":"o"}"#,
            "ERR Bad request: invalid type: integer `5`, expected a string at line 1 column 13",
        ),
        (
            r#"{"resource":"r","owner":"o","expire":-1}"#,
            "ERR Bad request: expire must be a number of seconds >= 0",
        ),
        (
            r#"{"resource":"r","owner":"o","expire":"1"}"#,
            "ERR Bad request: invalid type: string \"1\", expected f64 at line 1 column 40",
        ),
        (r#"{"resource":"","owner":"o"}"#, "ERR Bad request: resource must not be empty"),
        (r#"{"resource":"a\u0000b","owner":"o"}"#, "ERR Bad request: resource must not contain NUL"),
        ("[1,2]", "ERR Bad request: invalid type: integer `1`, expected a string at line 1 column 2"),
    ];
    for (body, reason) in cases {
        let r = c.post("/acquire", SECRET, body);
        assert_eq!(r.text(), plain("400 Bad Request", reason), "body {body:?}");
    }
    let body = b"{\"resource\":\"\xff\",\"owner\":\"o\"}";
    let r = c.call(post_bytes("/acquire", SECRET, body));
    assert_eq!(r.status, 400, "invalid UTF-8 in a name");
    assert_eq!(c.acquire("r", "o").status, 200, "the connection is still good");
}

#[test]
fn unknown_paths_wrong_methods_and_big_bodies() {
    let s = TestServer::start(1);
    let mut c = s.connect();
    assert_eq!(c.post("/lock", SECRET, "{}").text(), plain("404 Not Found", "Not Found"));
    assert_eq!(c.get("/", SECRET).text(), plain("404 Not Found", "Not Found"));
    let r = c.get("/acquire", SECRET);
    assert_eq!(
        r.text(),
        "HTTP/1.1 405 Method Not Allowed\r\ndate: <date>\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: 18\r\nallow: POST\r\n\r\nMethod Not Allowed"
    );
    assert_eq!(c.call("DELETE /locks/x HTTP/1.1\r\n\r\n").header("allow"), Some("GET, HEAD"));

    let big = format!(r#"{{"resource":"r","owner":"{}"}}"#, "o".repeat(70 * 1024));
    let r = c.post("/acquire", SECRET, &big);
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(), "the body was not read, so the connection closes");
}

#[test]
fn health_needs_no_secret_and_does_no_lock_work() {
    let s = TestServer::start(1);
    let mut c = s.connect();
    assert_eq!(c.call("GET /health HTTP/1.1\r\n\r\n").text(), plain("200 OK", "OK"));
    c.send("HEAD /health HTTP/1.1\r\n\r\n");
    let head = c.read_head_only();
    assert_eq!(
        head.head,
        plain("200 OK", "OK").trim_end_matches("OK"),
        "the length of the body, and no body"
    );
    assert_eq!(c.call("GET /health HTTP/1.1\r\n\r\n").body, "OK", "nothing was left over");
}

#[test]
fn ten_pipelined_requests_in_one_write_get_ten_replies_in_order() {
    let s = TestServer::start(2);
    let mut c = s.connect();
    // Names on both cores, and a mix of answers, all in one write.
    let mut raw = String::new();
    let mut expected = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"resource":"pipe-{i}","owner":"p"}}"#);
        raw.push_str(&post("/acquire", SECRET, &body));
        raw.push_str(&post("/acquire", SECRET, &body));
        expected.push(200);
        expected.push(409);
    }
    c.send(raw);
    let got: Vec<u16> = (0..10).map(|_| c.read().status).collect();
    assert_eq!(got, expected);

    let mut raw = String::new();
    for i in 0..5 {
        raw.push_str(&post("/release", SECRET, &format!(r#"{{"resource":"pipe-{i}","owner":"p"}}"#)));
        raw.push_str(&post("/release", SECRET, &format!(r#"{{"resource":"pipe-{i}","owner":"p"}}"#)));
    }
    c.send(raw);
    for _ in 0..5 {
        assert_eq!(c.read().text(), plain("200 OK", "OK"));
        assert_eq!(c.read().text(), plain("409 Conflict", NOT_FOUND));
    }
}

#[test]
fn a_pipeline_split_at_every_byte_is_served_the_same() {
    let s = TestServer::start(2);
    let mut c = s.connect();
    let raw = format!(
        "{}{}GET /health HTTP/1.1\r\n\r\n",
        post("/acquire", SECRET, r#"{"resource":"split","owner":"a"}"#),
        post("/release", SECRET, r#"{"resource":"split","owner":"a"}"#)
    );
    for byte in raw.as_bytes() {
        c.send([*byte]);
    }
    assert_eq!(c.read().status, 200);
    assert_eq!(c.read().text(), plain("200 OK", "OK"));
    assert_eq!(c.read().text(), plain("200 OK", "OK"));
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let s = TestServer::start(2);
    let mut c = s.connect();
    for i in 0..200 {
        assert_eq!(c.acquire(&format!("ka-{i}"), "k").status, 200);
        assert_eq!(c.release(&format!("ka-{i}"), "k").status, 200);
    }
}

#[test]
fn connection_close_and_http_1_0() {
    let s = TestServer::start(1);
    let mut c = s.connect();
    let r = c.call("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());

    let mut c = s.connect();
    let r = c.call("GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(c.is_closed(), "HTTP/1.0 closes by default");

    let mut c = s.connect();
    assert_eq!(c.call("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").header("connection"), None);
    assert_eq!(c.call("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").status, 200, "kept alive");
}

#[test]
fn expect_100_continue() {
    let s = TestServer::start(1);
    let mut c = s.connect();
    let body = r#"{"resource":"cont","owner":"o"}"#;
    c.send(format!(
        "POST /acquire HTTP/1.1\r\nExpect: 100-continue\r\nX-LOCKSERVER-SECRET: {SECRET}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    assert_eq!(c.read().head, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send(body);
    assert_eq!(c.read().status, 200);

    // Refused before the body is sent: the final answer at once, then close.
    c.send(format!(
        "POST /acquire HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    let r = c.read();
    assert_eq!((r.status, r.header("connection")), (401, Some("close")));
}

#[test]
fn framing_errors_get_their_status_and_close() {
    let s = TestServer::start(1);
    let cases: [(&str, u16); 6] = [
        ("POST /acquire HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        ("POST /acquire HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        ("POST /acquire HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400),
        ("GARBAGE\r\n\r\n", 400),
        ("GET / HTTP/3.0\r\n\r\n", 505),
        ("GET /health HTTP/1.1\r\nX-Bad\x01: v\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        let mut c = s.connect();
        let r = c.call(raw);
        assert_eq!((r.status, r.header("connection")), (status, Some("close")), "{raw:?}");
        assert!(c.is_closed());
    }
    let mut c = s.connect();
    let r = c.call(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(5000)));
    assert_eq!(r.status, 414);
    let mut c = s.connect();
    let r = c.call(format!("GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n", "v".repeat(9000)));
    assert_eq!(r.status, 431);
    assert_eq!(s.connect().call("GET /health HTTP/1.1\r\n\r\n").status, 200, "the server is fine");
}

#[test]
fn a_lease_expires_on_time() {
    let s = TestServer::start(2);
    let mut c = s.connect();
    let start = Instant::now();
    assert_eq!(c.post("/acquire", SECRET, r#"{"resource":"ttl","owner":"a","expire":1}"#).status, 200);
    assert_eq!(c.acquire("ttl", "b").status, 409);
    thread::sleep(Duration::from_millis(500).saturating_sub(start.elapsed()));
    assert_eq!(c.acquire("ttl", "b").status, 409, "not before one second");
    thread::sleep(Duration::from_millis(1050).saturating_sub(start.elapsed()));
    let r = c.acquire("ttl", "b");
    assert_eq!(r.status, 200, "free right after its second, not at the next sweep");

    // Fractional seconds, to the millisecond.
    assert_eq!(c.post("/acquire", SECRET, r#"{"resource":"ttl2","owner":"a","expire":0.2}"#).status, 200);
    thread::sleep(Duration::from_millis(260));
    assert_eq!(c.acquire("ttl2", "b").status, 200);
}

#[test]
fn many_connections_on_every_core_with_names_on_every_shard() {
    let s = TestServer::start(2);
    let workers: Vec<_> = (0..32)
        .map(|w| {
            let addr = s.addr;
            thread::spawn(move || {
                let mut c = Http::connect(addr);
                for i in 0..50 {
                    let name = format!("spread-{w}-{i}");
                    assert_eq!(c.acquire(&name, "w").status, 200);
                    assert_eq!(c.acquire(&name, "x").status, 409);
                    assert_eq!(c.release(&name, "w").status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn contended_names_are_granted_to_one_holder_at_a_time() {
    let s = TestServer::start(2);
    let holders = std::sync::Arc::new(std::sync::Mutex::new([0i32; 4]));
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (addr, holders) = (s.addr, holders.clone());
            thread::spawn(move || {
                let mut c = Http::connect(addr);
                let owner = format!("w{w}");
                for i in 0..200 {
                    let name = format!("hot-{}", i % 4);
                    if c.acquire(&name, &owner).status == 200 {
                        {
                            let mut h = holders.lock().unwrap();
                            h[i % 4] += 1;
                            assert_eq!(h[i % 4], 1, "two holders of {name}");
                        }
                        holders.lock().unwrap()[i % 4] -= 1;
                        assert_eq!(c.release(&name, &owner).status, 200);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_waiting_acquire_gets_the_lock_the_moment_it_is_released() {
    let s = TestServer::start(2);
    let mut holder = s.connect();
    let first = holder.acquire("handoff", "a").token();
    let addr = s.addr;
    let waiter = thread::spawn(move || {
        Http::connect(addr).post("/acquire", SECRET, r#"{"resource":"handoff","owner":"b","wait":5}"#)
    });
    thread::sleep(Duration::from_millis(200));
    assert_eq!(holder.release("handoff", "a").status, 200);
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.token() > first, "tokens rise across a hand-off");
    // Handed over by the server, not polled for: the wait was never answered "held", and the
    // two grants are the two acquires. (How fast a hand-off is: BENCHMARKS.md.)
    assert_eq!((metric(&s, "ringlock_conflicts_total"), metric(&s, "ringlock_grants_total")), (0, 2));
    assert_eq!(holder.release("handoff", "b").status, 200, "b holds it now");
}

#[test]
fn a_wait_that_runs_out_answers_409() {
    let s = TestServer::start(1);
    let mut c = s.connect();
    c.acquire("wait-out", "a");
    let start = Instant::now();
    let r = c.post("/acquire", SECRET, r#"{"resource":"wait-out","owner":"b","wait":0.3}"#);
    assert_eq!(r.text(), plain("409 Conflict", LOCKED));
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_client_that_leaves_while_waiting_is_not_given_the_lock() {
    let s = TestServer::start(2);
    let mut holder = s.connect();
    holder.acquire("leaver", "a");
    let mut leaver = s.connect();
    leaver.send(post("/acquire", SECRET, r#"{"resource":"leaver","owner":"gone","wait":30}"#));
    thread::sleep(Duration::from_millis(100));
    drop(leaver);
    thread::sleep(Duration::from_millis(100));
    holder.release("leaver", "a");
    assert_eq!(holder.acquire("leaver", "c").status, 200, "the lock did not go to the client that left");
}

#[test]
fn tokens_extend_inspect_and_list() {
    let s = TestServer::start(2);
    let mut c = s.connect();
    let t1 = c.post("/acquire", SECRET, r#"{"resource":"job/1","owner":"a","expire":0.1}"#).token();
    thread::sleep(Duration::from_millis(150));
    let t2 = c.post("/acquire", SECRET, r#"{"resource":"job/1","owner":"b","expire":10}"#).token();
    assert!(t2 > t1, "tokens rise across expiry");

    let stale = format!(r#"{{"resource":"job/1","owner":"b","token":{t1}}}"#);
    assert_eq!(c.post("/release", SECRET, &stale).text(), plain("409 Conflict", "ERR Token mismatch"));
    let r = c.post(
        "/extend",
        SECRET,
        &format!(r#"{{"resource":"job/1","owner":"b","expire":60,"token":"{t2}"}}"#),
    );
    assert_eq!(r.text(), granted(t2));
    assert_eq!(c.post("/extend", SECRET, r#"{"resource":"job/1","owner":"a","expire":60}"#).status, 409);

    let info = c.get("/locks/job%2F1", SECRET);
    assert_eq!(info.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(v["owner"], "b");
    assert_eq!(v["token"].as_u64(), Some(t2));
    assert!(v["expires_in_ms"].as_u64().unwrap() > 59_000);
    assert_eq!(c.get("/locks/job%2F9", SECRET).status, 404);

    for i in 2..=5 {
        c.acquire(&format!("job/{i}"), "a");
    }
    c.acquire("other", "a");
    let page: serde_json::Value =
        serde_json::from_str(&c.get("/locks?prefix=job/&limit=3", SECRET).body).unwrap();
    let names: Vec<&str> =
        page["locks"].as_array().unwrap().iter().map(|l| l["resource"].as_str().unwrap()).collect();
    assert_eq!(names, ["job/1", "job/2", "job/3"]);
    assert_eq!(page["next"], "job/3");
    let page: serde_json::Value =
        serde_json::from_str(&c.get("/locks?prefix=job/&limit=3&after=job/3", SECRET).body).unwrap();
    let names: Vec<&str> =
        page["locks"].as_array().unwrap().iter().map(|l| l["resource"].as_str().unwrap()).collect();
    assert_eq!(names, ["job/4", "job/5"]);
    assert_eq!(page["next"], serde_json::Value::Null);
}

#[test]
fn requests_past_the_in_flight_limit_in_one_write_are_all_answered() {
    // Two cores and two requests in flight at most: of forty acquires sent in one write, those
    // for the other core's shard wait for it, so the server stops reading at two. The rest,
    // already read, are served as room comes, though the client sends nothing more.
    let mut config = ringlock::config::Config::local(2, SECRET);
    config.limits.max_in_flight = 2;
    let server = TestServer::with_config(config);
    let mut c = server.connect();
    let burst: String = (0..40)
        .map(|i| post("/acquire", SECRET, &format!(r#"{{"resource":"burst-{i}","owner":"o"}}"#)))
        .collect();
    c.send(burst);
    for i in 0..40 {
        let r = c.read();
        assert_eq!((r.status, r.body.as_str()), (200, "OK"), "answer {i}");
    }
}

#[test]
fn a_list_page_costs_about_its_own_size_not_every_lock() {
    // Far more locks than a page looks at, on one core: past 1,792 a core that is listed keeps
    // its names in order (in buckets of 896 to 1,791), and a page of 1,000 looks at no more
    // than 7 buckets.
    let server = TestServer::with_config(ringlock::config::Config::local(1, SECRET));
    let n = 40_000;
    let name = |i: usize| format!("page/{:05}", (i * 7919) % n);
    let mut c = server.connect();
    for batch in 0..n / 1000 {
        let body = |i| format!(r#"{{"resource":"{}","owner":"o"}}"#, name(i));
        c.send(
            (batch * 1000..(batch + 1) * 1000)
                .map(|i| post("/acquire", SECRET, &body(i)))
                .collect::<String>(),
        );
        for _ in 0..1000 {
            assert_eq!(c.read().status, 200);
        }
    }
    let mut names: Vec<String> = (0..n).map(name).collect();
    names.sort();
    let most = 7 * 1792;
    let visited = || crate::support::metric(&server, "ringlock_list_visited_total");
    let (mut after, mut seen, mut pages, mut before) = (String::new(), 0, 0, visited());
    loop {
        let path = if after.is_empty() {
            "/locks?limit=1000".to_owned()
        } else {
            format!("/locks?limit=1000&after={}", after.replace('/', "%2F"))
        };
        let page: serde_json::Value = serde_json::from_str(&c.get(&path, SECRET).body).unwrap();
        let looked = visited() - before;
        before += looked;
        // The first page builds the core's index of names: one look at every lock.
        let allowed = if pages == 0 { n as u64 + most } else { most };
        assert!(looked <= allowed, "page {pages} looked at {looked} of {n} locks");
        let got: Vec<&str> =
            page["locks"].as_array().unwrap().iter().map(|l| l["resource"].as_str().unwrap()).collect();
        assert_eq!(got, names[seen..seen + got.len()].iter().map(String::as_str).collect::<Vec<_>>());
        seen += got.len();
        pages += 1;
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    // The last full page cannot know it is the last: an empty one follows.
    assert_eq!((seen, pages), (n, n / 1000 + 1));
}
