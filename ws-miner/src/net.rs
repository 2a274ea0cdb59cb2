//! Opening a connection to a server: resolve the host (an unknown host is said so), connect
//! over TCP to the first address that answers, and for `wss://`/`https://` make the TLS
//! handshake.

use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::Url;

/// A byte stream to a server.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open connection to a server.
pub(crate) type Stream = Box<dyn Io>;

/// Resolves `url`'s host and connects to it, over TLS (with `tls`) for `wss://` and `https://`.
///
/// # Errors
/// One line: "unknown host …" when the name does not resolve, an untrusted certificate, else
/// the connect error.
pub(crate) async fn open(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Stream, String> {
    let secure = matches!(url.scheme(), "wss" | "https");
    let host = url.host_str().ok_or_else(|| format!("{url} has no host"))?;
    let port = url.port_or_known_default().ok_or_else(|| format!("{url} has no port"))?;
    // `host_str` keeps an IPv6 literal's brackets, which the resolver does not take.
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = match tokio::net::lookup_host((name, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Err(format!("unknown host {host:?} (the name does not resolve: {e})")),
    };
    if addrs.is_empty() {
        return Err(format!("unknown host {host:?} (the name resolves to no address)"));
    }
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Proofs and blocks are small: send them at once.
                let _ = tcp.set_nodelay(true);
                if !secure {
                    return Ok(Box::new(tcp));
                }
                let tls = tls.ok_or_else(|| format!("{url}: TLS is not set up"))?;
                return Ok(Box::new(crate::tls::connect(tls, name, tcp).await?));
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| format!("cannot connect to {host}")))
}
