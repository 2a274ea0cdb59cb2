//! The WebSocket transport to a pool-server: connect, read pushed blocks, send proofs, keep the
//! connection alive, and reopen it after the back-off the driver asks for. What to do with a
//! block, a proof or a verdict is the driver's (`driver`); this module only moves messages.
//!
//! The search is independent of the connection: it keeps running while the miner reconnects, and
//! a proof found meanwhile is sent when the server is back (if its block is still current).
//! Every frame is untrusted: what cannot be used is reported in one line and ignored.
//!
//! Shares: on each connection the session opts in (`{"type":"shares"}`, unless `--no-shares`);
//! a pool-server answers with its share target, a server without shares with an `error` (one
//! line, then blocks only, as before), a scripted one perhaps not at all. Answers come in the
//! order things were sent, so the session keeps that order (`sent`) to tell which proof or
//! share an `error` frame answers.

use futures_util::StreamExt;
use protocol::{ClientMessage, Difficulty, ProofSubmission, ServerMessage};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::error::Elapsed;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval, sleep_until, timeout};
use tokio_tungstenite::tungstenite::{self, Message};
use url::Url;

use crate::backoff::Backoff;
use crate::cli::Config;
use crate::driver::{Ctx, End, Incoming, Transport, Verdict, drive};
use crate::job::{Dialect, Work};
use crate::limits::MAX_SHARES_IN_FLIGHT;
use crate::miner::Found;
use crate::output::{Event, Reporter};
use crate::untrusted::preview;
use crate::websocket::{
    CONNECT_TIMEOUT, ConnectError, KEEPALIVE, READ_TIMEOUT, Ws, connect, describe_ws_error, send,
    stalled,
};

/// A connection attempt under way (kept across calls, so that waiting on it is cancel-safe).
type Connecting = Pin<Box<dyn Future<Output = Result<Result<Ws, ConnectError>, Elapsed>> + Send>>;

/// Mines over the WebSocket at `url` until the run ends (see [`drive`]). With `fallback`, a
/// server that answers the upgrade with an HTTP status ends the session with [`End::Fallback`].
pub(crate) async fn mine_ws(ctx: &mut Ctx, url: &Url, fallback: bool) -> End {
    let mut session = Session::new(&ctx.config, ctx.reporter.clone(), url, fallback);
    drive(ctx, &mut session).await
}

/// The WebSocket transport: one connection at a time, reopened after the delay the driver asks
/// for; pushed `block` frames, proofs, results, pings.
pub(crate) struct Session {
    url: Url,
    fallback: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    id: String,
    /// The difficulty of a block frame that does not say (`--zeros`).
    zeros: Difficulty,
    dialect: Dialect,
    /// For frames that cannot be used (one line each).
    reporter: Reporter,
    conn: Option<Ws>,
    connecting: Option<Connecting>,
    backoff: Backoff,
    retry_at: Instant,
    last_read: Instant,
    keepalive: Interval,
    /// Opt in to shares on each connection (`--no-shares` turns it off).
    shares: bool,
    /// The opt-in was sent on this connection and nothing has answered it yet.
    opt_in_pending: bool,
    /// The refusal of the opt-in was reported (once per session).
    refusal_told: bool,
    /// This connection's share target.
    target: Option<u8>,
    /// What was sent on this connection and not answered yet, oldest first.
    sent: VecDeque<Sent>,
}

/// Something sent that the server answers.
enum Sent {
    /// A block proof (answered `result`, or `error`).
    Proof,
    /// A share (answered `share`, or `error`).
    Share(Found),
}

impl Session {
    fn new(config: &Config, reporter: Reporter, url: &Url, fallback: bool) -> Self {
        let mut keepalive = interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Session {
            url: url.clone(),
            fallback,
            tls: config.tls.clone(),
            id: config.id.clone(),
            zeros: config.zeros,
            dialect: config.dialect.unwrap_or(Dialect::Json),
            reporter,
            conn: None,
            connecting: None,
            backoff: Backoff::new(config.backoff),
            retry_at: Instant::now(),
            last_read: Instant::now(),
            keepalive,
            shares: config.shares,
            opt_in_pending: false,
            refusal_told: false,
            target: None,
            sent: VecDeque::new(),
        }
    }

    /// Opens the connection, once the retry delay has passed.
    async fn open(&mut self) -> Incoming {
        sleep_until(self.retry_at).await;
        let (url, tls) = (&self.url, &self.tls);
        let connecting = self.connecting.get_or_insert_with(|| {
            let (url, tls) = (url.clone(), tls.clone());
            Box::pin(async move { timeout(CONNECT_TIMEOUT, connect(&url, tls.as_ref())).await })
        });
        let attempt = connecting.await;
        self.connecting = None;
        let url = &self.url;
        let error = match attempt {
            Ok(Ok(ws)) => {
                self.conn = Some(ws);
                self.sent.clear();
                self.opt_in_pending = false;
                self.target = None;
                self.last_read = Instant::now();
                // The first ping is due one interval after connecting.
                self.keepalive.reset();
                return Incoming::Connected { url: url.to_string(), protocol: "websocket" };
            }
            Ok(Err(ConnectError::Status(status))) if self.fallback => {
                return Incoming::Fallback(format!("{url} answered HTTP {status}"));
            }
            Ok(Err(e)) => e.describe(url),
            Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        };
        Incoming::Unreachable(error)
    }

    /// Reads what one frame says; `None` for frames that say nothing to the driver.
    fn read(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> Option<Incoming> {
        let lost = match frame {
            Some(Ok(Message::Text(text))) => return self.read_text(text.as_str()),
            Some(Ok(Message::Binary(data))) => {
                self.reporter.emit(Event::Ignored {
                    what: format!(
                        "a binary frame of {} bytes (only JSON text frames are used)",
                        data.len()
                    ),
                });
                return None;
            }
            Some(Ok(Message::Close(frame))) => match frame {
                Some(f) if !f.reason.is_empty() => {
                    format!("the server closed the connection ({}: {})", f.code, f.reason)
                }
                _ => "the server closed the connection".to_owned(),
            },
            // Pings are answered by tungstenite; pongs only prove the server is alive.
            Some(Ok(_)) => return None,
            Some(Err(e)) => describe_ws_error(&e),
            None => "the server closed the connection".to_owned(),
        };
        self.conn = None;
        Some(Incoming::Lost(lost))
    }

    fn read_text(&mut self, text: &str) -> Option<Incoming> {
        let message = match ServerMessage::from_json(text) {
            Ok(message) => message,
            Err(e) => {
                self.reporter.emit(Event::Ignored { what: format!("{e}: {}", preview(text)) });
                return None;
            }
        };
        match message {
            ServerMessage::Block { block, difficulty } => {
                // The server works: the next failure starts the back-off from the beginning.
                self.backoff.reset();
                // A frame without a difficulty: the user's --zeros decides.
                let difficulty = difficulty.unwrap_or(self.zeros);
                let work = Arc::new(Work::new(&block, difficulty, self.dialect));
                Some(Incoming::Block { block, work })
            }
            ServerMessage::Result { accepted, message, reason, index } => {
                // The first answer is not the opt-in's: this server ignores it.
                self.opt_in_pending = false;
                if let Some(at) = self.sent.iter().position(|s| matches!(s, Sent::Proof)) {
                    self.sent.remove(at);
                }
                let verdict = match (accepted, reason) {
                    (true, _) => Verdict::Accepted,
                    (false, Some(protocol::RejectReason::Stale)) => Verdict::Stale,
                    (false, _) => Verdict::Invalid,
                };
                // After a win the server's last block is the one our proof forged.
                // (A server that leaves `index` out gets it parsed as 0: unknown.)
                let won = (verdict == Verdict::Accepted && index > 0).then_some(index);
                Some(Incoming::Verdict { verdict, message, won, frame: preview(text), then: None })
            }
            ServerMessage::Error { message } => {
                let pending = std::mem::replace(&mut self.opt_in_pending, false);
                // The opt-in is sent before any proof, so a server that answers it answers it
                // first: an `error` then is its refusal (a server without shares).
                if pending && (self.sent.is_empty() || message.contains("shares")) {
                    if std::mem::replace(&mut self.refusal_told, true) {
                        return None;
                    }
                    return Some(Incoming::SharesRefused(message));
                }
                match self.sent.pop_front() {
                    Some(Sent::Share(found)) => Some(Incoming::ShareVerdict {
                        found,
                        accepted: false,
                        reason: Some("error"),
                        bits: self.target.unwrap_or(0),
                        message,
                    }),
                    Some(Sent::Proof) | None => Some(Incoming::Error(message)),
                }
            }
            ServerMessage::ShareTarget { bits } if self.shares => {
                self.opt_in_pending = false;
                self.target = Some(bits);
                Some(Incoming::ShareTarget(bits))
            }
            ServerMessage::Share { accepted, message, reason, bits, .. } => {
                let Some(at) = self.sent.iter().position(|s| matches!(s, Sent::Share(_))) else {
                    self.reporter.emit(Event::Ignored {
                        what: format!("a share answer for no share of ours: {}", preview(text)),
                    });
                    return None;
                };
                let Some(Sent::Share(found)) = self.sent.remove(at) else { return None };
                let reason = reason.map(protocol::share::ShareReject::as_str);
                Some(Incoming::ShareVerdict { found, accepted, reason, bits, message })
            }
            other => {
                self.reporter
                    .emit(Event::Ignored { what: format!("an unexpected message: {other:?}") });
                None
            }
        }
    }

    /// Sends `message`; a failure closes the connection.
    async fn send_message(&mut self, message: Message) -> Result<(), String> {
        let Some(ws) = self.conn.as_mut() else {
            return Err("the server closed the connection".to_owned());
        };
        let sent = send(ws, message).await;
        if sent.is_err() {
            self.conn = None;
        }
        sent
    }
}

impl Transport for Session {
    async fn next(&mut self) -> Incoming {
        loop {
            let Some(ws) = self.conn.as_mut() else { return self.open().await };
            let frame = tokio::select! {
                frame = ws.next() => frame,
                _ = self.keepalive.tick() => {
                    let reason = if self.last_read.elapsed() > READ_TIMEOUT {
                        Some(format!("no data from the server for {}s", READ_TIMEOUT.as_secs()))
                    } else {
                        send(ws, Message::Ping(Vec::new().into())).await.err()
                    };
                    if let Some(reason) = reason {
                        self.conn = None;
                        return Incoming::Lost(reason);
                    }
                    continue;
                }
            };
            self.last_read = Instant::now();
            if let Some(reason) = stalled(ws) {
                self.conn = None;
                return Incoming::Lost(reason);
            }
            if let Some(incoming) = self.read(frame) {
                return incoming;
            }
        }
    }

    async fn send(&mut self, found: &Found) -> Result<(), String> {
        let message = ClientMessage::Proof(ProofSubmission {
            proof: found.proof,
            id: self.id.clone(),
            index: found.work.index,
        });
        self.send_message(Message::text(message.to_json())).await?;
        self.sent.push_back(Sent::Proof);
        Ok(())
    }

    async fn opt_in(&mut self) -> Result<(), String> {
        if !self.shares {
            return Ok(());
        }
        self.send_message(Message::text(ClientMessage::Shares.to_json())).await?;
        self.opt_in_pending = true;
        Ok(())
    }

    fn share_window_open(&self) -> bool {
        self.conn.is_some()
            && self.sent.iter().filter(|s| matches!(s, Sent::Share(_))).count()
                < MAX_SHARES_IN_FLIGHT
    }

    async fn send_share(&mut self, share: &Found) -> Result<bool, String> {
        if !self.share_window_open() {
            return Ok(false);
        }
        // The same frame as a block proof: the pool judges which it is.
        let message = ClientMessage::Proof(ProofSubmission {
            proof: share.proof,
            id: self.id.clone(),
            index: share.work.index,
        });
        self.send_message(Message::text(message.to_json())).await?;
        self.sent.push_back(Sent::Share(share.clone()));
        Ok(true)
    }

    fn shares_awaiting(&self) -> bool {
        self.sent.iter().any(|s| matches!(s, Sent::Share(_)))
    }

    async fn request_block(&mut self) -> Result<(), String> {
        self.send_message(Message::text(ClientMessage::LastBlock.to_json())).await
    }

    fn retry(&mut self) -> Duration {
        self.conn = None;
        let delay = self.backoff.next_delay();
        self.retry_at = Instant::now() + delay;
        delay
    }

    fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    fn url(&self) -> String {
        self.url.to_string()
    }
}
