//! The WebSocket session with a pool-server: connect, read pushed blocks, hand them to the
//! search, submit proofs, and reconnect with back-off when anything goes wrong.
//!
//! The search is independent of the connection: it keeps running while the miner reconnects, and
//! a proof found meanwhile is sent when the server is back (if its block is still current).
//! Every frame is untrusted: what cannot be used is reported in one line and ignored.

use futures_util::{SinkExt, StreamExt};
use protocol::{ClientMessage, ProofSubmission, ServerMessage};
use serde_json::Value;
use std::collections::VecDeque;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until, timeout};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::backoff::Backoff;
use crate::cli::Config;
use crate::error::Outcome;
use crate::job::{Dialect, Work, block_proof};
use crate::miner::{Arrival, Found, Miner};
use crate::output::{Event, Reporter};

/// How long a connection attempt (TCP + WebSocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the miner pings an idle server.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Silence after which the connection is considered dead.
const READ_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a single send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the live status line is refreshed.
pub(crate) const STATUS_EVERY: Duration = Duration::from_millis(250);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the WebSocket and HTTP sessions share: the configuration, the search and the stop signal.
pub(crate) struct Ctx {
    pub config: Config,
    pub miner: Miner,
    pub reporter: Reporter,
    pub shutdown: watch::Receiver<bool>,
    /// `--once`: the block this run is about, once a search has started on it.
    pub once_block: Option<Arc<Work>>,
}

impl Ctx {
    /// Starts a search on `work`, unless `--once` already has its block.
    pub(crate) fn start(&mut self, work: Arc<Work>) {
        if self.config.once {
            if self.once_block.is_some() {
                return;
            }
            self.once_block = Some(work.clone());
        }
        self.miner.start(work);
    }

    /// Counts the server's verdict on `found` and reports it: a win with the running coin total,
    /// or a rejection with its reason. Both transports judge alike from here on.
    pub(crate) fn judged(&mut self, found: &Found, verdict: Verdict, message: String) {
        let (index, proof) = (found.work.index, found.proof);
        match verdict {
            Verdict::Accepted => {
                let coins = self.miner.won();
                self.reporter.emit(Event::Accepted { index, proof, message, coins });
            }
            Verdict::Stale | Verdict::Invalid => {
                let stale = verdict == Verdict::Stale;
                self.miner.rejected(stale);
                let reason = if stale { "stale" } else { "invalid" };
                self.reporter.emit(Event::Rejected { index, proof, reason, message });
            }
        }
    }

    /// Returns the outcome that ends a `--once` run after a search was aborted.
    pub(crate) fn once_after_abort(&self) -> Option<Outcome> {
        self.config.once.then_some(Outcome::Lost)
    }

    /// Returns the outcome that ends a `--once` run after the server judged its proof.
    pub(crate) fn once_after_result(&self, accepted: bool) -> Option<Outcome> {
        self.config.once.then_some(if accepted { Outcome::Won } else { Outcome::Lost })
    }
}

/// The server's verdict on one of our proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It won the block.
    Accepted,
    /// Someone else won the block first.
    Stale,
    /// It was not valid.
    Invalid,
}

/// Resolves when the shutdown signal is set; never if its sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        pending::<()>().await;
    }
}

/// How the WebSocket session ended.
pub(crate) enum WsEnd {
    /// The run is over.
    Done(Outcome),
    /// The server answered the upgrade with a plain HTTP status: use the course HTTP protocol.
    Fallback,
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
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => return WsEnd::Done(Outcome::Interrupted),
            () = sleep_until(retry_at), if conn.is_none() => {
                let attempt = tokio::select! {
                    r = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url.as_str())) => r,
                    () = stopped(&mut shutdown) => return WsEnd::Done(Outcome::Interrupted),
                };
                let error = match attempt {
                    Ok(Ok((ws, _response))) => {
                        conn = Some(ws);
                        last_read = Instant::now();
                        ctx.reporter.emit(Event::Connected { url: url.to_string(), protocol: "websocket" });
                        continue;
                    }
                    Ok(Err(tungstenite::Error::Http(response))) if fallback => {
                        ctx.reporter.emit(Event::FallbackToHttp {
                            reason: format!("{url} answered HTTP {}", response.status()),
                        });
                        return WsEnd::Fallback;
                    }
                    Ok(Err(e)) => describe_ws_error(&e),
                    Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                };
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
    ctx: &Ctx,
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
    *retry_at = Instant::now() + backoff.next_delay();
    ctx.reporter.emit(Event::Disconnected { reason });
}

fn describe_ws_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => io.to_string(),
        tungstenite::Error::Http(response) => format!("HTTP {}", response.status()),
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
            // The parser fills in the course default when the frame has no difficulty; the
            // user's --zeros is the better guess then.
            let difficulty = if states_difficulty(text) { difficulty } else { ctx.config.zeros };
            let work = Arc::new(Work::new(&block, difficulty, dialect));
            for found in std::mem::take(&mut proofs.unsent) {
                if *found.work == *work {
                    if let Err(reason) = send_proof(ws, &ctx.config.id, &found).await {
                        proofs.unsent.push(found);
                        return Step::Lost(reason);
                    }
                    proofs.awaiting.push_back(found);
                } else if carries_our_proof(&block, found.proof, &ctx.config.id) {
                    let coins = ctx.miner.won();
                    ctx.reporter.emit(Event::Accepted {
                        index: found.work.index,
                        proof: found.proof,
                        message: "won: the next block carries our proof".into(),
                        coins,
                    });
                    if let Some(outcome) = ctx.once_after_result(true) {
                        return Step::End(outcome);
                    }
                } else {
                    ctx.reporter
                        .emit(Event::ProofDropped { index: found.work.index, proof: found.proof });
                    if let Some(outcome) = ctx.once_after_result(false) {
                        return Step::End(outcome);
                    }
                }
            }
            if proofs.awaiting.iter().any(|f| *f.work == *work) && ctx.miner.current().is_none() {
                // Our proof for this very block is being judged.
                return Step::Continue;
            }
            match ctx.miner.current() {
                Some(current) if **current == *work => return Step::Continue,
                Some(_) => {
                    ctx.miner.abort(work.index, arrival).await;
                    if let Some(outcome) = ctx.once_after_abort() {
                        return Step::End(outcome);
                    }
                }
                None => {}
            }
            ctx.start(work);
        }
        ServerMessage::Result { accepted, message, reason, index: _ } => {
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
            ctx.judged(&found, verdict, message);
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
                ctx.miner.rejected(false);
                ctx.reporter.emit(Event::Rejected {
                    index: found.work.index,
                    proof: found.proof,
                    reason: "invalid",
                    message,
                });
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

/// Returns true when a server frame carries a non-null `difficulty`.
fn states_difficulty(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .is_ok_and(|v| v.get("difficulty").is_some_and(|d| !d.is_null()))
}

/// Returns true when `block` (the one after ours) carries `proof` and rewards `id`.
pub(crate) fn carries_our_proof(block: &Value, proof: u64, id: &str) -> bool {
    block_proof(block) == Some(proof)
        && block.get("transactions").and_then(Value::as_array).is_some_and(|txs| {
            txs.iter()
                .any(|t| t.get("recipient").and_then(Value::as_str).is_some_and(|r| r.trim() == id))
        })
}

/// Shortens untrusted text for a one-line report.
pub(crate) fn preview(text: &str) -> String {
    const MAX: usize = 80;
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &one_line[..cut]),
        None => format!("{one_line:?}"),
    }
}
