//! TLS for `wss://` and `https://` (rustls with the *ring* provider): the system's root
//! certificates, plus the certificates of `--ca FILE` (a classroom's own CA or a self-signed
//! server certificate, PEM). A certificate the miner does not trust is one line saying so and
//! naming `--ca`, then the usual back-off; never a panic.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::ConfigError;

/// Returns the TLS settings of every `wss://` and `https://` connection: the system's roots and
/// the certificates in `ca`.
///
/// # Errors
/// `ca` cannot be read, holds no PEM certificate, or one of them is unusable as a root.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore::empty();
    // A machine without a certificate store still works with --ca; unreadable entries are
    // skipped as every TLS client skips them.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca {
        let bad = |why: String| ConfigError::Ca { path: path.to_owned(), why };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Makes the TLS handshake on `tcp` for `host`.
///
/// # Errors
/// One line: an untrusted certificate names `--ca`; anything else says what failed.
pub(crate) async fn connect(
    config: &Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a name TLS can check: {e}"))?;
    TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(|e| describe_io(&e))
}

/// Describes a failed handshake in one line.
fn describe_io(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => describe(tls),
        None => format!("TLS handshake failed: {e}"),
    }
}

/// Describes a TLS error in one line; a certificate problem names `--ca`.
pub(crate) fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(_) => format!(
            "TLS: the server's certificate is not trusted ({e}); for a server with its own CA \
             or a self-signed certificate, pass --ca FILE (its PEM certificate)"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}
