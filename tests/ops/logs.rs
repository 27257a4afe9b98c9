//! JSON logs: every line on standard error is one JSON object with the time, the level, the
//! message and the fields, and none names a lock, an owner or the secret.

use serde_json::Value;

use crate::support::{Http, Process, SECRET};

use super::ringlock;

/// Parses every line of `log` as a JSON object with exactly `time`, `level`, `message` and
/// `fields`.
fn parse_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            let keys: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, ["fields", "level", "message", "time"], "{line}");
            let time = v["time"].as_str().unwrap();
            // 2026-11-22T15:05:00.123Z
            assert_eq!(time.len(), 24, "{time}");
            assert!(
                time.ends_with('Z') && time.as_bytes()[10] == b'T' && time.as_bytes()[19] == b'.',
                "{time}"
            );
            assert!(v["fields"].is_object(), "{line}");
            v
        })
        .collect()
}

#[test]
fn json_logs_one_object_a_line() {
    let mut cmd = ringlock();
    cmd.env("RINGLOCK_LOG_FORMAT", "json").args(["--shutdown-timeout", "3"]);
    let data_dir =
        std::path::PathBuf::from(cmd.get_envs().find(|(k, _)| *k == "RINGLOCK_DATA_DIR").unwrap().1.unwrap());
    let server = Process::start(cmd);
    let mut c = Http::connect(server.addr);
    assert_eq!(
        c.post("/acquire", "changeme", r#"{"resource":"secret-project","owner":"alice"}"#).status,
        200
    );
    assert_eq!(c.post("/acquire", SECRET, r#"{"resource":"secret-project","owner":"bob"}"#).status, 401);
    server.terminate();
    let addr = server.addr;
    let (status, log) = server.finish();
    assert!(status.success(), "{status:?}");
    let mut lines = parse_lines(&log);
    // First, what the data directory held: timed, so its message varies; its fields say it.
    let recovered = lines.remove(0);
    assert!(recovered["message"].as_str().unwrap().starts_with("recovered 0 locks from "), "{recovered}");
    assert_eq!(
        (&recovered["level"], &recovered["fields"]["locks"]),
        (&serde_json::json!("info"), &serde_json::json!(0))
    );
    assert!(recovered["fields"]["ms"].is_u64(), "{recovered}");
    let summary: Vec<(&str, &str)> =
        lines.iter().map(|v| (v["level"].as_str().unwrap(), v["message"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        [
            ("info", format!("listening on {addr}").as_str()),
            ("warn", "set LOCKSERVER_SECRET (or LOCKSERVER_SECRET_FILE) to serve other machines"),
            ("info", "SIGTERM: shutting down (at most 3s)"),
            ("info", "stopped"),
        ]
    );
    assert_eq!(
        lines[0]["fields"],
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "addr": addr.to_string(),
            "threads": 2,
            "storage": format!("durable in {}, fsync always", data_dir.display()),
            "protected": true,
        })
    );
    assert_eq!(lines[2]["fields"], serde_json::json!({"signal": "SIGTERM", "timeout_s": 3}));
    assert_eq!(lines[3]["fields"], serde_json::json!({}));
    for word in ["secret-project", "alice", "bob", SECRET, "changeme"] {
        assert!(!log.contains(word), "the log names {word:?}:\n{log}");
    }
}

#[test]
fn log_formats_are_text_or_json() {
    let out = ringlock().args(["--log-format", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: invalid value 'xml' for '--log-format <LOG_FORMAT>'"), "{err}");
    assert!(err.contains("[possible values: text, json]"), "{err}");
}
