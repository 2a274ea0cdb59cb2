//! The accept loop: HTTP/1.1 (with WebSocket upgrades) served by hyper directly, because two
//! limits need settings that `axum::serve` does not expose:
//! - a deadline for a request's headers ([`Limits::header_read_timeout`]), so slowloris clients
//!   that dribble a request a byte at a time are cut off;
//! - a cap on open connections per client IP address ([`Limits::max_conns_per_ip`]), WebSockets
//!   included for as long as they stay open; one more gets a JSON 429 and is closed.
//!
//! Shutdown: once `shutdown` completes the listener is dropped and every HTTP connection is
//! asked to finish its request in flight and close; WebSocket connections close through the
//! server's cancellation token, as before.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The default cap on open connections from one IP address.
pub const DEFAULT_MAX_CONNS_PER_IP: usize = 64;
/// The default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused connection is given to send its request and read the 429.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of a refused connection's request head is read before answering anyway.
const REFUSAL_HEAD_BYTES: usize = 16 * 1024;

/// Limits on connections, set from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections (HTTP and WebSocket) allowed from one IP address.
    pub max_conns_per_ip: usize,
    /// Time allowed to send a request's headers; then the connection is closed.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Open connections per IP address.
#[derive(Debug, Default, Clone)]
struct Counts(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Counts {
    /// Takes a slot for `ip`, unless it already holds `max`.
    fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot { counts: self.clone(), ip })
    }
}

/// One open connection's place in [`Counts`], given back on drop.
#[derive(Debug)]
struct Slot {
    counts: Counts,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that holds its [`Slot`]: after a WebSocket upgrade hyper hands the stream over,
/// so the slot lives exactly as long as the socket.
#[derive(Debug)]
struct CountedStream {
    inner: crate::tls::Stream,
    _slot: Slot,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the connections in flight
/// finish (each connection task is tracked by `tasks`; `closing` tells them to wind down).
/// With `tls`, every connection is HTTPS/WSS (see [`crate::tls`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
    closing: CancellationToken,
    tasks: TaskTracker,
) {
    let counts = Counts::default();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = counts.take(peer.ip(), limits.max_conns_per_ip) else {
            tracing::debug!(%peer, "refused: too many connections from this address");
            let tls = tls.clone();
            tasks.spawn(async move {
                if let Some(stream) = crate::tls::accept(tls, stream).await {
                    refuse(stream, peer.ip(), limits.max_conns_per_ip).await;
                }
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |mut req: axum::http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let (closing, tls, http) = (closing.clone(), tls.clone(), http.clone());
        tasks.spawn(async move {
            // The TLS handshake (if any) runs here, not in the accept loop.
            let Some(stream) = crate::tls::accept(tls, stream).await else { return };
            let io = TokioIo::new(CountedStream { inner: stream, _slot: slot });
            let conn = http.serve_connection(io, TowerToHyperService::new(service)).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                () = closing.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
}

/// Tells a client over the per-address cap why it is refused (a JSON 429 in answer to its
/// request), then closes.
async fn refuse(mut stream: crate::tls::Stream, ip: IpAddr, max: usize) {
    let body = serde_json::json!({
        "message": format!("too many connections from {ip}: at most {max} are allowed at once")
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        // Read the request head first: an HTTP client that gets an answer before it has asked
        // anything takes it for a protocol error, not for the refusal it is.
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REFUSAL_HEAD_BYTES {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing a socket with unread input sends
        // a reset, which could destroy the answer before the client reads it.
        while stream.read(&mut chunk).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
