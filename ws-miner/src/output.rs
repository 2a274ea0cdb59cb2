//! Everything the user sees: one [`Event`] per thing that happened, rendered as a plain line,
//! as one JSON object per line (`--json`), or not at all (`--quiet`, which keeps only the
//! summary), plus a live status line (indicatif) when stdout is a terminal.
//!
//! The session never prints; it hands events to a [`Reporter`]. Tests build a reporter with
//! [`Reporter::channel`] and await the events instead of parsing text.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

use crate::untrusted::sanitize;
use protocol::Scheme;

/// Something that happened, worth telling the user.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Connected; `protocol` is `"websocket"` or `"http"`.
    Connected {
        /// The endpoint.
        url: String,
        /// `"websocket"` or `"http"`.
        protocol: &'static str,
    },
    /// A connection attempt failed; the next one is in `retry_in_ms`.
    ConnectFailed {
        /// The endpoint.
        url: String,
        /// Why.
        error: String,
        /// Milliseconds until the next attempt.
        retry_in_ms: u64,
    },
    /// An open connection ended.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The server does not speak WebSocket; mining goes on over the course's HTTP protocol.
    FallbackToHttp {
        /// What the WebSocket upgrade got.
        reason: String,
    },
    /// The byte dialect the server hashes was decided (or switched).
    Dialect {
        /// The dialect now in use.
        dialect: crate::job::Dialect,
        /// Why.
        reason: String,
    },
    /// A search started.
    SearchStarted {
        /// The index of the block mined on (the proof's `index`).
        index: Option<u64>,
        /// The number of the block this search tries to forge: `index + 1`, as the server, the
        /// dashboard and `scripts/watch` number it.
        block: Option<u64>,
        /// Leading hex zeroes.
        difficulty: u8,
        /// The search kernel.
        kernel: &'static str,
        /// Worker threads.
        threads: usize,
    },
    /// A search found a proof.
    SearchFinished {
        /// The index of the block mined on.
        index: Option<u64>,
        /// The number of the block the proof would forge (`index + 1`).
        block: Option<u64>,
        /// The proof.
        proof: u64,
        /// Seconds the search ran.
        secs: f64,
        /// Hashes tried.
        attempts: u64,
        /// Hashes per second.
        hashrate: f64,
    },
    /// A search was dropped because a newer block arrived.
    SearchAborted {
        /// The index of the block that was mined on.
        index: Option<u64>,
        /// The number of the block the search tried to forge (`index + 1`).
        block: Option<u64>,
        /// The index of the block that arrived (the server's new last block).
        by_index: Option<u64>,
        /// Seconds the search had run.
        secs: f64,
        /// When the new block's frame (or poll answer) was read: Unix seconds, a float.
        arrived_ts: f64,
        /// Milliseconds from reading the new block to setting the workers' stop flag.
        flag_ms: f64,
        /// Milliseconds between the stop request and the workers' return.
        stop_ms: f64,
        /// Hashes tried on the abandoned block.
        attempts: u64,
        /// Of those, the hashes tried after the new block was read (work on a block already
        /// replaced); counts read while the search runs lag by at most a few hundred per worker,
        /// so this may overstate by as much, never understate.
        stale_attempts: u64,
    },
    /// The server accepted a proof: this miner won a block.
    Accepted {
        /// The index of the block the proof was mined on.
        index: Option<u64>,
        /// The number of the block won: the server's index of the block it forged (its
        /// `result.index`), else `index + 1`.
        block: Option<u64>,
        /// The proof.
        proof: u64,
        /// The server's message.
        message: String,
        /// Coins won in this run so far.
        coins: u64,
    },
    /// A block forged during this run arrived (each block once, whoever found it): who found
    /// it and what it paid this id.
    NewBlock {
        /// Its number (its `index`).
        block: Option<u64>,
        /// The id its last reward names: whoever found it.
        finder: String,
        /// Whether that is this miner's id.
        ours: bool,
        /// How it paid, as its rewards show: `"solo"` (one coin to the finder) or `"pplns"`
        /// (units split over the pool's shares).
        payout: &'static str,
        /// What it paid this id (coins under solo, units under PPLNS).
        paid: u64,
        /// How many rewards it carries (ids paid).
        paid_ids: usize,
        /// Under PPLNS: the units this run has earned so far, this block included.
        earned: u64,
    },
    /// The id's balance on the server, fetched after a win (`GET /balance/{id}`).
    Balance {
        /// The miner id.
        id: String,
        /// Coins won in this run so far.
        coins: u64,
        /// The id's coins on the server, all runs and transfers included.
        server_coins: i64,
    },
    /// The server rejected a proof.
    Rejected {
        /// The index of the block the proof was mined on.
        index: Option<u64>,
        /// The number of the block the proof tried to forge (`index + 1`).
        block: Option<u64>,
        /// The proof.
        proof: u64,
        /// `"stale"` or `"invalid"`.
        reason: &'static str,
        /// The server's message.
        message: String,
    },
    /// A proof found while the server was unreachable was dropped: the chain moved on.
    ProofDropped {
        /// The index of the block the proof was mined on.
        index: Option<u64>,
        /// The number of the block the proof tried to forge (`index + 1`).
        block: Option<u64>,
        /// The proof.
        proof: u64,
    },
    /// With several pools (`ws-miner URL [URL...]`): mining moves from one pool to another.
    PoolSwitch {
        /// The pool left.
        from: String,
        /// The pool mined on next.
        to: String,
        /// Why: what failed on `from`, or that an earlier, preferred pool answers again.
        why: String,
    },
    /// A proof (found on another pool's block) was not sent to the pool mined on now: its block
    /// is not that pool's current block, so the proof does not extend that pool's chain.
    ProofNotSent {
        /// The index of the block the proof was mined on.
        index: Option<u64>,
        /// The number of the block the proof tried to forge (`index + 1`).
        block: Option<u64>,
        /// The proof.
        proof: u64,
        /// The pool mined on now.
        server: String,
        /// The number of the block that pool is forging (its last block's index + 1).
        server_block: Option<u64>,
    },
    /// The pool set (or changed) this connection's share target (`--json` only).
    ShareTarget {
        /// Leading zero bits a share needs.
        bits: u8,
    },
    /// The pool's answer to one share (`--json` only: a fast machine sends many; plain output
    /// has the periodic [`Event::Shares`] line instead).
    ShareResult {
        /// The index of the block the share was mined on.
        index: Option<u64>,
        /// The proof.
        proof: u64,
        /// Whether the pool counted it.
        accepted: bool,
        /// Why not: `"stale"`, `"invalid"`, `"duplicate"`, or `"error"` (an `error` frame
        /// answered it, e.g. a rate limit); `null` when counted.
        reason: Option<&'static str>,
        /// The target it was judged at (leading zero bits).
        bits: u8,
        /// The pool's words.
        message: String,
    },
    /// Every [`crate::limits::SHARES_REPORT_EVERY`] while shares are mined, when something
    /// changed: the share counts so far, and the pool's view of this miner's hashrate beside
    /// the miner's own.
    Shares {
        /// Shares the pool counted in this run.
        accepted: u64,
        /// Shares refused as stale (their block was already won).
        stale: u64,
        /// Shares refused as invalid (below the target), answered by an `error` frame, or
        /// duplicates.
        invalid: u64,
        /// The current share target (leading zero bits); `None` when none is set.
        bits: Option<u8>,
        /// The pool's estimate of this miner's hashrate (hashes/s): its `GET /workers` figure
        /// for this id when it answers, else Σ 2^bits of the accepted shares over the time
        /// since the first share target.
        pool_hashrate: f64,
        /// Where `pool_hashrate` comes from: `"workers"` or `"shares"`.
        pool_source: &'static str,
        /// The miner's own hashrate: attempts over time searched, this run.
        hashrate: f64,
    },
    /// The server answered the share opt-in with an `error` (a server without shares): mining
    /// goes on for blocks only, as before. Said once per pool.
    SharesRefused {
        /// The server's words.
        message: String,
    },
    /// Something the server sent could not be used; it was ignored.
    Ignored {
        /// What and why.
        what: String,
    },
    /// The server sent an `error` message.
    ServerError {
        /// Its text.
        message: String,
    },
    /// The end of the run.
    Summary(Summary),
}

/// The totals printed when the run ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Blocks this miner won (found, under PPLNS).
    pub blocks_won: u64,
    /// Coins earned in this run (one per block won; a solo pool's rule).
    pub coins: u64,
    /// Whether the pool pays PPLNS (its blocks' rewards say so): amounts are then units, and
    /// [`Summary::earned`] is what this run earned.
    pub pplns: bool,
    /// Under PPLNS: the units the blocks forged during this run paid this id (whoever found
    /// them), shown as coins with six decimals.
    pub earned: u64,
    /// The id's coins on the server when the run ended (`GET /balance/{id}`); `None` when the
    /// server does not say (a course server) or did not answer in time.
    pub server_coins: Option<i64>,
    /// Proofs rejected because another miner was first.
    pub rejected_stale: u64,
    /// Proofs rejected as invalid.
    pub rejected_invalid: u64,
    /// Searches dropped because a newer block arrived.
    pub aborted: u64,
    /// Hashes tried in all.
    pub attempts: u64,
    /// Seconds spent searching.
    pub search_secs: f64,
    /// Seconds since the start.
    pub run_secs: f64,
    /// Shares sent to pools that set a share target (0 with `--no-shares` or servers without
    /// shares).
    pub shares_sent: u64,
    /// Shares the pool counted.
    pub shares_accepted: u64,
    /// Shares refused as stale.
    pub shares_stale: u64,
    /// Shares refused as invalid, answered by an `error` frame, or duplicates.
    pub shares_invalid: u64,
    /// Shares found but not sent: their block was gone, the connection was down, or more than
    /// [`crate::limits::MAX_SHARES_QUEUED`] were waiting.
    pub shares_dropped: u64,
}

impl Summary {
    /// Returns the average hashrate over the time spent searching.
    pub fn hashrate(&self) -> f64 {
        if self.search_secs > 0.0 { self.attempts as f64 / self.search_secs } else { 0.0 }
    }
}

/// Formats a hashrate with an SI prefix: `12.3 MH/s`.
pub fn format_hashrate(rate: f64) -> String {
    let (value, unit) = if rate >= 1e9 {
        (rate / 1e9, "GH/s")
    } else if rate >= 1e6 {
        (rate / 1e6, "MH/s")
    } else if rate >= 1e3 {
        (rate / 1e3, "kH/s")
    } else {
        (rate, "H/s")
    };
    format!("{value:.2} {unit}")
}

/// Returns the number of the block forged on top of block `index`: `index + 1`.
pub fn forged(index: Option<u64>) -> Option<u64> {
    index.map(|i| i.saturating_add(1))
}

/// Names a block as the server, the dashboard and `scripts/watch` do: `block #N`.
fn block_name(block: Option<u64>) -> String {
    match block {
        Some(n) => format!("block #{n}"),
        None => "block #?".to_owned(),
    }
}

/// Returns "N this run", with the server's balance when known: coins, or under PPLNS units
/// shown as coins with six decimals.
fn coins_text(coins: u64, server_coins: Option<i64>, scheme: Scheme) -> String {
    let coins = scheme.coins(i128::from(coins));
    match server_coins {
        Some(server) => format!("{coins} this run, {} on the server", scheme.coins(server.into())),
        None => format!("{coins} this run"),
    }
}

/// How plain lines are written: which events, and how coins read.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// `-v`: every event in full (the search's start, proof, abort and timings; the balance
    /// after each win); otherwise about one line per block.
    pub verbose: bool,
    /// How the pool pays, as its blocks have shown it so far.
    pub scheme: Scheme,
}

impl Event {
    /// Returns the plain text of this event as `-v` prints it, coins as a solo pool counts them:
    /// one line, or several for the summary.
    pub fn to_plain(&self) -> String {
        self.to_text(View { verbose: true, scheme: Scheme::Solo }).unwrap_or_default()
    }

    /// Returns the plain text of this event in `view`, or `None` when it is not printed there.
    /// Without `-v` a block takes one line, in order: the block won, or who won it (under
    /// PPLNS: who found it and what it paid this id), or why our proof was refused; the
    /// search's own steps and timings are `-v` only.
    pub fn to_text(&self, view: View) -> Option<String> {
        let pplns = view.scheme == Scheme::Pplns;
        if !view.verbose {
            match self {
                Event::SearchStarted { difficulty, kernel, threads, .. } => {
                    return Some(format!(
                        "mining at difficulty {difficulty} ({kernel} kernel, {threads} thread{})",
                        if *threads == 1 { "" } else { "s" }
                    ));
                }
                Event::SearchFinished { .. }
                | Event::SearchAborted { .. }
                | Event::Balance { .. }
                | Event::NewBlock { ours: true, .. } => return None,
                Event::Accepted { block, proof, coins, .. } => {
                    return Some(if pplns {
                        format!("{}: found by you with proof {proof}", block_name(*block))
                    } else {
                        format!(
                            "{}: won with proof {proof} (coins: {coins} this run)",
                            block_name(*block)
                        )
                    });
                }
                _ => {}
            }
        }
        let plain = match self {
            Event::Connected { url, protocol } => format!("connected to {url} ({protocol})"),
            Event::ConnectFailed { url, error, retry_in_ms } => {
                let delay = if *retry_in_ms < 1000 {
                    format!("{retry_in_ms} ms")
                } else {
                    format!("{:.1}s", *retry_in_ms as f64 / 1000.0)
                };
                format!("cannot connect to {url}: {error}; retrying in {delay}")
            }
            Event::Disconnected { reason } => format!("connection lost: {reason}; reconnecting"),
            Event::FallbackToHttp { reason } => {
                format!("no WebSocket endpoint ({reason}); using the course HTTP protocol")
            }
            Event::Dialect { dialect, reason } => format!("dialect {dialect}: {reason}"),
            Event::SearchStarted { block, difficulty, kernel, threads, .. } => format!(
                "{}: mining at difficulty {difficulty} ({kernel} kernel, {threads} thread{})",
                block_name(*block),
                if *threads == 1 { "" } else { "s" }
            ),
            Event::SearchFinished { block, proof, secs, attempts, hashrate, .. } => format!(
                "{}: found proof {proof} in {secs:.2}s ({attempts} attempts, {})",
                block_name(*block),
                format_hashrate(*hashrate)
            ),
            Event::SearchAborted {
                block,
                by_index,
                secs,
                flag_ms,
                stop_ms,
                attempts,
                stale_attempts,
                ..
            } => format!(
                "{}: search aborted after {secs:.2}s: {} arrived (stop flag set in {flag_ms:.2} ms, \
                 workers stopped {stop_ms:.1} ms later; {stale_attempts} of {attempts} attempts \
                 after it arrived)",
                block_name(*block),
                block_name(*by_index)
            ),
            Event::Accepted { block, proof, message, coins, .. } => format!(
                "won {} with proof {proof}: {message} (coins: {coins} this run)",
                block_name(*block)
            ),
            Event::NewBlock { block, finder, ours, payout, paid, paid_ids, earned } => {
                let who = if *ours { format!("you ({finder})") } else { finder.clone() };
                if *payout == "pplns" {
                    format!(
                        "{}: found by {who}, {paid_ids} id{} paid; you got {} ({} this run)",
                        block_name(*block),
                        if *paid_ids == 1 { "" } else { "s" },
                        Scheme::Pplns.coins(i128::from(*paid)),
                        Scheme::Pplns.coins(i128::from(*earned))
                    )
                } else if *ours {
                    // Reported as the win it is (`Accepted`).
                    return None;
                } else {
                    format!("{}: won by {who}", block_name(*block))
                }
            }
            Event::Balance { id, coins, server_coins } if pplns => {
                let _ = coins;
                format!(
                    "coins: {} on the server (id {id})",
                    view.scheme.coins((*server_coins).into())
                )
            }
            Event::Balance { id, coins, server_coins } => {
                format!(
                    "coins: {} (id {id})",
                    coins_text(*coins, Some(*server_coins), Scheme::Solo)
                )
            }
            Event::Rejected { block, proof, reason, message, .. } => {
                format!("{}: proof {proof} rejected ({reason}): {message}", block_name(*block))
            }
            Event::ProofDropped { block, proof, .. } => format!(
                "{}: proof {proof} dropped: the chain moved on while the server was away",
                block_name(*block)
            ),
            Event::PoolSwitch { from, to, why } => {
                format!("switching pools: from {from} to {to}: {why}")
            }
            Event::ProofNotSent { block, proof, server, server_block, .. } => format!(
                "{}: proof {proof} not sent to {server}: its block is not that pool's current \
                 block ({server} is forging {})",
                block_name(*block),
                block_name(*server_block)
            ),
            Event::ShareTarget { bits } => format!("share target: {bits} bits"),
            Event::ShareResult { proof, accepted, reason, bits, message, .. } => {
                let verdict = if *accepted { "accepted" } else { reason.unwrap_or("refused") };
                format!("share {proof} at {bits} bits {verdict}: {message}")
            }
            Event::Shares {
                accepted,
                stale,
                invalid,
                bits,
                pool_hashrate,
                pool_source,
                hashrate,
            } => {
                let at = bits.map_or(String::new(), |b| format!(" at {b} bits"));
                let by = if *pool_source == "workers" { "by the pool" } else { "by shares" };
                format!(
                    "shares: {accepted} accepted ({stale} stale, {invalid} invalid){at}; ~{} {by}, \
                     {} measured",
                    format_hashrate(*pool_hashrate),
                    format_hashrate(*hashrate)
                )
            }
            Event::SharesRefused { message } => {
                format!("the server takes no shares ({message}); mining for blocks only")
            }
            Event::Ignored { what } => format!("ignored from the server: {what}"),
            Event::ServerError { message } => format!("server error: {message}"),
            Event::Summary(s) => {
                let (won, run, scheme) = if s.pplns || pplns {
                    ("found", s.earned, Scheme::Pplns)
                } else {
                    ("won", s.coins, Scheme::Solo)
                };
                let mut text = format!(
                    "summary: {} blocks {won}, coins: {}, proofs rejected: {} stale, {} invalid, \
                     {} searches aborted by a new block\n\
                     summary: {} attempts in {:.2}s of search ({} average), run time {:.2}s",
                    s.blocks_won,
                    coins_text(run, s.server_coins, scheme),
                    s.rejected_stale,
                    s.rejected_invalid,
                    s.aborted,
                    s.attempts,
                    s.search_secs,
                    format_hashrate(s.hashrate()),
                    s.run_secs
                );
                if s.shares_sent > 0 || s.shares_dropped > 0 {
                    text.push_str(&format!(
                        "\nsummary: shares: {} sent, {} accepted, {} stale, {} invalid, \
                         {} not sent",
                        s.shares_sent,
                        s.shares_accepted,
                        s.shares_stale,
                        s.shares_invalid,
                        s.shares_dropped
                    ));
                }
                text
            }
        };
        Some(plain)
    }

    /// Returns true for events printed only with `--json` (one per share, or per target
    /// change: too many lines for a terminal on a fast machine).
    pub fn is_json_only(&self) -> bool {
        matches!(self, Event::ShareResult { .. } | Event::ShareTarget { .. })
    }

    /// Returns this event with every string field passed through [`sanitize`]: what a server
    /// sends reaches neither the terminal nor a `--json` consumer raw.
    pub fn sanitized(self) -> Self {
        let s = |text: String| sanitize(&text);
        match self {
            Event::Connected { url, protocol } => Event::Connected { url: s(url), protocol },
            Event::ConnectFailed { url, error, retry_in_ms } => {
                Event::ConnectFailed { url: s(url), error: s(error), retry_in_ms }
            }
            Event::Disconnected { reason } => Event::Disconnected { reason: s(reason) },
            Event::FallbackToHttp { reason } => Event::FallbackToHttp { reason: s(reason) },
            Event::Dialect { dialect, reason } => Event::Dialect { dialect, reason: s(reason) },
            Event::Accepted { index, block, proof, message, coins } => {
                Event::Accepted { index, block, proof, message: s(message), coins }
            }
            Event::Balance { id, coins, server_coins } => {
                Event::Balance { id: s(id), coins, server_coins }
            }
            Event::Rejected { index, block, proof, reason, message } => {
                Event::Rejected { index, block, proof, reason, message: s(message) }
            }
            Event::PoolSwitch { from, to, why } => {
                Event::PoolSwitch { from: s(from), to: s(to), why: s(why) }
            }
            Event::ProofNotSent { index, block, proof, server, server_block } => {
                Event::ProofNotSent { index, block, proof, server: s(server), server_block }
            }
            Event::ShareResult { index, proof, accepted, reason, bits, message } => {
                Event::ShareResult { index, proof, accepted, reason, bits, message: s(message) }
            }
            Event::SharesRefused { message } => Event::SharesRefused { message: s(message) },
            Event::Ignored { what } => Event::Ignored { what: s(what) },
            Event::ServerError { message } => Event::ServerError { message: s(message) },
            Event::NewBlock { block, finder, ours, payout, paid, paid_ids, earned } => {
                Event::NewBlock { block, finder: s(finder), ours, payout, paid, paid_ids, earned }
            }
            other @ (Event::SearchStarted { .. }
            | Event::SearchFinished { .. }
            | Event::SearchAborted { .. }
            | Event::ProofDropped { .. }
            | Event::ShareTarget { .. }
            | Event::Shares { .. }
            | Event::Summary(_)) => other,
        }
    }

    /// Returns the `--json` line of this event: [`Event::to_json`] plus `"ts"`, the wall-clock
    /// time it was printed (Unix seconds, a float), so scripts can line events up across miners
    /// and with the server.
    pub fn to_json_line(&self, now: SystemTime) -> String {
        let ts = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut fields)) => {
                fields.insert("ts".to_owned(), serde_json::json!(ts));
                serde_json::Value::Object(fields).to_string()
            }
            _ => self.to_json(),
        }
    }

    /// Returns the JSON line of this event (`--json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"event\":\"bug\",\"error\":{:?}}}", e.to_string()))
    }
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain lines, about one per block (see [`Event::to_text`]).
    Plain,
    /// `-v`: one plain line per event, timings included.
    Verbose,
    /// One JSON object per line.
    Json,
    /// Only the summary.
    Quiet,
}

enum Sink {
    Writer(Box<dyn Write + Send>),
    Channel(mpsc::UnboundedSender<Event>),
}

struct Inner {
    format: Format,
    sink: Sink,
    bar: Option<ProgressBar>,
    /// How the pool pays, as the blocks reported so far show it.
    scheme: Scheme,
    /// The search settings line last printed (plain, not `-v`): printed again only when they
    /// change.
    setup: Option<String>,
}

/// Where the session's events go. Cheap to clone; all clones share one sink.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Mutex<Inner>>,
}

impl Reporter {
    /// Returns a reporter that prints to stdout, with a live status line when stdout is a
    /// terminal and the format is plain.
    pub fn stdout(format: Format) -> Self {
        let plain = matches!(format, Format::Plain | Format::Verbose);
        let bar = (plain && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self::new(format, Sink::Writer(Box::new(std::io::stdout())), bar)
    }

    /// Returns a reporter that writes lines to `out` (no status line).
    pub fn writer(format: Format, out: Box<dyn Write + Send>) -> Self {
        Self::new(format, Sink::Writer(out), None)
    }

    /// Returns a reporter that sends every event to a channel, for tests.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self::new(Format::Plain, Sink::Channel(tx), None), rx)
    }

    fn new(format: Format, sink: Sink, bar: Option<ProgressBar>) -> Self {
        let inner = Inner { format, sink, bar, scheme: Scheme::Solo, setup: None };
        Reporter { inner: Arc::new(Mutex::new(inner)) }
    }

    /// Reports one event, with every string in it sanitised (see [`crate::untrusted`]).
    pub fn emit(&self, event: Event) {
        let event = event.sanitized();
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            // A panic while printing cannot leave the sink in a state worth refusing.
            Err(poisoned) => poisoned.into_inner(),
        };
        let Inner { sink, bar, format, scheme, setup } = &mut *inner;
        if let Event::NewBlock { payout: "pplns", .. } = &event {
            *scheme = Scheme::Pplns;
        }
        match sink {
            Sink::Channel(tx) => {
                // The test that owns the receiver may have finished; nothing to do then.
                let _ = tx.send(event);
            }
            Sink::Writer(out) => {
                let view = |verbose| View { verbose, scheme: *scheme };
                let text = match (*format, &event) {
                    (Format::Plain | Format::Verbose, e) if e.is_json_only() => return,
                    (Format::Quiet, Event::Summary(_)) | (Format::Verbose, _) => {
                        match event.to_text(view(true)) {
                            Some(text) => text,
                            None => return,
                        }
                    }
                    (Format::Plain, _) => match event.to_text(view(false)) {
                        // The search's settings: once, and again when they change.
                        Some(text) if matches!(event, Event::SearchStarted { .. }) => {
                            if setup.as_ref() == Some(&text) {
                                return;
                            }
                            *setup = Some(text.clone());
                            text
                        }
                        Some(text) => text,
                        None => return,
                    },
                    (Format::Json, _) => event.to_json_line(SystemTime::now()),
                    (Format::Quiet, _) => return,
                };
                let mut write = || {
                    // A closed stdout (e.g. `| head`) must not stop the miner.
                    let _ = writeln!(out, "{text}");
                    let _ = out.flush();
                };
                match bar {
                    Some(bar) => bar.suspend(write),
                    None => write(),
                }
            }
        }
    }

    /// Updates the live status line, if there is one.
    pub fn status(&self, message: String) {
        if let Ok(inner) = self.inner.lock()
            && let Some(bar) = &inner.bar
        {
            bar.set_message(message);
        }
    }

    /// Returns true when a live status line is shown.
    pub fn has_status_line(&self) -> bool {
        self.inner.lock().map(|inner| inner.bar.is_some()).unwrap_or(false)
    }

    /// Removes the live status line.
    pub fn finish(&self) {
        if let Ok(inner) = self.inner.lock()
            && let Some(bar) = &inner.bar
        {
            bar.finish_and_clear();
        }
    }
}
