//! The course's HTTP protocol, for Flask servers that have no WebSocket: poll
//! `GET /last_block` about once a second (so a block won by someone else still aborts the
//! search), `POST /mine` `{"proof", "id"}`, and judge the answer.
//!
//! This module only moves messages (see `driver` for what is done with them).
//!
//! Course servers differ, so every answer is read loosely: the block may sit under any key
//! ([`crate::job::extract_block`]), success is "New Block Forged" in any spelling or status code,
//! or, the sure way, the chain's next block carrying our proof. The dialect (what exactly is
//! hashed) is read off `/chain` when it holds a mined block, or flipped when a proof is rejected
//! on an unchanged chain.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};
use url::Url;

use crate::backoff::Backoff;
use crate::cli::Config;
use crate::driver::{Ctx, End, Incoming, Transport, Verdict, carries_our_proof, drive};
use crate::error::Outcome;
use crate::http_body::read_capped;
use crate::job::{Dialect, Work, detect_dialect, extract_block, extract_chain, says_forged};
use crate::limits::MAX_HTTP_BODY_BYTES;
use crate::miner::Found;
use crate::output::{Event, Reporter};
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

#[derive(Clone)]
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

/// Mines on a course HTTP server under `base` until the run ends (see [`drive`]).
pub(crate) async fn mine_http(ctx: &mut Ctx, base: &Url) -> End {
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
            return End::Done(Outcome::Lost);
        }
    };
    let course = Course { client, base: base.clone() };
    let mut poller = Poller::new(&ctx.config, ctx.reporter.clone(), course);
    drive(ctx, &mut poller).await
}

/// A request under way (kept across calls, so that waiting on it is cancel-safe).
type Flight = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// What a request under way brings back.
enum Answer {
    /// `GET /last_block`.
    Polled(Result<Polled, String>),
    /// `POST /mine` for `found`: the status and answer, its message, and `/chain` when the
    /// message does not say the proof won.
    Mined { found: Found, answer: Result<Mined, String> },
}

/// The server's answer to `GET /last_block`.
struct Polled {
    block: Value,
    /// The difficulty the answer says, if it does.
    difficulty: Option<protocol::Difficulty>,
    /// `/chain`, read when the block moved while the dialect is still a guess.
    chain: Option<Vec<Value>>,
}

/// The server's answer to `POST /mine`.
struct Mined {
    status: StatusCode,
    value: Value,
    message: String,
    chain: Option<Vec<Value>>,
}

/// The course HTTP transport: polls `GET /last_block`, posts each proof sent to `/mine` (one
/// at a time, in order) and reads the verdict off the answer or the chain.
struct Poller {
    course: Course,
    id: String,
    /// The difficulty when the server does not say (`--zeros`).
    zeros: protocol::Difficulty,
    poll_interval: Duration,
    /// For dialect lines.
    reporter: Reporter,
    choice: DialectChoice,
    backoff: Backoff,
    next_poll: Instant,
    /// True once a poll worked, until one fails.
    connected: bool,
    /// The last block the server showed, to notice when the chain moves.
    seen: Option<Value>,
    /// Proofs sent and not posted yet, oldest first.
    queued: VecDeque<Found>,
    flight: Option<Flight>,
    /// A block read by the poll that connected, returned after [`Incoming::Connected`].
    held: Option<Incoming>,
    /// A `POST /mine` failed: the next poll comes at once, not after the back-off.
    post_failed: bool,
}

impl Poller {
    fn new(config: &Config, reporter: Reporter, course: Course) -> Self {
        Poller {
            course,
            id: config.id.clone(),
            zeros: config.zeros,
            poll_interval: config.poll_interval,
            reporter,
            choice: match config.dialect {
                Some(d) => DialectChoice::Fixed(d),
                None => DialectChoice::Guess(Dialect::Json),
            },
            backoff: Backoff::new(config.backoff),
            next_poll: Instant::now(),
            connected: false,
            seen: None,
            queued: VecDeque::new(),
            flight: None,
            held: None,
            post_failed: false,
        }
    }

    /// Starts the next request: the oldest proof not posted yet, else a poll once it is due.
    async fn take_off(&mut self) -> Flight {
        let course = self.course.clone();
        if let Some(found) = self.queued.pop_front() {
            let id = self.id.clone();
            return Box::pin(async move {
                let answer = mine(&course, &id, &found).await;
                Answer::Mined { found, answer }
            });
        }
        sleep_until(self.next_poll).await;
        // The chain is read only while the dialect is a guess, and only when the block moved.
        let seen = matches!(self.choice, DialectChoice::Guess(_)).then(|| self.seen.clone());
        Box::pin(async move {
            let (block, difficulty) = match course.last_block().await {
                Ok(answer) => answer,
                Err(e) => return Answer::Polled(Err(e)),
            };
            let moved = seen.as_ref().is_some_and(|seen| seen.as_ref() != Some(&block));
            let chain = if moved { course.chain().await.ok() } else { None };
            Answer::Polled(Ok(Polled { block, difficulty, chain }))
        })
    }

    fn polled(&mut self, polled: Result<Polled, String>) -> Incoming {
        let Polled { block, difficulty, chain } = match polled {
            Ok(answer) => answer,
            Err(error) if self.connected => {
                self.connected = false;
                return Incoming::Lost(error);
            }
            Err(error) => return Incoming::Unreachable(error),
        };
        self.backoff.reset();
        self.next_poll = Instant::now() + self.poll_interval;
        self.seen = Some(block.clone());
        let difficulty = difficulty.unwrap_or(self.zeros);
        if let DialectChoice::Guess(guess) = self.choice
            && let Some(chain) = chain
            && let Some(dialect) = detect_dialect(&chain, difficulty)
        {
            self.choice = DialectChoice::Detected(dialect);
            let how = if dialect == guess { "confirmed" } else { "detected" };
            self.reporter.emit(Event::Dialect {
                dialect,
                reason: format!("{how} from a mined block on /chain"),
            });
        }
        let work = Arc::new(Work::new(&block, difficulty, self.choice.dialect()));
        let incoming = Incoming::Block { block, work };
        if self.connected {
            return incoming;
        }
        self.connected = true;
        self.held = Some(incoming);
        Incoming::Connected { url: self.course.base.to_string(), protocol: "http" }
    }

    /// Judges the answer to `POST /mine`: won if it says so or the chain's next block carries
    /// our proof; else stale or invalid, which may flip a guessed dialect.
    fn judge(&mut self, found: &Found, mined: Mined) -> Incoming {
        let Mined { status, value, message, chain } = mined;
        let mut won = says_forged(&message);
        let mut chain_moved = None;
        if !won && let Some(chain) = chain {
            let next = chain
                .iter()
                .position(|b| protocol::to_python_json(b) == found.work.block_string)
                .and_then(|i| chain.get(i + 1));
            won = next.is_some_and(|b| carries_our_proof(b, found.proof, &self.id));
            chain_moved = Some(next.is_some());
        }
        let frame = preview(&value.to_string());
        if won {
            if let DialectChoice::Guess(d) = self.choice {
                self.choice = DialectChoice::Detected(d);
            }
            // Course servers answer a win with the new block's index.
            let won = value.get("index").and_then(Value::as_u64);
            return Incoming::Verdict {
                verdict: Verdict::Accepted,
                message,
                won,
                frame,
                then: None,
            };
        }
        let stale = match value.get("reason").and_then(Value::as_str) {
            Some("stale") => true,
            Some("invalid") => false,
            _ => chain_moved.unwrap_or(false),
        };
        let mut then = None;
        if !stale && let DialectChoice::Guess(d) = self.choice {
            // A proof valid in our dialect, rejected while the chain stood still: the server
            // hashes something else, or wants more zeroes than we assumed. Try the other
            // dialect; it stays a guess (the next such rejection flips back) until a proof is
            // accepted.
            let next = d.other();
            self.choice = DialectChoice::Guess(next);
            then = Some(Event::Dialect {
                dialect: next,
                reason: format!(
                    "a valid proof was rejected on an unchanged chain; trying {next} (if every \
                     proof is rejected, the server may need more than {} zeroes: see --zeros)",
                    found.work.difficulty()
                ),
            });
        }
        let verdict = if stale { Verdict::Stale } else { Verdict::Invalid };
        let message = format!("{message} (HTTP {status})");
        Incoming::Verdict { verdict, message, won: None, frame, then }
    }
}

impl Transport for Poller {
    async fn next(&mut self) -> Incoming {
        if let Some(held) = self.held.take() {
            return held;
        }
        let flight = match self.flight.as_mut() {
            Some(flight) => flight,
            None => {
                let flight = self.take_off().await;
                self.flight.insert(flight)
            }
        };
        let answer = flight.await;
        self.flight = None;
        match answer {
            Answer::Polled(polled) => self.polled(polled),
            Answer::Mined { found, answer: Ok(mined) } => self.judge(&found, mined),
            Answer::Mined { answer: Err(reason), .. } => {
                // No answer: the proofs sent are sent again if their block is still current
                // at the next poll, which comes at once.
                self.queued.clear();
                self.post_failed = true;
                Incoming::Lost(reason)
            }
        }
    }

    async fn send(&mut self, found: &Found) -> Result<(), String> {
        self.queued.push_back(found.clone());
        Ok(())
    }

    async fn request_block(&mut self) -> Result<(), String> {
        // Look at the chain at once: a new block to mine, or the same one again.
        self.next_poll = Instant::now();
        self.seen = None;
        Ok(())
    }

    fn retry(&mut self) -> Duration {
        self.queued.clear();
        if std::mem::take(&mut self.post_failed) {
            self.next_poll = Instant::now();
            self.seen = None;
            return Duration::ZERO;
        }
        let delay = self.backoff.next_delay();
        self.next_poll = Instant::now() + delay;
        delay
    }

    fn is_connected(&self) -> bool {
        self.connected
    }

    fn url(&self) -> String {
        self.course.base.to_string()
    }
}

/// Posts `found` to `/mine` and reads the answer (an HTML error page is an answer too: judged
/// by the chain); reads `/chain` too when the answer does not say the proof won.
async fn mine(course: &Course, id: &str, found: &Found) -> Result<Mined, String> {
    let url = course.url("mine")?;
    let body = json!({ "proof": found.proof, "id": id });
    let (status, value) = match course.call(course.client.post(url).json(&body), "POST /mine").await
    {
        Ok(answer) => answer,
        Err(reason) if reason.contains("not JSON") => {
            (StatusCode::INTERNAL_SERVER_ERROR, Value::String(reason))
        }
        Err(reason) => return Err(reason),
    };
    let message = match value.get("message") {
        Some(Value::String(m)) => m.clone(),
        _ => match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    };
    let chain = if says_forged(&message) { None } else { course.chain().await.ok() };
    Ok(Mined { status, value, message, chain })
}
