//! The WebSocket endpoint `/ws`: pushes the newest block to every connection and judges proofs.
//!
//! Each connection runs two tasks: a reader, which parses frames and judges proofs, and a writer,
//! the only one touching the socket's sink: it sends the replies queued by the reader (a bounded
//! queue), the newest block whenever the `watch` of [`Latest`](crate::state::Latest) changes
//! (a lagging client simply gets the newest one), and pings. Every send has a deadline; a client
//! that stops reading is dropped without delaying anyone else, because nothing is shared between
//! connections except the pre-serialised frame.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::message::FORGED;
use protocol::share::ShareReject;
use protocol::{ClientMessage, ServerMessage};
use tokio::sync::{mpsc, watch};
use tokio::time::error::Elapsed;
use tokio::time::{MissedTickBehavior, interval, interval_at, timeout};

use crate::error::AppError;
use crate::ledger::Outcome;
use crate::shares::ShareConn;
use crate::state::{AppState, Latest, ShareOutcome, ShareVerdict};

/// The largest text frame the server reads; a bigger one gets an `error` frame and the
/// connection stays open.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The largest message the transport buffers at all; beyond it the connection is closed with
/// code 1009 (message too big), since the stream cannot be resynchronised.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The chunk each connection reads into. The transport's default is 128 KiB per connection,
/// allocated up front: 1.3 GiB for 10,000 idle watchers. Frames larger than this are still read
/// (in several chunks), up to [`MAX_MESSAGE_BYTES`].
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Outgoing bytes buffered before a write is forced; every frame is flushed at once anyway.
pub const WRITE_BUFFER_BYTES: usize = 4 * 1024;
/// Replies (results, errors, stats) queued for a connection; when full, its frames are not read.
/// No reply grows with the chain or its blocks (the largest, a `stats` answer, is 20 block
/// summaries, 100 balances and 20 workers: under 128 KiB even with every id at its 128-character
/// maximum), so a
/// client that asks and never reads holds at most this many replies and the one being sent, for
/// at most [`SEND_TIMEOUT`] before it is dropped.
pub const REPLY_QUEUE: usize = 16;
/// Replies the writer holds in order behind one still waiting for its answer (a share waiting for
/// its batch to be stored); while that many wait, the reply queue fills and the connection's
/// frames are not read.
pub const MAX_AWAITED_REPLIES: usize = 64;
/// How long one send (or a wait for room in the reply queue) may take before the client counts
/// as stuck and is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Pings in a row without any frame back before the client is dropped.
pub const MAX_MISSED_PONGS: u32 = 2;
/// How long the writer may take to flush and close once the reader is done.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A reply for the writer to send, in the order the frames it answers were read.
enum Reply {
    /// Ready now.
    Now(Message),
    /// Ready once the future resolves (a share, once its batch is stored); replies behind it
    /// wait, block frames do not.
    Later(Pin<Box<dyn Future<Output = Message> + Send>>),
}

impl From<Message> for Reply {
    fn from(m: Message) -> Self {
        Reply::Now(m)
    }
}

/// Polls the oldest reply; ready when it is.
fn poll_front(queue: &mut VecDeque<Reply>, cx: &mut std::task::Context<'_>) -> Poll<Message> {
    let ready = match queue.front_mut() {
        None => return Poll::Pending,
        Some(Reply::Now(_)) => None,
        Some(Reply::Later(fut)) => match fut.as_mut().poll(cx) {
            Poll::Ready(m) => Some(m),
            Poll::Pending => return Poll::Pending,
        },
    };
    match (queue.pop_front(), ready) {
        (_, Some(m)) | (Some(Reply::Now(m)), None) => Poll::Ready(m),
        _ => Poll::Pending,
    }
}

/// `GET /ws`: upgrades to a WebSocket (a plain GET gets a JSON 4xx).
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let ws = ws?;
    let tasks = state.tasks().clone();
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| tasks.track_future(serve_socket(socket, state, peer))))
}

#[tracing::instrument(name = "ws", skip(socket, state))]
async fn serve_socket(socket: WebSocket, state: AppState, peer: SocketAddr) {
    state.stats().connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("connected");
    let (sink, stream) = socket.split();
    let (replies_tx, replies_rx) = mpsc::channel(REPLY_QUEUE);
    // Pings sent since the client last sent anything; the reader resets it.
    let missed = Arc::new(AtomicU32::new(0));
    // The reader is its own task so that judging a proof never holds up the writer.
    let mut reader =
        state.tasks().spawn(read_loop(stream, replies_tx, state.clone(), missed.clone(), peer));
    let writer = write_loop(sink, replies_rx, &state, &missed);
    tokio::pin!(writer);
    let why = tokio::select! {
        why = &mut writer => {
            reader.abort();
            why
        }
        ended = &mut reader => {
            tracing::debug!(reader = ?ended, "reader done");
            // The reader dropped its queue sender: the writer flushes what is queued and closes.
            timeout(CLOSE_GRACE, writer).await.unwrap_or("closing timed out")
        }
    };
    state.stats().connections.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(why, "disconnected");
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut replies: mpsc::Receiver<Reply>,
    state: &AppState,
    missed: &AtomicU32,
) -> &'static str {
    let mut blocks: watch::Receiver<Arc<Latest>> = state.subscribe();
    // Made once: a `cancelled()` future made afresh on every turn of the loop would take the
    // token's lock, which every connection shares, twice per frame.
    let shutdown = state.shutdown().clone().cancelled_owned();
    tokio::pin!(shutdown);
    let first = Message::Text(blocks.borrow_and_update().frame.clone());
    if !matches!(timeout(SEND_TIMEOUT, sink.send(first)).await, Ok(Ok(()))) {
        return "could not send the first block";
    }
    let start = tokio::time::Instant::now() + PING_EVERY;
    let mut ping = interval_at(start, PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Replies taken from the queue, in order; the oldest may still be waiting for its answer.
    let mut awaited: VecDeque<Reply> = VecDeque::new();
    let mut reader_done = false;
    let (message, why) = loop {
        if reader_done && awaited.is_empty() {
            return close_sink(sink, "closed by the client").await;
        }
        // Set when the message is a newly forged block: when that block was published.
        let mut published = None;
        let message = tokio::select! {
            biased;
            () = &mut shutdown => {
                break (close(close_code::AWAY, "server shutting down"), "server shutting down");
            }
            ready = poll_fn(|cx| poll_front(&mut awaited, cx)), if !awaited.is_empty() => match ready {
                m @ Message::Close(_) => break (m, "closed by the server"),
                m => m,
            },
            reply = replies.recv(), if !reader_done && awaited.len() < MAX_AWAITED_REPLIES => {
                match reply {
                    Some(reply) => awaited.push_back(reply),
                    None => reader_done = true,
                }
                continue;
            },
            changed = blocks.changed() => match changed {
                Ok(()) => {
                    let latest = blocks.borrow_and_update();
                    published = Some(latest.published);
                    Message::Text(latest.frame.clone())
                }
                Err(_) => break (close(close_code::AWAY, "server shutting down"), "server shutting down"),
            },
            _ = ping.tick() => {
                if missed.fetch_add(1, Ordering::Relaxed) >= MAX_MISSED_PONGS {
                    break (close(close_code::POLICY, "no pong"), "no pong");
                }
                Message::Ping(Bytes::new())
            }
        };
        match send(&mut sink, message).await {
            Ok(Ok(())) => {
                if let Some(published) = published {
                    state.metrics().fanout(published.elapsed());
                }
            }
            Ok(Err(_)) => return "send failed",
            Err(_) => return "client not reading (send timed out)",
        }
    };
    // Best effort: a client that will not read its close frame is dropped anyway.
    let _ = timeout(CLOSE_GRACE, sink.send(message)).await;
    close_sink(sink, why).await
}

/// Sends `message` within [`SEND_TIMEOUT`]. The deadline is only armed when the send cannot
/// finish at once: nearly every frame fits in the socket's buffer, and one timer per frame would
/// be 10,000 timers made and dropped per block with 10,000 watchers.
async fn send(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
) -> Result<Result<(), axum::Error>, Elapsed> {
    let mut send = pin!(sink.send(message));
    match poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
        Poll::Ready(sent) => Ok(sent),
        Poll::Pending => timeout(SEND_TIMEOUT, send).await,
    }
}

async fn close_sink(mut sink: SplitSink<WebSocket, Message>, why: &'static str) -> &'static str {
    let _ = timeout(CLOSE_GRACE, sink.close()).await;
    why
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    replies: mpsc::Sender<Reply>,
    state: AppState,
    missed: Arc<AtomicU32>,
    peer: SocketAddr,
) -> &'static str {
    // Set once the client opts in to shares; the tick lets vardiff lower a slow miner's target.
    // Vardiff looks back over RETARGET_INTERVALS intervals, so a tick per that window is enough
    // (one per interval was four timer wake-ups per connection for nothing).
    let mut shares: Option<ShareConn> = None;
    let mut tick = interval(state.share_settings().interval * crate::shares::RETARGET_INTERVALS);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            frame = stream.next() => match frame {
                Some(frame) => frame,
                None => break,
            },
            _ = tick.tick(), if shares.is_some() => {
                let changed = shares.as_mut().and_then(|c| c.on_tick(Instant::now()));
                if let Some(bits) = changed
                    && !matches!(timeout(SEND_TIMEOUT, replies.send(share_target(bits).into())).await, Ok(Ok(())))
                {
                    return "client not reading its replies";
                }
                continue;
            }
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // The stream cannot be resynchronised after a read error, so say why and close.
                let text = e.to_string();
                tracing::debug!(error = %text, "read failed");
                let message = if text.contains("too long") || text.contains("too big") {
                    close(close_code::SIZE, "message too big: at most 1 MiB is read, 64 KiB used")
                } else {
                    close(close_code::PROTOCOL, "protocol error")
                };
                let _ = replies.try_send(message.into());
                return "read failed";
            }
        };
        missed.store(0, Ordering::Relaxed);
        let (reply, then) = match frame {
            Message::Text(text) => handle_text(&state, text.as_str(), peer, &mut shares).await,
            Message::Binary(_) => {
                (Some(error("binary frames are not supported; send JSON text").into()), None)
            }
            Message::Ping(_) | Message::Pong(_) => (None, None),
            Message::Close(_) => return "closed by the client",
        };
        // Back-pressure: while the queue is full this stops reading, so a client that pipelines
        // requests is slowed down, and one that never reads is dropped after the timeout.
        for reply in [reply, then.map(Reply::from)].into_iter().flatten() {
            if !matches!(timeout(SEND_TIMEOUT, replies.send(reply)).await, Ok(Ok(()))) {
                return "client not reading its replies";
            }
        }
        if let Some(why) = shares.as_ref().and_then(ShareConn::cut_off) {
            let _ = timeout(SEND_TIMEOUT, replies.send(error(why).into())).await;
            let _ = replies.try_send(close(close_code::POLICY, "too many invalid shares").into());
            return "too many invalid shares";
        }
    }
    "connection ended"
}

fn error(message: impl Into<String>) -> Message {
    Message::Text(ServerMessage::Error { message: message.into() }.to_json().into())
}

fn share_target(bits: u8) -> Message {
    Message::Text(ServerMessage::ShareTarget { bits }.to_json().into())
}

/// Answers one text frame: the reply, and a frame to send after it (a changed share target).
async fn handle_text(
    state: &AppState,
    text: &str,
    peer: SocketAddr,
    shares: &mut Option<ShareConn>,
) -> (Option<Reply>, Option<Message>) {
    let now = |m: Message| (Some(Reply::Now(m)), None);
    if text.len() > MAX_TEXT_BYTES {
        let too_big =
            format!("frame is {} bytes; at most {MAX_TEXT_BYTES} are accepted", text.len());
        return now(error(too_big));
    }
    let sub = match ClientMessage::from_json(text) {
        Ok(ClientMessage::Proof(sub)) => sub,
        Ok(ClientMessage::LastBlock) => return now(Message::Text(state.latest().frame.clone())),
        Ok(ClientMessage::Stats) => {
            return now(Message::Text(state.stats_message().await.to_json().into()));
        }
        Ok(ClientMessage::Shares) => {
            let conn = shares.get_or_insert_with(|| {
                let allowance = state.proof_allowance();
                ShareConn::new(
                    &state.share_settings(),
                    state.difficulty(),
                    allowance,
                    Instant::now(),
                )
            });
            return now(share_target(conn.vardiff.bits()));
        }
        Ok(other) => return now(error(format!("unsupported message {other:?}"))),
        Err(e) => return now(error(e.to_string())),
    };
    // An opted-in connection's proofs are limited per connection (see `shares`), others' per
    // address. An `error` frame answers a refused proof, in order, as for any proof the server
    // cannot judge.
    let allowed = match shares.as_mut() {
        Some(conn) => conn.allow(Instant::now()),
        None => state.allow_proof(peer.ip()).map_err(|limited| limited.to_string()),
    };
    if let Err(limited) = allowed {
        return now(error(limited));
    }
    let mut finder_bits = None;
    if let Some(conn) = shares.as_mut() {
        // A share is judged here, without the ledger; only a block goes on to it.
        let target = conn.target(Instant::now());
        match state.judge_share(&sub, target) {
            ShareVerdict::Block => finder_bits = Some(target.bits),
            ShareVerdict::Refused(outcome) => {
                conn.judged(matches!(
                    outcome.reason,
                    Some(ShareReject::Invalid | ShareReject::Duplicate)
                ));
                return now(share_message(outcome));
            }
            ShareVerdict::Accepted(row) => {
                conn.judged(false);
                // Vardiff counts the share now: it was judged good, whatever becomes of its
                // storage (a database outage must not lower anyone's target).
                let retarget = conn.on_share(Instant::now()).map(share_target);
                let state = state.clone();
                let answer = async move {
                    match state.store_share(row).await {
                        Ok(outcome) => share_message(outcome),
                        Err(e) => error(e.to_string()),
                    }
                };
                return (Some(Reply::Later(Box::pin(answer))), retarget);
            }
        }
    }
    let result = match state.submit(sub, finder_bits).await {
        Ok(Outcome::Accepted(block)) => ServerMessage::Result {
            accepted: true,
            message: FORGED.to_owned(),
            reason: None,
            index: block.index,
        },
        Ok(Outcome::Rejected { reason, message, index }) => {
            ServerMessage::Result { accepted: false, message, reason: Some(reason), index }
        }
        Err(e @ (AppError::ShuttingDown | AppError::Unavailable(_))) => {
            return now(error(e.to_string()));
        }
        Err(e) => {
            tracing::error!(error = %e, "handling a proof failed");
            return now(error("something went wrong"));
        }
    };
    now(Message::Text(result.to_json().into()))
}

fn share_message(o: ShareOutcome) -> Message {
    let share = ServerMessage::Share {
        accepted: o.accepted,
        message: o.message,
        reason: o.reason,
        index: o.index,
        bits: o.bits,
    };
    Message::Text(share.to_json().into())
}
