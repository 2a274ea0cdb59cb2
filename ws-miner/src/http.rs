//! The course's HTTP protocol, for Flask servers that have no WebSocket: poll
//! `GET /last_block` about once a second (so a block won by someone else still aborts the
//! search), `POST /mine` `{"proof", "id"}`, and judge the answer.
//!
//! Course servers differ, so every answer is read loosely: the block may sit under any key
//! ([`crate::job::extract_block`]), success is "New Block Forged" in any spelling or status code,
//! or, the sure way, the chain's next block carrying our proof. The dialect (what exactly is
//! hashed) is read off `/chain` when it holds a mined block, or flipped when a proof is rejected
//! on an unchanged chain.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, interval, sleep_until};
use url::Url;

use crate::backoff::Backoff;
use crate::driver::{
    Ctx, Leave, STATUS_EVERY, Verdict, carries_our_proof, preferred_back, stopped,
};
use crate::error::Outcome;
use crate::http_body::read_capped;
use crate::job::{Dialect, Work, detect_dialect, extract_block, extract_chain, says_forged};
use crate::limits::{MAX_HTTP_BODY_BYTES, SHUTDOWN_GRACE};
use crate::miner::Found;
use crate::output::Event;
use crate::untrusted::preview;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the dialect came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialectChoice {
    /// `--dialect`.
    Fixed(Dialect),
    /// Read off `/chain`.
    Detected(Dialect),
    /// A guess, revised when the chain or a rejection tells.
    Guess(Dialect),
}

impl DialectChoice {
    fn dialect(self) -> Dialect {
        match self {
            DialectChoice::Fixed(d) | DialectChoice::Detected(d) | DialectChoice::Guess(d) => d,
        }
    }
}

struct Course {
    client: Client,
    base: Url,
}

impl Course {
    fn url(&self, route: &str) -> Result<Url, String> {
        self.base.join(route).map_err(|e| format!("cannot build the URL of {route}: {e}"))
    }

    /// Sends a request and reads its answer as JSON (the status is returned, not judged).
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(StatusCode, Value), String> {
        let response = request.send().await.map_err(|e| format!("{what}: {}", describe(&e)))?;
        let status = response.status();
        let body = read_capped(response, MAX_HTTP_BODY_BYTES)
            .await
            .map_err(|e| format!("{what}: HTTP {status}: {e}"))?;
        match serde_json::from_slice(&body) {
            Ok(value) => Ok((status, value)),
            Err(_) => Err(format!(
                "{what}: HTTP {status} with a body that is not JSON: {}",
                preview(&String::from_utf8_lossy(&body))
            )),
        }
    }

    async fn last_block(&self) -> Result<(Value, Option<protocol::Difficulty>), String> {
        let url = self.url("last_block")?;
        let (status, answer) = self.call(self.client.get(url), "GET /last_block").await?;
        if status == StatusCode::NOT_FOUND {
            return Err(format!(
                "GET /last_block: HTTP {status}: no course API under {}; check the URL: \
                 http://HOST:PORT for a course server (or a pool-server), ws://HOST:PORT/ws for a \
                 pool-server's WebSocket",
                self.base
            ));
        }
        if !status.is_success() {
            return Err(format!(
                "GET /last_block: HTTP {status}: {}",
                preview(&answer.to_string())
            ));
        }
        let extracted = extract_block(&answer).ok_or_else(|| {
            format!("GET /last_block: no block in the answer: {}", preview(&answer.to_string()))
        })?;
        Ok((extracted.block, extracted.difficulty))
    }

    async fn chain(&self) -> Result<Vec<Value>, String> {
        let url = self.url("chain")?;
        let (_, answer) = self.call(self.client.get(url), "GET /chain").await?;
        extract_chain(&answer).map(<[Value]>::to_vec).ok_or_else(|| {
            format!("GET /chain: no chain in the answer: {}", preview(&answer.to_string()))
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's own text is "error sending request for url (...)"; the cause says what happened.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        // rustls' error comes wrapped in an io::Error, whose `source` skips it.
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return crate::tls::describe(tls);
        }
        text = cause.to_string();
        source = cause.source();
    }
    if e.is_timeout() {
        return format!("no answer within {}s", REQUEST_TIMEOUT.as_secs());
    }
    // hyper's resolver says "failed to lookup address information: ..." (getaddrinfo).
    if e.is_connect() && (text.contains("lookup address") || text.contains("dns error")) {
        let host = e.url().and_then(Url::host_str).unwrap_or("?").to_owned();
        return format!("unknown host {host:?} (the name does not resolve: {text})");
    }
    text
}

/// Mines on a course HTTP server under `base` until the run ends, or, with several pools,
/// until this one fails or an earlier one answers again (`Err`; unjudged proofs are carried in
/// the context).
pub(crate) async fn mine_http(ctx: &mut Ctx, base: &Url) -> Result<Outcome, Leave> {
    let builder = Client::builder().timeout(REQUEST_TIMEOUT).connect_timeout(REQUEST_TIMEOUT);
    let builder = match &ctx.config.tls {
        Some(tls) => builder.use_preconfigured_tls((**tls).clone()),
        None => builder,
    };
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            ctx.reporter
                .emit(Event::ServerError { message: format!("cannot build an HTTP client: {e}") });
            return Ok(Outcome::Lost);
        }
    };
    let course = Course { client, base: base.clone() };
    let mut choice = match ctx.config.dialect {
        Some(d) => DialectChoice::Fixed(d),
        None => DialectChoice::Guess(Dialect::Json),
    };
    let mut backoff = Backoff::new(ctx.config.backoff);
    let mut next_poll = Instant::now();
    let mut connected = false;
    // The last block the server showed, to notice when the chain moves.
    let mut seen: Option<Value> = None;
    let mut unsent: Option<Found> = None;
    let mut shutdown = ctx.shutdown.clone();
    let mut status = interval(STATUS_EVERY);
    let show_status = ctx.reporter.has_status_line();
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => return Ok(Outcome::Interrupted),
            () = sleep_until(next_poll) => {
                let polled = tokio::select! {
                    r = course.last_block() => r,
                    () = stopped(&mut shutdown) => return Ok(Outcome::Interrupted),
                };
                let arrival = ctx.miner.arrival();
                let (block, difficulty) = match polled {
                    Ok(answer) => answer,
                    Err(error) => {
                        if ctx.failover.is_some() {
                            // Several pools: the next one is tried instead (see `pools`).
                            ctx.carry(unsent.take());
                            return Err(Leave::Failed(error));
                        }
                        let delay = backoff.next_delay();
                        next_poll = Instant::now() + delay;
                        if connected {
                            connected = false;
                            ctx.reporter.emit(Event::Disconnected { reason: error });
                        } else {
                            ctx.reporter.emit(Event::ConnectFailed {
                                url: base.to_string(),
                                error,
                                retry_in_ms: delay.as_millis().try_into().unwrap_or(u64::MAX),
                            });
                        }
                        continue;
                    }
                };
                backoff.reset();
                next_poll = Instant::now() + ctx.config.poll_interval;
                if !connected {
                    connected = true;
                    ctx.reached = true;
                    ctx.reporter.emit(Event::Connected { url: base.to_string(), protocol: "http" });
                }
                let moved = seen.as_ref() != Some(&block);
                seen = Some(block.clone());
                let difficulty = difficulty.unwrap_or(ctx.config.zeros);
                if moved
                    && let DialectChoice::Guess(guess) = choice
                    && let Ok(chain) = course.chain().await
                    && let Some(dialect) = detect_dialect(&chain, difficulty)
                {
                    choice = DialectChoice::Detected(dialect);
                    let how = if dialect == guess { "confirmed" } else { "detected" };
                    ctx.reporter.emit(Event::Dialect {
                        dialect,
                        reason: format!("{how} from a mined block on /chain"),
                    });
                }
                let work = Arc::new(Work::new(&block, difficulty, choice.dialect()));
                // Proofs found on another pool's block go out only if it is this server's too.
                let carried = ctx.carried_for(&work);
                if !carried.is_empty() {
                    for found in carried {
                        match submit(ctx, &course, &mut choice, found.clone()).await {
                            Submitted::Judged(Some(outcome)) => return Ok(outcome),
                            Submitted::Judged(None) => {}
                            Submitted::Unreachable => ctx.carry([found]),
                        }
                    }
                    // Look at the chain again at once: it may have moved.
                    next_poll = Instant::now();
                    seen = None;
                    continue;
                }
                if let Some(found) = unsent.take() {
                    if *found.work == *work {
                        match submit(ctx, &course, &mut choice, found.clone()).await {
                            Submitted::Judged(Some(outcome)) => return Ok(outcome),
                            Submitted::Judged(None) => next_poll = Instant::now(),
                            Submitted::Unreachable => unsent = Some(found),
                        }
                        continue;
                    }
                    if let Some(outcome) = ctx.settle(&found, &block) {
                        return Ok(outcome);
                    }
                }
                if let Some(outcome) = ctx.follow(work, arrival).await {
                    return Ok(outcome);
                }
            }
            found = ctx.miner.found() => {
                // With several pools: only a proof for this pool's block goes to it.
                let Some(found) = ctx.sendable(found) else { continue };
                // Ctrl-C while the proof is being judged waits SHUTDOWN_GRACE for the answer,
                // so that a win in flight is counted.
                let judged = tokio::select! {
                    judged = submit(ctx, &course, &mut choice, found.clone()) => judged,
                    () = async {
                        stopped(&mut shutdown).await;
                        tokio::time::sleep(SHUTDOWN_GRACE).await;
                    } => return Ok(Outcome::Interrupted),
                };
                match judged {
                    Submitted::Judged(Some(outcome)) => return Ok(outcome),
                    Submitted::Judged(None) => {}
                    Submitted::Unreachable => unsent = Some(found),
                }
                // Look at the chain at once: a new block to mine, or the same one again.
                next_poll = Instant::now();
                seen = None;
            }
            // Several pools: an earlier one answers again.
            () = preferred_back(&mut ctx.failover) => {
                ctx.carry(unsent.take());
                return Err(Leave::Preferred);
            }
            _ = status.tick(), if show_status => ctx.miner.show_status(),
        }
    }
}

enum Submitted {
    /// The server answered; `Some` ends a `--once` run.
    Judged(Option<Outcome>),
    /// The server could not be reached; try again when it answers.
    Unreachable,
}

async fn submit(
    ctx: &mut Ctx,
    course: &Course,
    choice: &mut DialectChoice,
    found: Found,
) -> Submitted {
    let url = match course.url("mine") {
        Ok(url) => url,
        Err(e) => {
            ctx.reporter.emit(Event::ServerError { message: e });
            return Submitted::Judged(ctx.once_after_result(false));
        }
    };
    let body = json!({ "proof": found.proof, "id": ctx.config.id });
    let answer = match course.call(course.client.post(url).json(&body), "POST /mine").await {
        Ok(answer) => answer,
        Err(reason) if reason.contains("not JSON") => {
            // An HTML error page is an answer too: judge by the chain below.
            (StatusCode::INTERNAL_SERVER_ERROR, Value::String(reason))
        }
        Err(reason) => {
            // With several pools the next poll's failure leaves this one (see `pools`).
            if ctx.failover.is_none() {
                ctx.reporter.emit(Event::Disconnected { reason });
            }
            return Submitted::Unreachable;
        }
    };
    let (status, value) = answer;
    let message = match value.get("message") {
        Some(Value::String(m)) => m.clone(),
        _ => match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    };
    let mut won = says_forged(&message);
    let mut chain_moved = None;
    if !won && let Ok(chain) = course.chain().await {
        let next = chain
            .iter()
            .position(|b| protocol::to_python_json(b) == found.work.block_string)
            .and_then(|i| chain.get(i + 1));
        won = next.is_some_and(|b| carries_our_proof(b, found.proof, &ctx.config.id));
        chain_moved = Some(next.is_some());
    }
    if won {
        // Course servers answer a win with the new block's index.
        let block = value.get("index").and_then(Value::as_u64);
        ctx.judged(&found, Verdict::Accepted, message, block);
        if let DialectChoice::Guess(d) = *choice {
            *choice = DialectChoice::Detected(d);
        }
        return Submitted::Judged(ctx.once_after_result(true));
    }
    let stale = match value.get("reason").and_then(Value::as_str) {
        Some("stale") => true,
        Some("invalid") => false,
        _ => chain_moved.unwrap_or(false),
    };
    let verdict = if stale { Verdict::Stale } else { Verdict::Invalid };
    ctx.judged(&found, verdict, format!("{message} (HTTP {status})"), None);
    if !stale && let DialectChoice::Guess(d) = *choice {
        // A proof valid in our dialect, rejected while the chain stood still: the server hashes
        // something else, or wants more zeroes than we assumed. Try the other dialect; it stays
        // a guess (the next such rejection flips back) until a proof is accepted.
        let next = d.other();
        *choice = DialectChoice::Guess(next);
        ctx.reporter.emit(Event::Dialect {
            dialect: next,
            reason: format!(
                "a valid proof was rejected on an unchanged chain; trying {next} (if every proof \
                 is rejected, the server may need more than {} zeroes: see --zeros)",
                found.work.difficulty()
            ),
        });
    }
    Submitted::Judged(ctx.once_after_result(false))
}
