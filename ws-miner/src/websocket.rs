//! Opening and using a WebSocket to a pool-server, for the miner's session (`session`) and the
//! watcher (`watch`): the handshake under [`MAX_WS_MESSAGE_BYTES`], the timeouts both keep,
//! and one-line explanations of what went wrong. It knows nothing of mining.

use futures_util::SinkExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use url::Url;

use crate::http_body::bytes_text;
use crate::limits::MAX_WS_MESSAGE_BYTES;
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
pub(crate) type Ws = WebSocketStream<net::Stream>;

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

/// The limits the miner reads WebSocket messages under: see [`MAX_WS_MESSAGE_BYTES`].
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_WS_MESSAGE_BYTES))
}

/// Opens the connection (an unknown host is said so) and makes the WebSocket handshake.
pub(crate) async fn connect(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Ws, ConnectError> {
    let stream = net::open(url, tls).await.map_err(ConnectError::Other)?;
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
