//! The WebSocket session with a pool-server: connect, read pushed blocks, hand them to the
//! search, submit proofs, and reconnect with back-off when anything goes wrong.
//!
//! The search is independent of the connection: it keeps running while the miner reconnects, and
//! a proof found meanwhile is sent when the server is back (if its block is still current).
//! Every frame is untrusted: what cannot be used is reported in one line and ignored.

use futures_util::{SinkExt, StreamExt};
use protocol::{ClientMessage, ProofSubmission, ServerMessage};
use std::collections::VecDeque;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use url::Url;

use crate::backoff::Backoff;
use crate::driver::{Ctx, Leave, STATUS_EVERY, Verdict, preferred_back, stopped};
use crate::error::Outcome;
use crate::http_body::bytes_text;
use crate::job::{Dialect, Work};
use crate::limits::{MAX_WS_MESSAGE_BYTES, SHUTDOWN_GRACE};
use crate::miner::{Arrival, Found};
use crate::net;
use crate::output::Event;
use crate::untrusted::preview;

/// How long a connection attempt (TCP + WebSocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the miner pings an idle server.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Silence after which the connection is considered dead.
const READ_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a single send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<net::Stream>;

/// How the WebSocket session ended.
pub(crate) enum WsEnd {
    /// The run is over.
    Done(Outcome),
    /// The server answered the upgrade with a plain HTTP status: use the course HTTP protocol.
    Fallback,
    /// Several pools: this one failed, or an earlier one answers again (unjudged proofs are
    /// carried in the context).
    Left(Leave),
}

/// Proof bookkeeping across frames and reconnects.
#[derive(Default)]
struct Proofs {
    /// Sent, oldest first; the server answers proofs in the order it receives them, and a
    /// miner may send the next proof before the previous one is answered.
    awaiting: VecDeque<Found>,
    /// Found (or sent before the connection dropped) while no result can come: sent again when
    /// the server is back and the block is still current.
    unsent: Vec<Found>,
}

/// Mines over the WebSocket at `url` until the run ends. With `fallback`, a server that answers
/// the upgrade with an HTTP status ends the session with [`WsEnd::Fallback`].
pub(crate) async fn mine_ws(ctx: &mut Ctx, url: &Url, fallback: bool) -> WsEnd {
    let mut conn: Option<Ws> = None;
    let mut backoff = Backoff::new(ctx.config.backoff);
    let mut retry_at = Instant::now();
    let mut last_read = Instant::now();
    let mut proofs = Proofs::default();
    let mut shutdown = ctx.shutdown.clone();
    let mut keepalive = interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut status = interval(STATUS_EVERY);
    let show_status = ctx.reporter.has_status_line();
    // After Ctrl-C with proofs in flight: when to stop waiting for their answers.
    let mut grace_until = Instant::now();
    loop {
        if ctx.draining && (proofs.awaiting.is_empty() || conn.is_none()) {
            return WsEnd::Done(Outcome::Interrupted);
        }
        if let Some(reason) = ctx.left() {
            let unjudged: Vec<Found> =
                proofs.awaiting.drain(..).chain(proofs.unsent.drain(..)).collect();
            ctx.carry(unjudged);
            return WsEnd::Left(Leave::Failed(reason));
        }
        tokio::select! {
            () = stopped(&mut shutdown), if !ctx.draining => {
                if conn.is_none() || proofs.awaiting.is_empty() {
                    return WsEnd::Done(Outcome::Interrupted);
                }
                // A proof is being judged: its answer may be a win. Stop the search and wait a
                // little (SHUTDOWN_GRACE) for the answers, so that the summary counts them.
                ctx.draining = true;
                ctx.miner.halt().await;
                grace_until = Instant::now() + SHUTDOWN_GRACE;
            }
            () = sleep_until(grace_until), if ctx.draining => return WsEnd::Done(Outcome::Interrupted),
            () = sleep_until(retry_at), if conn.is_none() => {
                let attempt = tokio::select! {
                    r = timeout(CONNECT_TIMEOUT, connect(url, ctx.config.tls.as_ref())) => r,
                    () = stopped(&mut shutdown) => return WsEnd::Done(Outcome::Interrupted),
                };
                let error = match attempt {
                    Ok(Ok(ws)) => {
                        conn = Some(ws);
                        last_read = Instant::now();
                        ctx.reached = true;
                        ctx.reporter.emit(Event::Connected { url: url.to_string(), protocol: "websocket" });
                        continue;
                    }
                    Ok(Err(ConnectError::Status(status))) if fallback => {
                        ctx.reporter.emit(Event::FallbackToHttp {
                            reason: format!("{url} answered HTTP {status}"),
                        });
                        return WsEnd::Fallback;
                    }
                    Ok(Err(ConnectError::Status(status))) => describe_status(url, status),
                    Ok(Err(ConnectError::Other(e))) => e,
                    Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                };
                let Some(error) = ctx.fail(error) else { continue };
                let delay = backoff.next_delay();
                retry_at = Instant::now() + delay;
                ctx.reporter.emit(Event::ConnectFailed {
                    url: url.to_string(),
                    error,
                    retry_in_ms: delay.as_millis().try_into().unwrap_or(u64::MAX),
                });
            }
            frame = next_frame(&mut conn), if conn.is_some() => {
                let arrival = ctx.miner.arrival();
                last_read = Instant::now();
                let lost = match frame {
                    Some(Ok(Message::Text(text))) => {
                        match handle_text(ctx, &mut conn, &mut proofs, &mut backoff, text.as_str(), arrival).await {
                            Step::Continue => None,
                            Step::End(outcome) => return WsEnd::Done(outcome),
                            Step::Lost(reason) => Some(reason),
                        }
                    }
                    Some(Ok(Message::Binary(data))) => {
                        ctx.reporter.emit(Event::Ignored {
                            what: format!("a binary frame of {} bytes (only JSON text frames are used)", data.len()),
                        });
                        None
                    }
                    Some(Ok(Message::Close(frame))) => Some(match frame {
                        Some(f) if !f.reason.is_empty() => format!("the server closed the connection ({}: {})", f.code, f.reason),
                        _ => "the server closed the connection".to_owned(),
                    }),
                    // Pings are answered by tungstenite; pongs only prove the server is alive.
                    Some(Ok(_)) => None,
                    Some(Err(e)) => Some(describe_ws_error(&e)),
                    None => Some("the server closed the connection".to_owned()),
                };
                if let Some(reason) = lost {
                    lose(ctx, &mut conn, &mut proofs, &mut backoff, &mut retry_at, reason);
                }
            }
            found = ctx.miner.found() => {
                // With several pools: only a proof for this pool's block goes to it.
                let Some(found) = ctx.sendable(found) else { continue };
                match conn.as_mut() {
                    Some(ws) => {
                        if let Err(reason) = send_proof(ws, &ctx.config.id, &found).await {
                            proofs.unsent.push(found);
                            lose(ctx, &mut conn, &mut proofs, &mut backoff, &mut retry_at, reason);
                        } else {
                            proofs.awaiting.push_back(found);
                        }
                    }
                    None => proofs.unsent.push(found),
                }
            }
            _ = keepalive.tick() => {
                if let Some(ws) = conn.as_mut() {
                    let reason = if last_read.elapsed() > READ_TIMEOUT {
                        Some(format!("no data from the server for {}s", READ_TIMEOUT.as_secs()))
                    } else {
                        send(ws, Message::Ping(Vec::new().into())).await.err()
                    };
                    if let Some(reason) = reason {
                        lose(ctx, &mut conn, &mut proofs, &mut backoff, &mut retry_at, reason);
                    }
                }
            }
            // Several pools: an earlier one answers again; leave once no answer is awaited here.
            () = preferred_back(&mut ctx.failover), if proofs.awaiting.is_empty() && !ctx.draining => {
                let unsent = std::mem::take(&mut proofs.unsent);
                ctx.carry(unsent);
                return WsEnd::Left(Leave::Preferred);
            }
            _ = status.tick(), if show_status => ctx.miner.show_status(),
        }
    }
}

async fn next_frame(conn: &mut Option<Ws>) -> Option<Result<Message, tungstenite::Error>> {
    match conn.as_mut() {
        Some(ws) => ws.next().await,
        None => pending().await,
    }
}

/// Drops the connection and schedules the next attempt.
fn lose(
    ctx: &mut Ctx,
    conn: &mut Option<Ws>,
    proofs: &mut Proofs,
    backoff: &mut Backoff,
    retry_at: &mut Instant,
    reason: String,
) {
    *conn = None;
    // A proof whose answer was lost with the connection is sent again if its block is still
    // current when the server is back; the server says stale if it had already counted it.
    proofs.unsent.extend(proofs.awaiting.drain(..));
    // With several pools the next one is tried instead (see `pools`).
    let Some(reason) = ctx.fail(reason) else { return };
    *retry_at = Instant::now() + backoff.next_delay();
    ctx.reporter.emit(Event::Disconnected { reason });
}

/// Why a WebSocket connection could not be opened.
enum ConnectError {
    /// The server answered the upgrade with a plain HTTP status.
    Status(tungstenite::http::StatusCode),
    /// Anything else, in one line.
    Other(String),
}

/// The limits the miner reads WebSocket messages under: see [`MAX_WS_MESSAGE_BYTES`].
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_WS_MESSAGE_BYTES))
}

/// Opens the connection (an unknown host is said so) and makes the WebSocket handshake.
async fn connect(url: &Url, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Ws, ConnectError> {
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

fn describe_ws_error(e: &tungstenite::Error) -> String {
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

async fn send(ws: &mut Ws, message: Message) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe_ws_error(&e)),
        Err(_) => Err(format!("sending took more than {}s", SEND_TIMEOUT.as_secs())),
    }
}

async fn send_proof(ws: &mut Ws, id: &str, found: &Found) -> Result<(), String> {
    let message = ClientMessage::Proof(ProofSubmission {
        proof: found.proof,
        id: id.to_owned(),
        index: found.work.index,
    });
    send(ws, Message::text(message.to_json())).await
}

enum Step {
    Continue,
    End(Outcome),
    Lost(String),
}

async fn handle_text(
    ctx: &mut Ctx,
    conn: &mut Option<Ws>,
    proofs: &mut Proofs,
    backoff: &mut Backoff,
    text: &str,
    arrival: Arrival,
) -> Step {
    let Some(ws) = conn.as_mut() else { return Step::Continue };
    let message = match ServerMessage::from_json(text) {
        Ok(message) => message,
        Err(e) => {
            ctx.reporter.emit(Event::Ignored { what: format!("{e}: {}", preview(text)) });
            return Step::Continue;
        }
    };
    match message {
        ServerMessage::Block { block, difficulty } => {
            // The server works: the next failure starts the back-off from the beginning.
            backoff.reset();
            let dialect = ctx.config.dialect.unwrap_or(Dialect::Json);
            // A frame without a difficulty: the user's --zeros decides.
            let difficulty = difficulty.unwrap_or(ctx.config.zeros);
            let work = Arc::new(Work::new(&block, difficulty, dialect));
            // Proofs found on another pool's block go out only if it is this server's block too.
            let mut carried = ctx.carried_for(&work).into_iter();
            while let Some(found) = carried.next() {
                if let Err(reason) = send_proof(ws, &ctx.config.id, &found).await {
                    proofs.unsent.push(found);
                    proofs.unsent.extend(carried);
                    return Step::Lost(reason);
                }
                proofs.awaiting.push_back(found);
            }
            for found in std::mem::take(&mut proofs.unsent) {
                if *found.work == *work {
                    if let Err(reason) = send_proof(ws, &ctx.config.id, &found).await {
                        proofs.unsent.push(found);
                        return Step::Lost(reason);
                    }
                    proofs.awaiting.push_back(found);
                } else if let Some(outcome) = ctx.settle(&found, &block) {
                    return Step::End(outcome);
                }
            }
            if proofs.awaiting.iter().any(|f| *f.work == *work) && ctx.miner.current().is_none() {
                // Our proof for this very block is being judged.
                return Step::Continue;
            }
            if let Some(outcome) = ctx.follow(work, arrival).await {
                return Step::End(outcome);
            }
        }
        ServerMessage::Result { accepted, message, reason, index } => {
            let Some(found) = proofs.awaiting.pop_front() else {
                ctx.reporter.emit(Event::Ignored {
                    what: format!("a result for no proof of ours: {}", preview(text)),
                });
                return Step::Continue;
            };
            let verdict = match (accepted, reason) {
                (true, _) => Verdict::Accepted,
                (false, Some(protocol::RejectReason::Stale)) => Verdict::Stale,
                (false, _) => Verdict::Invalid,
            };
            // After a win the server's last block is the one our proof forged.
            // (A server that leaves `index` out gets it parsed as 0: unknown.)
            let won = (verdict == Verdict::Accepted && index > 0).then_some(index);
            ctx.judged(&found, verdict, message, won);
            if let Some(outcome) = ctx.once_after_result(accepted) {
                return Step::End(outcome);
            }
            if ctx.miner.current().is_none() {
                // Nothing to do until a block comes: ask for it rather than wait for a push.
                return request_block(ws).await;
            }
        }
        ServerMessage::Error { message } => {
            ctx.reporter.emit(Event::ServerError { message: message.clone() });
            // An error while a proof is being judged is the server's answer to that proof.
            if let Some(found) = proofs.awaiting.pop_front() {
                ctx.judged(&found, Verdict::Invalid, message, None);
                if let Some(outcome) = ctx.once_after_result(false) {
                    return Step::End(outcome);
                }
                if ctx.miner.current().is_none() {
                    return request_block(ws).await;
                }
            }
        }
        other => {
            ctx.reporter.emit(Event::Ignored { what: format!("an unexpected message: {other:?}") });
        }
    }
    Step::Continue
}

async fn request_block(ws: &mut Ws) -> Step {
    match send(ws, Message::text(ClientMessage::LastBlock.to_json())).await {
        Ok(()) => Step::Continue,
        Err(reason) => Step::Lost(reason),
    }
}
