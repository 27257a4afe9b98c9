//! TLS for the client: which files it trusts the server with and proves itself with
//! (`RINGLOCK_CA`, `RINGLOCK_CLIENT_CERT`, `RINGLOCK_CLIENT_KEY`), and the rustls config read
//! from them when a connection opens (so a renewed certificate is taken at the next
//! reconnect). The server's certificate is checked against the host of `LOCKSERVER_ADDR`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// TLS settings of a client: with them it speaks TLS, and trusts only servers whose
/// certificate chains to `ca`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificate(s) (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// This client's certificate chain and key (PEM), for a server that requires client
    /// certificates (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Settings that do not go together (from the environment): every connection fails
    /// with this, rather than fall back to less than was asked.
    refused: Option<String>,
}

impl TlsConfig {
    /// TLS, trusting the CA certificate(s) in `ca`.
    pub fn new(ca: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig { ca: ca.into(), client_cert: None, refused: None }
    }

    /// With a client certificate and its key (mTLS).
    pub fn with_client_cert(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig { client_cert: Some((cert.into(), key.into())), ..self }
    }

    /// The settings from the environment (see [`TlsConfig::from_vars`]); settings that do
    /// not go together give a config whose every connection fails, saying why.
    pub fn from_env() -> Option<TlsConfig> {
        TlsConfig::resolve(|name| std::env::var(name).ok())
    }

    /// [`TlsConfig::from_vars`], where settings that do not go together give a config whose
    /// every connection fails, saying why (for a caller that cannot fail yet).
    pub fn resolve(get: impl Fn(&str) -> Option<String>) -> Option<TlsConfig> {
        TlsConfig::from_vars(get).unwrap_or_else(|why| {
            Some(TlsConfig { ca: PathBuf::new(), client_cert: None, refused: Some(why) })
        })
    }

    /// The settings from `RINGLOCK_CA`, `RINGLOCK_CLIENT_CERT` and `RINGLOCK_CLIENT_KEY` as
    /// `get` returns them: `Ok(None)` without `RINGLOCK_CA` and a client certificate; an error
    /// for a certificate without its key (or the other way round), or without a CA.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<TlsConfig>, String> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let client_cert = match (get("RINGLOCK_CLIENT_CERT"), get("RINGLOCK_CLIENT_KEY")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err("RINGLOCK_CLIENT_CERT needs RINGLOCK_CLIENT_KEY (its private key)".into());
            }
            (None, Some(_)) => {
                return Err("RINGLOCK_CLIENT_KEY needs RINGLOCK_CLIENT_CERT (its certificate)".into());
            }
        };
        match (get("RINGLOCK_CA"), client_cert) {
            (Some(ca), client_cert) => Ok(Some(TlsConfig { ca, client_cert, refused: None })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(
                "a client certificate needs RINGLOCK_CA (the CA the server's certificate is checked with)"
                    .into(),
            ),
        }
    }

    /// The rustls config these files make, read now.
    pub fn rustls(&self) -> Result<Arc<ClientConfig>, String> {
        if let Some(why) = &self.refused {
            return Err(why.clone());
        }
        let mut roots = RootCertStore::empty();
        for cert in certs(&self.ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", self.ca.display()))?;
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            Some((cert, key)) => {
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: cannot read a PEM private key: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(certs(cert)?, key_der)
                    .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
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

/// The name the server's certificate is checked against when dialled at `addr`
/// (`HOST:PORT`): its host, an IP address or a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a host name to check a certificate against: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn settings_from_the_variables() {
        assert_eq!(TlsConfig::from_vars(vars(&[])), Ok(None));
        assert_eq!(
            TlsConfig::from_vars(vars(&[("RINGLOCK_CA", "/ca.pem")])),
            Ok(Some(TlsConfig::new("/ca.pem")))
        );
        assert_eq!(
            TlsConfig::from_vars(vars(&[
                ("RINGLOCK_CA", "/ca.pem"),
                ("RINGLOCK_CLIENT_CERT", "/c.pem"),
                ("RINGLOCK_CLIENT_KEY", "/c.key")
            ])),
            Ok(Some(TlsConfig::new("/ca.pem").with_client_cert("/c.pem", "/c.key")))
        );
        assert_eq!(
            TlsConfig::from_vars(vars(&[("RINGLOCK_CA", "/ca.pem"), ("RINGLOCK_CLIENT_CERT", "/c.pem")])),
            Err("RINGLOCK_CLIENT_CERT needs RINGLOCK_CLIENT_KEY (its private key)".into())
        );
        assert_eq!(
            TlsConfig::from_vars(vars(&[
                ("RINGLOCK_CLIENT_CERT", "/c.pem"),
                ("RINGLOCK_CLIENT_KEY", "/c.key")
            ])),
            Err("a client certificate needs RINGLOCK_CA (the CA the server's certificate is checked with)"
                .into())
        );
        // Set and empty is unset, as for the SDKs' variables.
        assert_eq!(TlsConfig::from_vars(vars(&[("RINGLOCK_CA", "")])), Ok(None));
    }

    #[test]
    fn server_names_come_from_the_host() {
        assert_eq!(server_name("127.0.0.1:8080").unwrap(), ServerName::try_from("127.0.0.1").unwrap());
        assert_eq!(server_name("[::1]:8080").unwrap(), ServerName::try_from("::1").unwrap());
        assert_eq!(
            server_name("locks.internal:8080").unwrap(),
            ServerName::try_from("locks.internal").unwrap()
        );
    }

    #[test]
    fn unreadable_files_are_named() {
        let tls = TlsConfig::new("/nonexistent/ca.pem");
        let e = tls.rustls().unwrap_err();
        assert!(e.starts_with("/nonexistent/ca.pem: cannot read certificates: "), "{e}");
    }
}
