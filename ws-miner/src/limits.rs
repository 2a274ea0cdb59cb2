//! Every bound on what the miner takes from a server, and on how long it waits, in one place
//! (the README's "Limits" section lists them).

use std::time::Duration;

/// The largest WebSocket message (and frame) the miner reads: 4 MiB.
///
/// The pool-server bounds the blocks it forges so that a `block` frame is at most 1 MiB (its
/// documented maximum block frame); this limit is four times that, so every block a
/// pool-server can forge is read, while a server (or a man in the middle) cannot make the miner
/// buffer more than this. A bigger message ends the connection with one line saying so; the
/// miner then reconnects with back-off as after any other error.
pub const MAX_WS_MESSAGE_BYTES: usize = 4 << 20;

/// The most bytes the miner queues for a pool over a WebSocket (proofs, shares, pings and pongs
/// to the pool's pings): 64 KiB, far more than the few frames in flight it ever needs.
///
/// A pool that pings and never reads once made the miner queue a pong per ping without end
/// (13 → 106 MiB in 55 s). Past this bound further pongs are folded into one and a frame of the
/// miner's own cannot be queued, which ends the connection; see also [`WRITE_STALL`].
pub const MAX_WS_QUEUED_BYTES: usize = 64 * 1024;

/// How long a pool may take none of what the miner writes over a WebSocket before the miner
/// drops the connection (and reconnects with back-off): the same 10 s a single send may take.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// The largest HTTP body the miner reads in the course HTTP mode (`GET /last_block`,
/// `POST /mine`, `GET /chain`, `GET /balance/{id}`): 4 MiB.
///
/// The body is read in chunks and refused as soon as it (or its `Content-Length`) passes the
/// bound, so a server that sends hundreds of megabytes costs the miner at most this much memory.
/// A refused answer is one line, then the usual back-off. A course server's `/chain` longer
/// than this cannot be read; the miner then judges its proofs by the server's message alone.
pub const MAX_HTTP_BODY_BYTES: usize = 4 << 20;

/// The most characters of one server-supplied string (an `error` frame, a result's message, an
/// HTTP body quoted in an error) that are printed; the rest is cut and counted.
pub const MAX_SERVER_TEXT_CHARS: usize = 500;

/// How long Ctrl-C waits for the server's answers to proofs already sent before the summary
/// is printed, so that a win in flight is counted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long one `GET /balance/{id}` may take (after a win, and once for the summary); without an
/// answer in time the server's balance is left out of that line.
pub const BALANCE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the `shares: …` line (and the `shares` JSON event) is printed while shares are
/// mined, and how often, at most, the pool is asked for its estimate of this miner
/// (`GET /workers`).
pub const SHARES_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The most shares found and not yet sent that the miner keeps (the search threads hand shares
/// to the network side through a queue of this many); past it, further shares are dropped
/// (counted in the summary as "not sent"), so a pool's very low target cannot make the miner
/// buffer without bound. A pool-server aims at one share every half second by default.
pub const MAX_SHARES_QUEUED: usize = 1024;

/// The most shares sent on a connection and not yet answered; the next waits for an answer.
///
/// A pool-server raises a connection's target after 8 accepted shares, and judges the shares
/// already on their way at the new target, so they count as invalid; it cuts a connection off
/// once more than half of its shares were invalid. With at most this many in flight, a raise
/// makes at most 3 invalid shares per 8 accepted. (Shares still queued are checked against the
/// new target before they are sent.)
pub const MAX_SHARES_IN_FLIGHT: usize = 4;

/// The largest `GET /workers` answer read (a pool-server lists at most 100 workers, a few KiB).
pub const MAX_WORKERS_BODY_BYTES: usize = 256 * 1024;
