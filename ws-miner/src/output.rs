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
        /// The block's index.
        index: Option<u64>,
        /// Leading hex zeroes.
        difficulty: u8,
        /// The search kernel.
        kernel: &'static str,
        /// Worker threads.
        threads: usize,
    },
    /// A search found a proof.
    SearchFinished {
        /// The block's index.
        index: Option<u64>,
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
        /// The abandoned block's index.
        index: Option<u64>,
        /// The new block's index.
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
    /// The server accepted a proof.
    Accepted {
        /// The block the proof was for.
        index: Option<u64>,
        /// The proof.
        proof: u64,
        /// The server's message.
        message: String,
        /// Coins won in this run so far.
        coins: u64,
    },
    /// The server rejected a proof.
    Rejected {
        /// The block the proof was for.
        index: Option<u64>,
        /// The proof.
        proof: u64,
        /// `"stale"` or `"invalid"`.
        reason: &'static str,
        /// The server's message.
        message: String,
    },
    /// A proof found while the server was unreachable was dropped: the chain moved on.
    ProofDropped {
        /// The block the proof was for.
        index: Option<u64>,
        /// The proof.
        proof: u64,
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
    /// Blocks this miner won.
    pub blocks_won: u64,
    /// Coins earned (one per block won).
    pub coins: u64,
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

fn block_name(index: Option<u64>) -> String {
    match index {
        Some(i) => format!("block {i}"),
        None => "block ?".to_owned(),
    }
}

impl Event {
    /// Returns the plain text of this event: one line, or several for the summary.
    pub fn to_plain(&self) -> String {
        match self {
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
            Event::SearchStarted { index, difficulty, kernel, threads } => format!(
                "{}: mining at difficulty {difficulty} ({kernel} kernel, {threads} thread{})",
                block_name(*index),
                if *threads == 1 { "" } else { "s" }
            ),
            Event::SearchFinished { index, proof, secs, attempts, hashrate } => format!(
                "{}: found proof {proof} in {secs:.2}s ({attempts} attempts, {})",
                block_name(*index),
                format_hashrate(*hashrate)
            ),
            Event::SearchAborted {
                index,
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
                block_name(*index),
                block_name(*by_index)
            ),
            Event::Accepted { index, proof, message, coins } => format!(
                "{}: proof {proof} accepted: {message} (coins: {coins})",
                block_name(*index)
            ),
            Event::Rejected { index, proof, reason, message } => {
                format!("{}: proof {proof} rejected ({reason}): {message}", block_name(*index))
            }
            Event::ProofDropped { index, proof } => format!(
                "{}: proof {proof} dropped: the chain moved on while the server was away",
                block_name(*index)
            ),
            Event::Ignored { what } => format!("ignored from the server: {what}"),
            Event::ServerError { message } => format!("server error: {message}"),
            Event::Summary(s) => format!(
                "summary: {} blocks won, {} coins, proofs rejected: {} stale, {} invalid, \
                 {} searches aborted by a new block\n\
                 summary: {} attempts in {:.2}s of search ({} average), run time {:.2}s",
                s.blocks_won,
                s.coins,
                s.rejected_stale,
                s.rejected_invalid,
                s.aborted,
                s.attempts,
                s.search_secs,
                format_hashrate(s.hashrate()),
                s.run_secs
            ),
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
    /// One plain line per event.
    Plain,
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
        let bar = (format == Format::Plain && std::io::stdout().is_terminal()).then(|| {
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
        Reporter { inner: Arc::new(Mutex::new(Inner { format, sink, bar })) }
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            // A panic while printing cannot leave the sink in a state worth refusing.
            Err(poisoned) => poisoned.into_inner(),
        };
        let text = match (inner.format, &event) {
            (Format::Quiet, Event::Summary(_)) | (Format::Plain, _) => event.to_plain(),
            (Format::Json, _) => event.to_json_line(SystemTime::now()),
            (Format::Quiet, _) => return,
        };
        let Inner { sink, bar, .. } = &mut *inner;
        match sink {
            Sink::Channel(tx) => {
                // The test that owns the receiver may have finished; nothing to do then.
                let _ = tx.send(event);
            }
            Sink::Writer(out) => {
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
