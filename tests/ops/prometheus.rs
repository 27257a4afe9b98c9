//! `/metrics` as Prometheus reads it: `promtool check metrics` (Debian's `prometheus`
//! package) finds no problem; and every metric the Grafana dashboard
//! (`packaging/grafana-dashboard.json`) queries is one the server exports.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{SECRET, TestServer, post, sdks};

/// A server that has granted, refused, released, renewed, expired and waited, and its metrics.
fn busy_metrics() -> (TestServer, String) {
    let s = TestServer::start(2);
    let mut c = s.connect();
    assert_eq!(c.acquire("m/1", "a").status, 200);
    assert_eq!(c.acquire("m/1", "b").status, 409);
    assert_eq!(c.post("/extend", SECRET, r#"{"resource":"m/1","owner":"a","expire":60}"#).status, 200);
    assert_eq!(c.post("/acquire", SECRET, r#"{"resource":"m/2","owner":"a","expire":0}"#).status, 200);
    assert_eq!(c.post("/acquire", SECRET, r#"{"resource":"m/1","owner":"w","wait":0.01}"#).status, 409);
    assert_eq!(c.release("m/1", "a").status, 200);
    // A wait that is granted (its answer waits for the release pipelined behind it), a hold
    // that ends, and a forced release: every histogram and counter has something in it.
    c.send(post("/acquire", SECRET, r#"{"resource":"m/3","owner":"a"}"#));
    c.send(post("/acquire", SECRET, r#"{"resource":"m/3","owner":"w","wait":5}"#));
    c.send(post("/release", SECRET, r#"{"resource":"m/3","owner":"a"}"#));
    let answers: Vec<u16> = (0..3).map(|_| c.read().status).collect();
    assert_eq!(answers, [200, 200, 200]);
    assert_eq!(c.post("/release", SECRET, r#"{"resource":"m/3","force":true}"#).status, 200);
    let r = c.call("GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    (s, r.body)
}

#[test]
fn metrics_pass_promtool() {
    let (_server, metrics) = busy_metrics();
    let Some(promtool) = sdks::system_tool("promtool", "prometheus") else { return };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}\n{metrics}");
    assert_eq!(said, "", "no lint problem");
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let (_server, metrics) = busy_metrics();
    let families: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let exported = |name: &str| {
        families.contains(&name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|f| families.contains(&f)))
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut queried = Vec::new();
    for expr in &exprs {
        let mut rest = *expr;
        while let Some(at) = rest.find("ringlock_") {
            let name: String =
                rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[at + name.len()..];
            assert!(exported(&name), "the dashboard queries {name}, which /metrics lacks ({expr})");
            queried.push(name);
        }
    }
    for family in [
        "ringlock_grants_total",
        "ringlock_conflicts_total",
        "ringlock_expiries_total",
        "ringlock_held_locks",
        "ringlock_connections",
        "ringlock_request_duration_seconds_bucket",
        "ringlock_wait_duration_seconds_bucket",
        "ringlock_hold_duration_seconds_bucket",
        "ringlock_forced_releases_total",
        "ringlock_log_sync_duration_seconds_bucket",
        "ringlock_log_batch_bytes_bucket",
        "ringlock_log_failing",
    ] {
        assert!(queried.iter().any(|q| q == family), "the dashboard shows {family}");
    }
}
