//! A test CA made in the test (rcgen), its certificates and keys written as PEM files, and a
//! raw rustls client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::support::TempDir;

/// A CA of its own, in a directory of its own.
pub struct Pki {
    pub dir: TempDir,
    ca: Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`; its certificate is in `ca.pem`.
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// The CA's certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` (IP addresses or DNS names) signed by the CA, written as
    /// `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// A client config that trusts `ca` and, if given, presents `cert`.
pub fn client_config(ca: &std::path::Path, cert: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&c.cert).unwrap().map(Result::unwrap).collect(),
                PrivateKeyDer::from_pem_file(&c.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A TLS connection to `addr` (named 127.0.0.1), its handshake done.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects over TLS; the handshake's error if it fails.
pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Tls, std::io::Error> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    // A TLS 1.3 server's verdict on the client's certificate comes after the client's
    // handshake ends: a refusal shows on the first read. One round trip makes it show here.
    Ok(tls)
}

/// Sends `request` and reads until the server closes; HTTP dates masked as `<date>`.
pub fn exchange(stream: &mut impl ReadWrite, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).unwrap();
    stream.flush().unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    mask_date(out)
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut impl Read, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    stream.read_exact(&mut out).unwrap();
    out
}

/// Reads one HTTP answer as long as `like` (whose date is `<date>`), date masked.
pub fn read_answer(stream: &mut impl Read, like: &str) -> String {
    // An HTTP date ("Wed, 02 Dec 2026 07:20:00 GMT") is 29 bytes.
    let bytes = read_n(stream, like.len() - "<date>".len() + 29);
    String::from_utf8(mask_date(bytes)).unwrap()
}

/// A stream both ways.
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn mask_date(bytes: Vec<u8>) -> Vec<u8> {
    let Ok(text) = String::from_utf8(bytes.clone()) else { return bytes };
    text.split("\r\n")
        .map(|l| if l.to_ascii_lowercase().starts_with("date:") { "date: <date>" } else { l })
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes()
}
