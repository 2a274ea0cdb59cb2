//! Opening and using a WebSocket to a pool-server, for the miner's session (`session`) and the
//! watcher (`watch`): the handshake under [`MAX_WS_MESSAGE_BYTES`], the timeouts both keep,
//! and one-line explanations of what went wrong. It knows nothing of mining.
//!
//! What the miner queues for a pool is bounded too: pongs to the pool's pings are queued like
//! any frame, and a pool that pings and never reads once made that queue grow without end. The
//! queue holds at most [`MAX_WS_QUEUED_BYTES`] (pongs beyond it are folded into one, as
//! tungstenite does), and a connection whose pool has taken nothing the miner wrote for
//! [`WRITE_STALL`] is dropped ([`stalled`]); the miner then reconnects with back-off.

use futures_util::SinkExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use url::Url;

use crate::http_body::bytes_text;
use crate::limits::{MAX_WS_MESSAGE_BYTES, MAX_WS_QUEUED_BYTES, WRITE_STALL};
use crate::net;

/// How long a connection attempt (TCP + WebSocket handshake) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle server is pinged.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);
/// Silence after which the connection is considered dead.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a single send may take.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// An open WebSocket to a server.
pub(crate) type Ws = WebSocketStream<Watched>;

/// A connection that remembers since when its writes have been blocked (the pool takes
/// nothing), for [`stalled`].
pub(crate) struct Watched {
    inner: net::Stream,
    blocked_since: Option<Instant>,
}

impl Watched {
    fn new(inner: net::Stream) -> Self {
        Watched { inner, blocked_since: None }
    }

    /// Keeps `blocked_since` over a write's (or flush's) `poll`.
    fn watch<T>(&mut self, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Pending => {
                self.blocked_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => self.blocked_since = None,
        }
        poll
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Says why the connection should be dropped when its pool has taken nothing the miner wrote
/// (pongs included) for [`WRITE_STALL`]. Checked after each frame read: tungstenite tries to
/// write what it queued before each read, so a pool that reads again clears the stall first.
pub(crate) fn stalled(ws: &Ws) -> Option<String> {
    let since = ws.get_ref().blocked_since?;
    (since.elapsed() >= WRITE_STALL).then(|| {
        format!(
            "the server has taken nothing the miner sent for {}s (it does not read; pongs to \
             its pings included): dropping the connection",
            WRITE_STALL.as_secs()
        )
    })
}

/// Why a WebSocket connection could not be opened.
pub(crate) enum ConnectError {
    /// The server answered the upgrade with a plain HTTP status.
    Status(tungstenite::http::StatusCode),
    /// Anything else, in one line.
    Other(String),
}

impl ConnectError {
    /// Says what went wrong opening `url`, in one line.
    pub(crate) fn describe(self, url: &Url) -> String {
        match self {
            ConnectError::Status(status) => describe_status(url, status),
            ConnectError::Other(e) => e,
        }
    }
}

/// The limits the miner reads WebSocket messages under (see [`MAX_WS_MESSAGE_BYTES`]) and
/// queues what it sends under ([`MAX_WS_QUEUED_BYTES`]; each frame is written at once).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_WS_MESSAGE_BYTES))
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WS_QUEUED_BYTES)
}

/// Opens the connection (an unknown host is said so) and makes the WebSocket handshake.
pub(crate) async fn connect(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Ws, ConnectError> {
    let stream = Watched::new(net::open(url, tls).await.map_err(ConnectError::Other)?);
    match tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config())).await
    {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(ConnectError::Status(response.status())),
        Err(e) => Err(ConnectError::Other(describe_ws_error(&e))),
    }
}

/// Explains an HTTP status answered to the upgrade; a 404 names the path a pool-server uses.
fn describe_status(url: &Url, status: tungstenite::http::StatusCode) -> String {
    if status != tungstenite::http::StatusCode::NOT_FOUND {
        return format!("HTTP {status}");
    }
    let mut right = url.clone();
    right.set_path("/ws");
    right.set_query(None);
    if url.path() == "/ws" {
        let mut http = right.clone();
        let _ = http.set_scheme(if url.scheme() == "wss" { "https" } else { "http" });
        http.set_path("/");
        format!(
            "HTTP {status}: no WebSocket endpoint at /ws; a course server has none: for its HTTP \
             API use {http}"
        )
    } else {
        format!(
            "HTTP {status}: no WebSocket endpoint at {}; a pool-server's is /ws: try {right}",
            url.path()
        )
    }
}

/// Says what a WebSocket error means, in one line.
pub(crate) fn describe_ws_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => io.to_string(),
        tungstenite::Error::Http(response) => format!("HTTP {}", response.status()),
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size,
            max_size,
        }) => format!(
            "the server sent a message of {size} bytes or more, over the {} the miner reads \
             (a pool-server's blocks are far smaller)",
            bytes_text(*max_size)
        ),
        tungstenite::Error::WriteBufferFull(_) => format!(
            "the server does not read what the miner sends: {} are queued for it already",
            bytes_text(MAX_WS_QUEUED_BYTES)
        ),
        other => other.to_string(),
    }
}

/// Sends `message`, within [`SEND_TIMEOUT`].
pub(crate) async fn send(ws: &mut Ws, message: Message) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe_ws_error(&e)),
        Err(_) => Err(format!("sending took more than {}s", SEND_TIMEOUT.as_secs())),
    }
}
