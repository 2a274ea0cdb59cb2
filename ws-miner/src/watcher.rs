//! `ws-miner watch [URL]`: prints each block a pool-server pushes on its WebSocket, one line
//! per block (`#42  won by alice  proof 1234567  +3.1s`), or each frame as one JSON line with
//! `--json`; reconnects with back-off when the server goes away. It never mines and sends
//! nothing but pings.
//!
//! Every frame is untrusted: frames are read under [`MAX_WS_MESSAGE_BYTES`], what is not a
//! usable block is skipped, and every piece of server text printed is made safe
//! ([`crate::untrusted`]).

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::backoff::{Backoff, BackoffPolicy};
#[cfg(doc)]
use crate::limits::MAX_WS_MESSAGE_BYTES;
use crate::untrusted::{is_unsafe, sanitize};
use crate::websocket::{CONNECT_TIMEOUT, KEEPALIVE, READ_TIMEOUT, SEND_TIMEOUT, connect};

/// What to watch, and how.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The pool-server's WebSocket endpoint (`ws://…/ws` or `wss://…/ws`).
    pub url: Url,
    /// Print each frame as one JSON line instead of one readable line per block.
    pub json: bool,
    /// TLS settings for `wss://` (the system's roots plus `--ca`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Reconnect delays.
    pub backoff: BackoffPolicy,
}

/// The block printed last: its index and timestamp, to skip a repeat after a reconnect and to
/// print the time between consecutive blocks.
type Last = Option<(Value, Option<f64>)>;

/// Watches until `shutdown` resolves: block lines (or JSON frames) to `out`; connections,
/// losses and retries to `err`, one line each.
///
/// # Errors
/// Writing to `out` failed (e.g. the reader of a pipe is gone): nothing is worth watching then.
pub async fn watch(
    options: &WatchOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(options.backoff);
    let mut last: Last = None;
    loop {
        let reason = tokio::select! {
            reason = session(options, out, err, &mut backoff, &mut last) => reason?,
            () = &mut shutdown => return Ok(()),
        };
        let delay = backoff.next_delay();
        // A closed stderr must not stop the watcher.
        let _ = writeln!(err, "watch: {reason}; reconnecting in {:.1}s", delay.as_secs_f64());
        tokio::select! {
            () = sleep(delay) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

/// One connection: returns why it ended.
async fn session(
    options: &WatchOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backoff: &mut Backoff,
    last: &mut Last,
) -> io::Result<String> {
    let url = &options.url;
    let mut ws = match timeout(CONNECT_TIMEOUT, connect(url, options.tls.as_ref())).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return Ok(e.describe(url)),
        Err(_) => return Ok(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    };
    backoff.reset();
    let mut greeting = true;
    let mut last_read = Instant::now();
    let mut keepalive = interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = keepalive.tick() => {
                if last_read.elapsed() > READ_TIMEOUT {
                    return Ok(format!("no data from the server for {}s", READ_TIMEOUT.as_secs()));
                }
                let ping = timeout(SEND_TIMEOUT, ws.send(Message::Ping(Vec::new().into()))).await;
                match ping {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => return Ok(crate::websocket::describe_ws_error(&e)),
                    Err(_) => return Ok(format!("sending took more than {}s", SEND_TIMEOUT.as_secs())),
                }
            }
        };
        last_read = Instant::now();
        if let Some(reason) = crate::websocket::stalled(&ws) {
            return Ok(reason);
        }
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(Some(f)))) if !f.reason.is_empty() => {
                return Ok(format!(
                    "the server closed the connection ({}: {})",
                    f.code,
                    sanitize(&f.reason)
                ));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Ok("the server closed the connection".to_owned());
            }
            // Binary frames, pings and pongs say nothing to a watcher.
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ok(crate::websocket::describe_ws_error(&e)),
        };
        let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        if options.json {
            writeln!(out, "{}", json_line(&message))?;
            out.flush()?;
        }
        let block = match (message.get("type").and_then(Value::as_str), message.get("block")) {
            (Some("block"), Some(block)) if block.is_object() => block,
            _ => continue,
        };
        if greeting {
            let difficulty = message.get("difficulty").map_or("?".to_owned(), text_of);
            let _ = writeln!(err, "connected to {url} (difficulty {difficulty})");
        }
        let index = block.get("index").cloned().unwrap_or(Value::Null);
        // After a reconnect the greeting may repeat the block already printed.
        if last.as_ref().is_some_and(|(printed, _)| *printed == index) {
            greeting = false;
            continue;
        }
        let follows = match (last.as_ref().and_then(|(i, _)| i.as_u64()), index.as_u64()) {
            (Some(before), Some(now)) => before.checked_add(1) == Some(now),
            _ => false,
        };
        let previous_ts = if follows { last.as_ref().and_then(|(_, ts)| *ts) } else { None };
        if !options.json {
            writeln!(out, "{}", describe(block, previous_ts, greeting, SystemTime::now()))?;
            out.flush()?;
        }
        *last = Some((index, timestamp(block)));
        greeting = false;
    }
}

/// Returns `value` as one line of JSON with every character a terminal could act on written as
/// a JSON escape (the same value for a JSON reader).
fn json_line(value: &Value) -> String {
    let compact = value.to_string();
    let mut line = String::with_capacity(compact.len());
    for c in compact.chars() {
        if is_unsafe(c) {
            // Outside strings compact JSON has no such character; inside, this is its escape.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(line, "\\u{unit:04x}");
            }
        } else {
            line.push(c);
        }
    }
    line
}

/// Returns a JSON value as text for a line: a string as is, anything else as JSON; made safe
/// and bounded.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => sanitize(s),
        other => sanitize(&other.to_string()),
    }
}

fn timestamp(block: &Value) -> Option<f64> {
    block.get("timestamp").filter(|t| t.is_number()).and_then(Value::as_f64)
}

/// The id rewarded in `block`: the recipient of its last transaction from sender "0".
fn winner(block: &Value) -> Option<String> {
    let txs = block.get("transactions")?.as_array()?;
    txs.iter().rev().find_map(|tx| {
        let from_zero = match tx.get("sender")? {
            Value::String(s) => s == "0",
            Value::Number(n) => n.as_u64() == Some(0),
            _ => false,
        };
        from_zero.then(|| tx.get("recipient").map_or("?".to_owned(), text_of))
    })
}

/// One line for `block`: `#42  won by alice  proof 1234567` (a PPLNS pool's block, whose
/// rewards add up to a million units: `#42  found by alice, 12 ids paid  proof 1234567`), then
/// the time since the block before (`previous_ts`, when it is the one printed last), or for the
/// first block of a connection how long ago it was forged.
fn describe(block: &Value, previous_ts: Option<f64>, greeting: bool, now: SystemTime) -> String {
    let index = block.get("index");
    let pplns = protocol::Rewards::of(block).filter(|r| r.scheme() == protocol::Scheme::Pplns);
    let who = match (winner(block), pplns) {
        (Some(who), Some(rewards)) => {
            let ids = rewards.paid.len();
            format!("found by {who}, {ids} id{} paid", if ids == 1 { "" } else { "s" })
        }
        (Some(who), None) => format!("won by {who}"),
        (None, _) if index.and_then(Value::as_u64) == Some(1) => "genesis".to_owned(),
        (None, _) => "no reward".to_owned(),
    };
    let index = index.map_or("?".to_owned(), text_of);
    let proof = block.get("proof").map_or("?".to_owned(), text_of);
    let mut line = format!("#{index}  {who}  proof {proof}");
    if let Some(ts) = timestamp(block) {
        if let Some(before) = previous_ts {
            let gap = ts - before;
            // Fast races forge blocks milliseconds apart: keep two digits there.
            if gap < 1.0 {
                let _ = write!(line, "  +{gap:.2}s");
            } else {
                let _ = write!(line, "  +{gap:.1}s");
            }
        } else if greeting {
            let now = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            let _ = write!(line, "  (current block, forged {:.1}s ago)", (now - ts).max(0.0));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[track_caller]
    fn check(block: Value, previous_ts: Option<f64>, greeting: bool, expected: &str) {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(describe(&block, previous_ts, greeting, now), expected);
    }

    #[test]
    fn lines() {
        let genesis = json!({"index": 1, "proof": 100, "timestamp": 990.0, "transactions": []});
        check(
            genesis.clone(),
            None,
            true,
            "#1  genesis  proof 100  (current block, forged 10.0s ago)",
        );
        check(genesis, None, false, "#1  genesis  proof 100");
        let won = json!({"index": 2, "proof": 7, "timestamp": 993.3, "transactions": [
            {"sender": "0", "recipient": "bob", "amount": 1},
            {"sender": 0, "recipient": "al\u{1b}[2Jice", "amount": 1}]});
        check(won.clone(), Some(990.0), false, "#2  won by al\\u{1b}[2Jice  proof 7  +3.3s");
        check(won, Some(993.0), false, "#2  won by al\\u{1b}[2Jice  proof 7  +0.30s");
        check(json!({"index": "x", "transactions": "no"}), None, true, "#x  no reward  proof ?");
        let pplns = json!({"index": 3, "proof": 8, "timestamp": 994.0, "transactions": [
            {"sender": "0", "recipient": "bob", "amount": 999_999},
            {"sender": "0", "recipient": "al", "amount": 1}]});
        check(pplns, Some(993.3), false, "#3  found by al, 2 ids paid  proof 8  +0.70s");
    }

    #[test]
    fn json_lines_escape_what_a_terminal_acts_on() {
        let frame = json!({"type": "block", "block": {"id": "a\u{1b}b\u{9b}c\u{202e}d\ne"}});
        let line = json_line(&frame);
        assert_eq!(line, r#"{"block":{"id":"a\u001bb\u009bc\u202ed\ne"},"type":"block"}"#);
        assert_eq!(serde_json::from_str::<Value>(&line).ok(), Some(frame));
    }
}
