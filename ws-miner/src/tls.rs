//! TLS for `wss://` and `https://` (rustls with the *ring* provider): the system's root
//! certificates, plus the certificates of `--ca FILE` (a classroom's own CA or a self-signed
//! server certificate, PEM). A server that presents exactly a certificate of `--ca` is trusted
//! as that certificate (pinned), whatever its CA flag says: OpenSSL 3's `openssl req -x509`
//! marks its self-signed certificates `CA:TRUE`, which path validation refuses as a server's
//! own certificate (`CaUsedAsEndEntity`). A certificate the miner does not trust is one line
//! saying so and naming `--ca`, then the usual back-off; never a panic.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::ConfigError;

/// Returns the TLS settings of every `wss://` and `https://` connection: the system's roots and
/// the certificates in `ca`, each also trusted as the server's own certificate when a server
/// presents exactly it.
///
/// # Errors
/// `ca` cannot be read, holds no PEM certificate, or one of them is unusable as a root.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
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
            roots.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
            pinned.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let verifier = Arc::new(Verifier { webpki, pinned });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The miner's certificate check: rustls's own (a chain to a trusted root, valid now, for the
/// host), or, for a server whose certificate is byte for byte one given with `--ca`, that
/// certificate as it is (pinning, as `curl --cacert` accepts a self-signed server certificate).
/// A pinned certificate must still name the host; the handshake's signatures are checked
/// against it as always, so only the holder of its private key passes.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `--ca`, in the file's order.
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|pin| pin.as_ref() == end_entity.as_ref()) {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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
