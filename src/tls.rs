//! TLS settings: which PEM files the server reads (certificate chain, key, the CA that client
//! certificates must chain to, the CA members trust each other with) and the rustls configs
//! built from them. Reading the files is the only I/O here; it happens at start-up and on a
//! reload (SIGHUP), never per connection. The bytes on the wire are `net::tls`'s business.
//!
//! Members of a cluster speak TLS to each other (consensus port and the forward tunnel) with
//! the same certificate and key. A member trusts the other members' certificates through
//! `--tls-peer-ca`; without it, through `--tls-client-ca`; without that, through the server's
//! own certificate file (a self-signed certificate, or a chain that ends with its CA).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The TLS files of a server (`--tls-cert`, `--tls-key`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Clients must present a certificate that chains to one of these (mTLS).
    pub client_ca: Option<PathBuf>,
    /// The roots a member trusts other members' certificates with (see the module docs).
    pub peer_ca: Option<PathBuf>,
    /// Serve plaintext clients too, besides TLS ones.
    pub allow_plaintext: bool,
}

/// The TLS configs a server's connections use, read from its [`TlsFiles`]; replaced whole on
/// a reload.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// What the shared port (and the consensus port) serve TLS clients with.
    pub server: Arc<ServerConfig>,
    /// What a cluster member dials the others with (consensus, the forward tunnel).
    pub peer: Arc<ClientConfig>,
}

impl TlsConfigs {
    /// Reads `files` now.
    pub fn read(files: &TlsFiles) -> Result<TlsConfigs, String> {
        Ok(TlsConfigs { server: server_config(files)?, peer: peer_client_config(files)? })
    }
}

/// The process-wide crypto provider: `ring` (no C toolchain beyond a compiler needed).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read certificates: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: cannot read a PEM private key: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// The server's TLS config: its certificate and key, and client certificates required if
/// `client_ca` is set. Read anew on every call (a reload).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    Ok(Arc::new(config))
}

/// The config a member dials other members with (consensus, forward tunnel): the peer roots
/// (see the module docs), and its own certificate as its client certificate, so that a member
/// that requires client certificates takes it.
pub fn peer_client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    let trust = files.peer_ca.as_ref().or(files.client_ca.as_ref()).unwrap_or(&files.cert);
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(trust)?)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    Ok(Arc::new(config))
}

/// The name a member's certificate is checked against when dialled at `addr` (`HOST:PORT`):
/// its host, an IP address or a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a host name to check a certificate against: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host() {
        assert_eq!(server_name("127.0.0.1:7000").unwrap(), ServerName::try_from("127.0.0.1").unwrap());
        assert_eq!(server_name("[::1]:7000").unwrap(), ServerName::try_from("::1").unwrap());
        assert_eq!(server_name("db-1.example:7000").unwrap(), ServerName::try_from("db-1.example").unwrap());
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn unreadable_files_are_named() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
            peer_ca: None,
            allow_plaintext: false,
        };
        let e = server_config(&files).unwrap_err();
        assert!(e.starts_with("/nonexistent/cert.pem: cannot read certificates: "), "{e}");
    }
}
