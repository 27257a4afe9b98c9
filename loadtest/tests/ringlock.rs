//! The generator against a real ringlock, in-process on 127.0.0.1:0: the wire target
//! pipelined, and server-side waiting measured as hand-offs, over the wire and HTTP.

use std::process::Command as Process;

use loadtest::stats::Report;
use ringlock::config::Config;
use ringlock::server::Server;

mod support;

const SECRET: &str = "loadtest-test";

/// A run with the test server's secret.
fn run(line: &str, addr: &str) -> Report {
    support::run(addr, &format!("--secret {SECRET} {line}"))
}

/// On one core every answer is immediate and in order; on two, a request for the other
/// core's resource is answered after the local ones behind it, and the generator matches
/// replies by id.
#[test]
fn the_wire_target_pipelines_against_ringlock_on_one_core_and_two() {
    for cores in [1, 2] {
        let server = Server::start(Config::local(cores, SECRET)).unwrap();
        let addr = server.local_addr().to_string();
        let r = run("--target wire -c 4 -d 16 --ttl-ms 30000 --warmup 0.1 --duration 0.5", &addr);
        assert_eq!(r.counts.errors, 0, "{cores} cores: {r}");
        assert!(r.requests > 1000, "{cores} cores: {r}");
        assert!(r.counts.grants > 0 && r.counts.done > 0, "{cores} cores: {r}");
        // Uncontended: every acquire is granted and every release done.
        assert_eq!(r.counts.conflicts, 0, "{cores} cores: {r}");
        server.shutdown();
    }
}

#[test]
fn server_side_waits_are_handed_off_without_conflicts() {
    let server = Server::start(Config::local(1, SECRET)).unwrap();
    let addr = server.local_addr().to_string();
    for target in ["wire", "http"] {
        let line = format!(
            "--target {target} --workload hold -c 8 --hot 2 --hold-ms 1 --wait-ms 5000 --ttl-ms 30000 \
             --warmup 0.1 --duration 0.5"
        );
        let r = run(&line, &addr);
        assert_eq!(r.counts.errors, 0, "{target}: {r}");
        assert_eq!(r.counts.conflicts, 0, "{target}: waiting, nobody is refused: {r}");
        let handoff = r.handoff_us.expect("hand-offs measured");
        assert!(handoff.count > 10 && handoff.count <= r.counts.grants, "{target}: {r}");
    }
    server.shutdown();
}

/// The command finds its server and secret as the SDKs do: `LOCKSERVER_ADDR` and
/// `LOCKSERVER_SECRET` from the environment, else from `.env`; flags win over both.
#[test]
fn the_command_takes_address_and_secret_from_the_environment_and_dotenv() {
    let server = Server::start(Config::local(1, SECRET)).unwrap();
    let addr = server.local_addr().to_string();
    let dir = std::env::temp_dir().join(format!("loadtest-dotenv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let loadtest = || {
        let mut p = Process::new(env!("CARGO_BIN_EXE_loadtest"));
        p.args([
            "run",
            "--quiet",
            "--json",
            "--target",
            "wire",
            "-c",
            "2",
            "--warmup",
            "0",
            "--duration",
            "0.3",
        ]);
        p.current_dir(&dir).env_remove("LOCKSERVER_ADDR").env_remove("LOCKSERVER_SECRET");
        p
    };
    let served = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["counts"]["errors"], 0, "{report}");
        assert!(report["counts"]["grants"].as_u64().unwrap() > 0, "{report}");
    };

    served(loadtest().env("LOCKSERVER_ADDR", &addr).env("LOCKSERVER_SECRET", SECRET).output().unwrap());

    let refused = loadtest().env("LOCKSERVER_ADDR", &addr).output().unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("Unauthorized"), "{why}");
    assert!(!why.contains(SECRET), "the secret is never printed: {why}");

    std::fs::write(dir.join(".env"), format!("LOCKSERVER_ADDR={addr}\nLOCKSERVER_SECRET={SECRET}\n"))
        .unwrap();
    served(loadtest().output().unwrap());
    // A flag wins over `.env`.
    let flagged = loadtest().args(["--secret", "wrong"]).output().unwrap();
    assert!(!flagged.status.success());

    std::fs::remove_dir_all(&dir).unwrap();
    server.shutdown();
}

/// Over TLS (`--ca`), pipelined, both ringlock protocols are served without errors.
#[test]
fn the_http_and_wire_targets_over_tls() {
    let dir = std::env::temp_dir().join(format!("loadtest-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let mut config = Config::local(1, SECRET);
    config.tls = Some(ringlock::config::TlsFiles {
        cert: cert_pem,
        key: key_pem,
        client_ca: None,
        peer_ca: None,
        allow_plaintext: false,
    });
    let server = Server::start(config).unwrap();
    let addr = server.local_addr().to_string();
    for target in ["wire", "http"] {
        let line = format!(
            "--target {target} --ca {} -c 2 -d 8 --ttl-ms 30000 --warmup 0.1 --duration 0.3",
            ca_pem.display()
        );
        let r = run(&line, &addr);
        assert_eq!(r.counts.errors, 0, "{target}: {r}");
        assert!(r.counts.grants > 0 && r.counts.done > 0, "{target}: {r}");
        assert_eq!(r.counts.conflicts, 0, "{target}: {r}");
    }
    server.shutdown();
    std::fs::remove_dir_all(dir).unwrap();
}
