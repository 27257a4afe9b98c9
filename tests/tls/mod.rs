//! TLS and mTLS on the shared port: HTTP and the wire protocol inside TLS (raw rustls and the
//! Rust client), plaintext refused in its own protocol (and served when allowed), clients
//! that do not trust the server or bring no certificate refused, a certificate reloaded on
//! SIGHUP, and a cluster whose members speak TLS.

mod pki;

use std::io::{Read, Write};
use std::net::TcpStream;

use ringlock::config::{Config, TlsFiles};

use crate::support::{SECRET, TestServer, plain, post};
use pki::{Issued, Pki};

/// The TLS settings of a server with `server`'s certificate.
fn files(server: &Issued, client_ca: Option<std::path::PathBuf>, allow_plaintext: bool) -> TlsFiles {
    TlsFiles { cert: server.cert.clone(), key: server.key.clone(), client_ca, peer_ca: None, allow_plaintext }
}

/// A one-core server in memory with these TLS settings.
fn server(tls: TlsFiles) -> TestServer {
    let mut config = Config::local(1, SECRET);
    config.tls = Some(tls);
    TestServer::with_config(config)
}

/// The wire protocol's HELLO with the test secret, and its answer (`tests/wire/golden.txt`).
const HELLO: &[u8] = b"\x00RL\x01\x12\x00\x00\x00\x01\x01\x00\x00\x00\x0b\x00test-secret";
const HELLO_OK: &[u8] = b"\x06\x00\x00\x00\x81\x01\x00\x00\x00\x01";
/// A PING and its PONG.
const PING: &[u8] = b"\x05\x00\x00\x00\x02\x02\x00\x00\x00";
const PONG: &[u8] = b"\x05\x00\x00\x00\x82\x02\x00\x00\x00";

fn closing(status: &str, body: &str) -> String {
    plain(status, body).replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1)
}

const TLS_REQUIRED: &str = "ERR TLS required: this server serves only TLS clients (connect with https://, or \
                            a client given RINGLOCK_CA)";

#[test]
fn http_and_wire_inside_tls() {
    let pki = Pki::new("tls-basic");
    let cert = pki.issue("server", &["127.0.0.1", "localhost"]);
    let server = server(files(&cert, None, false));
    let config = pki::client_config(&pki.ca(), None);

    let mut tls = pki::connect(server.addr, config.clone()).unwrap();
    let acquire = post("/acquire", SECRET, r#"{"resource":"r1","owner":"alice"}"#);
    tls.write_all(acquire.as_bytes()).unwrap();
    let health = b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
    let answers = String::from_utf8(pki::exchange(&mut tls, health)).unwrap();
    let granted = "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-type: text/plain; charset=utf-8\r\n\
                   content-length: 2\r\nX-Lockserver-Token: 1\r\n\r\nOK";
    assert_eq!(answers, format!("{granted}{}", closing("200 OK", "OK")));

    // The wire protocol inside TLS: the golden handshake and ping, byte for byte.
    let mut tls = pki::connect(server.addr, config).unwrap();
    tls.write_all(HELLO).unwrap();
    assert_eq!(pki::read_n(&mut tls, HELLO_OK.len()), HELLO_OK);
    tls.write_all(PING).unwrap();
    assert_eq!(pki::read_n(&mut tls, PONG.len()), PONG);
}

#[test]
fn plaintext_is_refused_in_its_protocol_unless_allowed() {
    let pki = Pki::new("tls-plain");
    let cert = pki.issue("server", &["127.0.0.1"]);
    let strict = server(files(&cert, None, false));
    let mut tcp = TcpStream::connect(strict.addr).unwrap();
    let answer = pki::exchange(&mut tcp, b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("400 Bad Request", TLS_REQUIRED));

    let mut tcp = TcpStream::connect(strict.addr).unwrap();
    let answer = pki::exchange(&mut tcp, HELLO);
    let mut want = Vec::new();
    ringlock_client::frame::encode_reply(
        &mut want,
        0,
        &ringlock_client::frame::WireReply::ProtocolError { reason: TLS_REQUIRED },
    );
    assert_eq!(answer, want);
    // Nothing was served: the server is healthy, over TLS.
    let mut tls = pki::connect(strict.addr, pki::client_config(&pki.ca(), None)).unwrap();
    let answer = pki::exchange(&mut tls, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));

    // With the opt-in, both are served, in plaintext and in TLS.
    let lenient = server(files(&cert, None, true));
    let mut tcp = TcpStream::connect(lenient.addr).unwrap();
    let answer = pki::exchange(&mut tcp, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));
    let mut tcp = TcpStream::connect(lenient.addr).unwrap();
    tcp.write_all(HELLO).unwrap();
    assert_eq!(pki::read_n(&mut tcp, HELLO_OK.len()), HELLO_OK);
    let mut tls = pki::connect(lenient.addr, pki::client_config(&pki.ca(), None)).unwrap();
    let answer = pki::exchange(&mut tls, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails() {
    let pki = Pki::new("tls-untrusted");
    let other = Pki::new("tls-other");
    let cert = pki.issue("server", &["127.0.0.1"]);
    let server = server(files(&cert, None, false));
    let e = pki::connect(server.addr, pki::client_config(&other.ca(), None)).unwrap_err();
    assert!(e.to_string().contains("invalid peer certificate: UnknownIssuer"), "{e}");
    // The server is unharmed, and serves a client that trusts it.
    let mut tls = pki::connect(server.addr, pki::client_config(&pki.ca(), None)).unwrap();
    let answer = pki::exchange(&mut tls, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));
    // A certificate for another name is refused too.
    let misnamed = pki.issue("misnamed", &["db.example"]);
    let server = server_for(&misnamed);
    let e = pki::connect(server.addr, pki::client_config(&pki.ca(), None)).unwrap_err();
    assert!(e.to_string().contains("certificate not valid for name \"127.0.0.1\""), "{e}");
}

fn server_for(cert: &Issued) -> TestServer {
    server(files(cert, None, false))
}

#[test]
fn mtls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new("mtls");
    let clients = Pki::new("mtls-clients");
    let cert = pki.issue("server", &["127.0.0.1"]);
    let server = server(files(&cert, Some(clients.ca()), false));
    let health = b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";

    // Without a certificate: the server ends the handshake (TLS 1.3 tells the client on its
    // first read), and nothing is answered.
    let refused = pki::connect(server.addr, pki::client_config(&pki.ca(), None))
        .and_then(|mut tls| {
            tls.write_all(health)?;
            let mut out = Vec::new();
            tls.read_to_end(&mut out).map(|_| out)
        })
        .unwrap_err();
    assert!(refused.to_string().contains("CertificateRequired"), "{refused}");

    // A certificate of another CA: refused too.
    let stranger = pki.issue("stranger", &["client"]);
    let refused = pki::connect(server.addr, pki::client_config(&pki.ca(), Some(&stranger)))
        .and_then(|mut tls| {
            tls.write_all(health)?;
            let mut out = Vec::new();
            tls.read_to_end(&mut out).map(|_| out)
        })
        .unwrap_err();
    assert!(refused.to_string().contains("UnknownCA"), "{refused}");

    // With one the client CA signed: served.
    let client = clients.issue("client", &["client"]);
    let mut tls = pki::connect(server.addr, pki::client_config(&pki.ca(), Some(&client))).unwrap();
    let answer = pki::exchange(&mut tls, health);
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));
}

#[test]
fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let first = Pki::new("tls-reload-first");
    let second = Pki::new("tls-reload-second");
    let cert = first.issue("server", &["127.0.0.1"]);
    // The certificate and key come from the config file's keys (the long flag names).
    let config = first.dir.path().join("ringlock.toml");
    let toml = format!("tls-cert = {:?}\ntls-key = {:?}\n", cert.cert, cert.key);
    std::fs::write(&config, toml).unwrap();
    let mut cmd = crate::support::ringlock_command();
    cmd.args(["-b", "127.0.0.1", "-p", "0", "--threads", "1", "--in-memory", "--config"])
        .arg(&config)
        .env("LOCKSERVER_SECRET", SECRET);
    let process = crate::support::Process::start(cmd);

    let mut open = pki::connect(process.addr, pki::client_config(&first.ca(), None)).unwrap();
    open.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(pki::read_answer(&mut open, &plain("200 OK", "OK")), plain("200 OK", "OK"));

    // The files are replaced by a certificate of another CA, and the server told.
    let renewed = second.issue("server", &["127.0.0.1"]);
    std::fs::copy(&renewed.cert, &cert.cert).unwrap();
    std::fs::copy(&renewed.key, &cert.key).unwrap();
    process.signal(libc::SIGHUP);
    // The reload is done when a new connection is served the new certificate (bounded: the
    // signal is taken within milliseconds).
    let mut renewed_client = None;
    for _ in 0..500 {
        if let Ok(tls) = pki::connect(process.addr, pki::client_config(&second.ca(), None)) {
            renewed_client = Some(tls);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut renewed_client = renewed_client.expect("the new certificate is served after SIGHUP");
    let answer = pki::exchange(&mut renewed_client, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));
    // A client that trusts only the old CA is refused now.
    let e = pki::connect(process.addr, pki::client_config(&first.ca(), None)).unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // The connection opened before the reload goes on with its session.
    let answer = pki::exchange(&mut open, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));

    // A reload that fails (a key that is no key) says why and keeps the certificate in force.
    std::fs::write(&cert.key, "not a key\n").unwrap();
    let mut process = process;
    let mut log = std::io::BufReader::new(process.child.stderr.take().unwrap());
    process.signal(libc::SIGHUP);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut log, &mut line).unwrap() > 0, "{lines:?}");
        if line.contains("SIGHUP: kept the TLS certificate in force: ") {
            let why = format!("{}: cannot read a PEM private key: ", cert.key.display());
            assert!(line.contains(&why), "{line}");
            break;
        }
        lines.push(line);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("SIGHUP: reloaded the TLS certificate and keys; new connections get them")),
        "{lines:?}"
    );
    let mut tls = pki::connect(process.addr, pki::client_config(&second.ca(), None)).unwrap();
    let answer = pki::exchange(&mut tls, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("200 OK", "OK"));
}

/// A client config of the Rust client for `server`, over TLS with `tls`.
fn client_config(
    server: &TestServer,
    owner: &str,
    tls: ringlock_client::TlsConfig,
) -> ringlock_client::Config {
    ringlock_client::Config {
        addr: server.host_port(),
        owner: owner.into(),
        secret: SECRET.into(),
        tls: Some(tls),
        ..ringlock_client::Config::default()
    }
}

#[test]
fn the_rust_client_over_tls_and_mtls() {
    use ringlock_client::blocking::Client;
    use ringlock_client::{AcquireOptions, Error, TlsConfig};

    let pki = Pki::new("tls-client");
    let clients = Pki::new("tls-client-clients");
    let cert = pki.issue("server", &["127.0.0.1"]);
    let server = server(files(&cert, Some(clients.ca()), false));
    let issued = clients.issue("worker", &["worker"]);

    let tls = TlsConfig::new(pki.ca()).with_client_cert(&issued.cert, &issued.key);
    let alice = Client::connect(&client_config(&server, "alice", tls.clone())).unwrap();
    let lease = alice.acquire("tls-job", AcquireOptions::default()).unwrap();
    assert_eq!(lease.token, 1);
    let bob = Client::connect(&client_config(&server, "bob", tls)).unwrap();
    assert!(matches!(bob.acquire("tls-job", AcquireOptions::default()), Err(Error::Busy)));
    assert_eq!(bob.inspect("tls-job").unwrap().map(|i| i.owner), Some("alice".to_owned()));
    alice.release("tls-job", Some(1)).unwrap();
    assert_eq!(bob.inspect("tls-job").unwrap(), None);

    // Without a client certificate the server refuses the handshake: nothing connects.
    let refused = Client::connect(&client_config(&server, "carol", TlsConfig::new(pki.ca())));
    assert!(refused.is_err(), "connected without a client certificate");
    // A client that trusts another CA refuses the server.
    let other = Pki::new("tls-client-other");
    let tls = TlsConfig::new(other.ca()).with_client_cert(&issued.cert, &issued.key);
    match Client::connect(&client_config(&server, "dave", tls)) {
        Err(Error::Io(e)) => assert!(e.to_string().contains("UnknownIssuer"), "{e}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a server of an untrusted CA was trusted"),
    }
}

/// `ringlock SUBCOMMAND` against `server`, its variables cleared.
fn ringlock_client_command(server: &TestServer, subcommand: &str) -> std::process::Command {
    let mut cmd = crate::support::ringlock_command();
    cmd.arg(subcommand).env("LOCKSERVER_ADDR", server.host_port()).env("LOCKSERVER_SECRET", SECRET);
    cmd
}

#[test]
fn the_lock_command_never_runs_its_command_for_an_untrusted_server() {
    let pki = Pki::new("tls-cli");
    let other = Pki::new("tls-cli-other");
    let cert = pki.issue("server", &["127.0.0.1"]);
    let server = server(files(&cert, None, false));
    let marker = pki.dir.path().join("ran");

    let out = ringlock_client_command(&server, "lock")
        .args(["tls-cli-job", "--", "touch"])
        .arg(&marker)
        .env("RINGLOCK_CA", other.ca())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UnknownIssuer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "the command ran without the lock");
    // Nor in plaintext against a server that requires TLS.
    let out = ringlock_client_command(&server, "lock")
        .args(["tls-cli-job", "--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "the command ran without the lock");

    // Trusting the server's CA (the flag this time), it runs, holding the lock.
    let out = ringlock_client_command(&server, "lock")
        .arg("--ca")
        .arg(pki.ca())
        .args(["tls-cli-job", "--", "sh", "-c", "echo \"$RINGLOCK_RESOURCE $RINGLOCK_TOKEN\"; touch \"$0\""])
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tls-cli-job 1\n");
    assert!(marker.exists());
}

#[test]
fn the_admin_commands_over_mtls() {
    let pki = Pki::new("tls-admin");
    let clients = Pki::new("tls-admin-clients");
    let cert = pki.issue("server", &["127.0.0.1"]);
    let server = server(files(&cert, Some(clients.ca()), false));
    let operator = clients.issue("operator", &["operator"]);
    let mut tls = pki::connect(server.addr, pki::client_config(&pki.ca(), Some(&operator))).unwrap();
    let acquire = post("/acquire", SECRET, r#"{"resource":"held","owner":"alice"}"#);
    tls.write_all(acquire.as_bytes()).unwrap();

    let with_cert = |cmd: &mut std::process::Command| {
        cmd.env("RINGLOCK_CA", pki.ca())
            .env("RINGLOCK_CLIENT_CERT", &operator.cert)
            .env("RINGLOCK_CLIENT_KEY", &operator.key);
    };
    // Once the grant is answered, `ringlock locks` lists it.
    let granted = "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-type: text/plain; charset=utf-8\r\n\
                   content-length: 2\r\nX-Lockserver-Token: 1\r\n\r\nOK";
    assert_eq!(pki::read_answer(&mut tls, granted), granted);
    let mut locks = ringlock_client_command(&server, "locks");
    with_cert(&mut locks);
    let out = locks.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with("held") && l.contains("alice")), "{listing}");

    let mut release = ringlock_client_command(&server, "release");
    release.args(["held", "--force"]);
    with_cert(&mut release);
    let out = release.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // Without the client certificate: refused, and the lock list is not shown.
    let out = ringlock_client_command(&server, "locks").env("RINGLOCK_CA", pki.ca()).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// How long the TLS cluster may take to elect a leader (as the cluster tests allow).
const ELECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /cluster` over TLS from the member at `addr`, if it answers.
fn cluster_status(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Option<serde_json::Value> {
    let mut tls = pki::connect(addr, config).ok()?;
    let request =
        format!("GET /cluster HTTP/1.1\r\nX-LOCKSERVER-SECRET: {SECRET}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8(answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200 ").then(|| serde_json::from_str(body).unwrap())
}

#[test]
fn a_cluster_over_mtls_serves_a_lock_through_a_follower() {
    use ringlock_client::blocking::Client;
    use ringlock_client::{AcquireOptions, Error, TlsConfig};

    // One CA signs the members' and the clients' certificates; it is the client CA, and so
    // (by default) the CA the members trust each other with.
    let pki = Pki::new("tls-cluster");
    let peers: Vec<(u64, u16, u16)> = (1..=3).map(|id| (id, free_port(), free_port())).collect();
    let peer_list =
        peers.iter().map(|(id, _, raft)| format!("{id}=127.0.0.1:{raft}")).collect::<Vec<_>>().join(",");
    let members: Vec<_> = peers
        .iter()
        .map(|(id, api, _)| {
            let cert = pki.issue(&format!("member-{id}"), &["127.0.0.1"]);
            let data = crate::support::TempDir::new("tls-member");
            let mut cmd = crate::support::ringlock_command();
            cmd.args([
                "-b",
                "127.0.0.1",
                "-p",
                &api.to_string(),
                "--threads",
                "1",
                "--node-id",
                &id.to_string(),
            ])
            .args(["--peers", &peer_list, "--data-dir"])
            .arg(data.path())
            .arg("--tls-cert")
            .arg(&cert.cert)
            .arg("--tls-key")
            .arg(&cert.key)
            .arg("--tls-client-ca")
            .arg(pki.ca())
            .env("LOCKSERVER_SECRET", SECRET);
            (crate::support::Process::start(cmd), data)
        })
        .collect();
    let addr = |i: usize| std::net::SocketAddr::from(([127, 0, 0, 1], peers[i].1));
    let operator = pki.issue("operator", &["operator"]);
    let config = pki::client_config(&pki.ca(), Some(&operator));

    // The members agree on a leader over TLS.
    let deadline = std::time::Instant::now() + ELECTION_WAIT;
    let leader = loop {
        let views: Vec<Option<u64>> = (0..3)
            .map(|i| cluster_status(addr(i), config.clone()).and_then(|s| s["leader_id"].as_u64()))
            .collect();
        if let Some(Some(id)) = views.first()
            && views.iter().all(|v| *v == Some(*id))
        {
            break (*id - 1) as usize;
        }
        assert!(std::time::Instant::now() < deadline, "no leader agreed on in {ELECTION_WAIT:?}: {views:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // A lock taken through a follower (its connection tunnelled to the leader over TLS) is
    // the cluster's: the other follower's client finds it held, and the leader names its owner.
    let worker = pki.issue("worker", &["worker"]);
    let tls = TlsConfig::new(pki.ca()).with_client_cert(&worker.cert, &worker.key);
    let through = |i: usize, owner: &str| {
        Client::connect(&ringlock_client::Config {
            addr: addr(i).to_string(),
            owner: owner.into(),
            secret: SECRET.into(),
            tls: Some(tls.clone()),
            ..ringlock_client::Config::default()
        })
        .unwrap()
    };
    let alice = through(followers[0], "alice");
    let lease = alice.acquire("tls-cluster-job", AcquireOptions::default()).unwrap();
    let bob = through(followers[1], "bob");
    assert!(matches!(bob.acquire("tls-cluster-job", AcquireOptions::default()), Err(Error::Busy)));
    let on_leader = through(leader, "observer").inspect("tls-cluster-job").unwrap().unwrap();
    assert_eq!((on_leader.owner.as_str(), on_leader.token), ("alice", lease.token));
    alice.release("tls-cluster-job", Some(lease.token)).unwrap();
    assert_eq!(bob.inspect("tls-cluster-job").unwrap(), None);

    // Plaintext is refused by a follower too, before anything is forwarded.
    let mut tcp = TcpStream::connect(addr(followers[0])).unwrap();
    let answer = pki::exchange(&mut tcp, b"GET /cluster HTTP/1.1\r\n\r\n");
    assert_eq!(String::from_utf8(answer).unwrap(), closing("400 Bad Request", TLS_REQUIRED));
    drop(members);
}

#[test]
fn a_connection_in_its_handshake_counts_against_the_connection_limit() {
    let pki = Pki::new("tls-limit");
    let cert = pki.issue("server", &["127.0.0.1"]);
    let mut config = Config::local(1, SECRET);
    config.tls = Some(files(&cert, None, false));
    config.limits.max_connections = 1;
    let server = TestServer::with_config(config);
    // Half a ClientHello's record header: the server waits for the rest.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent.write_all(&[0x16, 0x03]).unwrap();
    // Another client is refused as over the limit (in its protocol, plaintext here), once the
    // server has taken the first connection (a few tries: accepting it is not instant).
    let busy = closing("503 Service Unavailable", "ERR Too many connections");
    let mut answers = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        let answer = String::from_utf8(pki::exchange(&mut tcp, b"GET /health HTTP/1.1\r\n\r\n")).unwrap();
        if answer == busy {
            break;
        }
        answers.push(answer);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(answers.len() < 200, "never refused as busy: {:?}", answers.last());
    drop(silent);
}
