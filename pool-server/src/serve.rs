//! The accept loop: HTTP/1.1 (with WebSocket upgrades) served by hyper directly, because two
//! limits need settings that `axum::serve` does not expose:
//! - a deadline for a request's headers ([`Limits::header_read_timeout`]), so slowloris clients
//!   that dribble a request a byte at a time are cut off;
//! - a cap on open connections per client IP address ([`Limits::max_conns_per_ip`]; IPv6 per
//!   /64, as the rate limits group them), WebSockets included for as long as they stay open; one
//!   more gets a JSON 429 and is closed;
//! - with TLS, a rate of handshakes per address ([`Limits::tls_handshake_rate`]): a full
//!   handshake costs the server far more than the client, so one beyond it is closed at once,
//!   before any handshake work;
//! - a cap on open connections in all ([`Limits::max_conns`]); one more gets a JSON 503;
//! - a write deadline ([`Limits::write_timeout`]): a connection whose client takes none of what
//!   the server writes for that long (an answer it asked for and never reads) is closed, and
//!   what its answer held is freed.
//!
//! Responses are written with vectored writes, so a streamed body's chunks (`GET /chain`,
//! `GET /balances`) are queued by reference, never copied into a buffer of their own: a client
//! that does not read holds at most hyper's bounded queue of references until the write
//! deadline drops it.
//!
//! Shutdown: once `shutdown` completes the listener is dropped and every HTTP connection is
//! asked to finish its request in flight and close; WebSocket connections close through the
//! server's cancellation token, as before.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::rate::{RateLimiter, key_of};
use crate::shares::ShareSettings;
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
/// The default cap on open connections in all: room for the 10,000 WebSockets of
/// `scripts/bench-load` and a classroom, within the usual hard limit of 65,536 open files (a
/// connection is one file descriptor).
pub const DEFAULT_MAX_CONNS: usize = 16_384;
/// File descriptors the server needs besides connections (the database, its journal, the
/// listener, the runtime), counted when checking `--max-conns` against the open-file limit.
pub const RESERVED_FDS: u64 = 64;
/// Refusals in progress at once; beyond, a refused connection is closed without an answer, so
/// a flood of refused connections cannot hold more sockets than this.
pub const MAX_REFUSALS: usize = 1_024;
/// The default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time a write may wait for the client to take something (the write deadline); the
/// same as a WebSocket send's, so both kinds of client that stop reading go alike.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused connection is given to send its request and read the 429.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of a refused connection's request head is read before answering anyway.
const REFUSAL_HEAD_BYTES: usize = 16 * 1024;

/// The default rate of proofs (HTTP and WebSocket together) allowed from one address, per second.
pub const DEFAULT_PROOF_RATE: u32 = 100;
/// The default rate of `POST /transactions/new` allowed from one address, per second.
pub const DEFAULT_TRANSACTION_RATE: u32 = 20;
/// The default rate of TLS handshakes allowed from one address, per second (twice that at
/// once: room for a classroom behind one address reconnecting after a restart). A full
/// handshake costs the server a signature and a key exchange; 673 a second from one address
/// once cut the honest block rate to 35 %.
pub const DEFAULT_TLS_HANDSHAKE_RATE: u32 = 20;
/// How many seconds' worth of a rate may come at once (the token bucket's depth).
pub const BURST_SECONDS: u32 = 2;

/// Limits on connections and on how often one address may write, set from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections (HTTP and WebSocket) allowed from one IP address.
    pub max_conns_per_ip: usize,
    /// Open connections (HTTP and WebSocket) allowed in all.
    pub max_conns: usize,
    /// Time allowed to send a request's headers; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Time a write may wait for the client to take any of it (HTTP answers and WebSocket
    /// frames alike); then the connection is closed.
    pub write_timeout: Duration,
    /// Proofs per second allowed from one address (IPv6: one /64), on average; up to
    /// [`BURST_SECONDS`] times as many at once.
    pub proof_rate: u32,
    /// Transactions per second allowed from one address, likewise.
    pub transaction_rate: u32,
    /// TLS handshakes per second allowed from one address, likewise (only with TLS); one more
    /// connection is closed before its handshake.
    pub tls_handshake_rate: u32,
    /// Share targets of the connections that opt in to shares.
    pub shares: ShareSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            max_conns: DEFAULT_MAX_CONNS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            proof_rate: DEFAULT_PROOF_RATE,
            transaction_rate: DEFAULT_TRANSACTION_RATE,
            tls_handshake_rate: DEFAULT_TLS_HANDSHAKE_RATE,
            shares: ShareSettings::default(),
        }
    }
}

/// Open connections per IP address (IPv6 per /64: [`key_of`]) and in all.
#[derive(Debug, Default, Clone)]
struct Counts(Arc<Mutex<Open>>);

#[derive(Debug, Default)]
struct Open {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
enum Full {
    /// Its address holds its cap.
    Address(usize),
    /// The server holds its cap in all.
    Server(usize),
}

impl Counts {
    /// Takes a slot for `ip`'s address (its /64 for IPv6), unless that already holds
    /// `limits.max_conns_per_ip` or the server holds `limits.max_conns`.
    fn take(&self, ip: IpAddr, limits: &Limits) -> Result<Slot, Full> {
        let ip = key_of(ip);
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.total >= limits.max_conns {
            return Err(Full::Server(limits.max_conns));
        }
        let count = open.per_ip.entry(ip).or_insert(0);
        if *count >= limits.max_conns_per_ip {
            return Err(Full::Address(limits.max_conns_per_ip));
        }
        *count += 1;
        open.total += 1;
        Ok(Slot { counts: self.clone(), ip })
    }
}

/// One open connection's place in [`Counts`], given back on drop.
#[derive(Debug)]
struct Slot {
    counts: Counts,
    /// The address it is counted for ([`key_of`]).
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total -= 1;
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that holds its [`Slot`]: after a WebSocket upgrade hyper hands the stream over,
/// so the slot lives exactly as long as the socket. Its writes keep the write deadline: once a
/// write has waited `write_timeout` for the client to take anything, it fails, and whoever
/// writes (hyper, or a WebSocket task) drops the connection.
#[derive(Debug)]
struct CountedStream {
    inner: crate::tls::Stream,
    _slot: Slot,
    write_timeout: Duration,
    /// Set while writes are blocked: when the deadline passes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CountedStream {
    fn new(inner: crate::tls::Stream, slot: Slot, write_timeout: Duration) -> Self {
        CountedStream { inner, _slot: slot, write_timeout, stalled: None }
    }

    /// Keeps the write deadline over a write's (or flush's) `poll`.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled = None;
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client took nothing written to it for {}s", timeout.as_secs_f64()),
        )))
    }
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
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.deadline(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.deadline(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.deadline(cx, poll)
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
    check_open_file_limit(limits.max_conns);
    let counts = Counts::default();
    let refusals = Arc::new(AtomicUsize::new(0));
    let rate = limits.tls_handshake_rate;
    let handshakes = RateLimiter::new(rate, rate.saturating_mul(BURST_SECONDS));
    let mut http = hyper::server::conn::http1::Builder::new();
    // Vectored writes: body chunks are queued by reference (see the module doc), whatever the
    // stream says about its own support for them.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(crate::envelope::HEAD_BUFFER_BYTES)
        .writev(true);
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
        if tls.is_some() && handshakes.check(peer.ip()).is_err() {
            // Nothing can be said without a handshake: the connection is closed at once.
            tracing::debug!(%peer, "refused: too many TLS handshakes from its address");
            continue;
        }
        let slot = match counts.take(peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(full) => {
                tracing::debug!(%peer, ?full, "refused: too many connections");
                if refusals.fetch_add(1, Ordering::Relaxed) < MAX_REFUSALS {
                    let refusals = refusals.clone();
                    let tls = tls.clone();
                    tasks.spawn(async move {
                        if let Some(stream) = crate::tls::accept(tls, stream).await {
                            refuse(stream, peer.ip(), full).await;
                        }
                        refusals.fetch_sub(1, Ordering::Relaxed);
                    });
                } else {
                    // Too many refusals in progress: close at once.
                    refusals.fetch_sub(1, Ordering::Relaxed);
                }
                continue;
            }
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
            let io = TokioIo::new(CountedStream::new(stream, slot, limits.write_timeout));
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

/// Tells a client over a connection cap why it is refused (a JSON 429 when its address holds
/// its cap, a JSON 503 when the server does, in answer to its request), then closes.
async fn refuse(mut stream: crate::tls::Stream, ip: IpAddr, full: Full) {
    let (status, message) = match full {
        Full::Address(max) => (
            "429 Too Many Requests",
            format!(
                "too many connections from {}: at most {max} are allowed at once",
                shown_address(ip)
            ),
        ),
        Full::Server(max) => (
            "503 Service Unavailable",
            format!(
                "the server is full: it holds its limit of {max} open connections; try again later"
            ),
        ),
    };
    let body = serde_json::json!({ "message": message }).to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
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

/// How an address is named in a refusal: as it is counted (an IPv6 address by its /64).
fn shown_address(ip: IpAddr) -> String {
    match key_of(ip) {
        IpAddr::V6(prefix) => format!("{prefix}/64"),
        v4 => v4.to_string(),
    }
}

/// Raises the soft limit on open files to the hard one (each connection is a file descriptor),
/// and warns when `max_conns` connections would not fit under it anyway.
#[cfg(unix)]
fn check_open_file_limit(max_conns: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = limit.maximum,
            Err(e) => tracing::debug!(error = %e, "could not raise the open-file limit"),
        }
    }
    // `None` is unlimited.
    if let Some(soft) = soft
        && (max_conns as u64).saturating_add(RESERVED_FDS) > soft
    {
        tracing::warn!(
            "--max-conns is {max_conns} but this process may open only {soft} files (ulimit -n): \
             connections beyond about {} will fail; raise the limit or lower --max-conns",
            soft.saturating_sub(RESERVED_FDS)
        );
    }
}

#[cfg(not(unix))]
fn check_open_file_limit(_max_conns: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn the_connection_cap_counts_ipv6_per_64_as_the_rate_limits_do() {
        let counts = Counts::default();
        let limits = Limits { max_conns_per_ip: 2, ..Limits::default() };
        let a = counts.take(ip("2001:db8:1:2::1"), &limits).expect("a first slot");
        let _b = counts.take(ip("2001:db8:1:2:ffff::9"), &limits).expect("a second in the /64");
        // A third address in the same /64 is over the cap; another /64 is not.
        assert!(matches!(counts.take(ip("2001:db8:1:2::3"), &limits), Err(Full::Address(2))));
        let _c = counts.take(ip("2001:db8:1:3::1"), &limits).expect("another /64");
        drop(a);
        let _d = counts.take(ip("2001:db8:1:2::4"), &limits).expect("a slot came back");
        // IPv4-mapped IPv6 counts as the IPv4 address.
        let _e = counts.take(ip("192.0.2.7"), &limits).expect("IPv4");
        let _f = counts.take(ip("::ffff:192.0.2.7"), &limits).expect("the same, mapped");
        assert!(counts.take(ip("192.0.2.7"), &limits).is_err());
        assert_eq!(shown_address(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(shown_address(ip("::ffff:192.0.2.7")), "192.0.2.7");
    }
}
