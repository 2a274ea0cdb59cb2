//! The mining rules both transports follow: which block to mine, when to abort, what becomes
//! of a proof whose block is gone, how a verdict is counted and reported, when `--once` ends
//! the run, and what Ctrl-C waits for. [`drive`] runs them over any [`Transport`]: the
//! WebSocket session (`session`) and the course HTTP protocol (`http`) only move messages
//! (connect, read, send, reconnect), and neither imports the other.

use serde_json::Value;
use std::collections::VecDeque;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, interval, interval_at, sleep_until};

use crate::balance::BalanceProbe;
use crate::cli::Config;
use crate::error::Outcome;
use crate::job::{Work, block_proof};
use crate::limits::SHUTDOWN_GRACE;
use crate::miner::{Arrival, Found, Miner, ShareQueue};
use crate::output::{Event, Reporter, forged};
use crate::workers::WorkersProbe;

/// How often the live status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// What both transports share: the configuration, the search, the totals and the stop signal.
pub(crate) struct Ctx {
    pub config: Config,
    pub miner: Miner,
    /// The shares the miner's searches find.
    pub shares: ShareQueue,
    pub reporter: Reporter,
    pub shutdown: watch::Receiver<bool>,
    /// `--once`: the block this run is about, once a search has started on it.
    pub once_block: Option<Arc<Work>>,
    /// Asks the server for the id's balance after each win; `None` with `--no-balance`.
    pub balance: Option<BalanceProbe>,
    /// True once a connection to the server worked (the summary then asks for the balance).
    pub reached: bool,
    /// Ctrl-C came while proofs were in flight: only their answers are awaited now.
    pub draining: bool,
    /// With several pools (`ws-miner URL [URL...]`): this pool's part in the failover; `None`
    /// with one server, which the transport retries on its own as long as it fails.
    pub failover: Option<Failover>,
    /// Asks the pool for its hashrate figure for the id (`GET /workers`) for the `shares`
    /// line; `None` with `--no-balance`.
    pub workers: Option<WorkersProbe>,
    /// The share counts the last `shares` line showed.
    pub shares_shown: (u64, u64, u64, u64),
    /// The index of the newest block the server sent (`None` before the first): each newer one
    /// is reported once ([`Event::NewBlock`]).
    pub seen_block: Option<u64>,
}

/// A transport's part in the failover across several pools (see `pools`): it leaves its pool
/// when it fails (instead of retrying it) or when an earlier, preferred pool answers again.
pub(crate) struct Failover {
    /// The pool mined on (for lines).
    pub url: String,
    /// Resolves when a pool earlier in the list answers again; `None` on the first pool.
    pub preferred: Option<oneshot::Receiver<()>>,
    /// Proofs found on another pool's block and not judged yet: sent here only if that block is
    /// this pool's current block, else dropped with a line.
    pub carried: Vec<Found>,
    /// The last block this pool served (`None` before its first): set when this pool sent
    /// work, which means it works and its back-off starts over.
    pub block: Option<Arc<Work>>,
    /// Why this pool failed, once it did.
    pub failed: Option<String>,
}

/// Why a transport left its pool (runs with several pools only).
pub(crate) enum Leave {
    /// The pool failed: why.
    Failed(String),
    /// An earlier, preferred pool answers again.
    Preferred,
}

impl Ctx {
    /// Starts a search on `work`, unless `--once` already has its block.
    pub(crate) fn start(&mut self, work: Arc<Work>) {
        if self.draining {
            return;
        }
        if self.config.once {
            if self.once_block.is_some() {
                return;
            }
            self.once_block = Some(work.clone());
        }
        self.miner.start(work);
    }

    /// Counts the server's verdict on `found` and reports it: a win with the running coin total
    /// (and then the server's balance), or a rejection with its reason. `won` is the number of
    /// the block the server says it forged, when it says. Both transports judge alike from here.
    pub(crate) fn judged(
        &mut self,
        found: &Found,
        verdict: Verdict,
        message: String,
        won: Option<u64>,
    ) {
        let (index, proof) = (found.work.index, found.proof);
        match verdict {
            Verdict::Accepted => {
                let coins = self.miner.won();
                let block = won.or_else(|| forged(index));
                self.reporter.emit(Event::Accepted { index, block, proof, message, coins });
                if let Some(balance) = self.balance.as_mut() {
                    balance.after_win(coins, &self.reporter);
                }
            }
            Verdict::Stale | Verdict::Invalid => {
                let stale = verdict == Verdict::Stale;
                self.miner.rejected(stale);
                let reason = if stale { "stale" } else { "invalid" };
                let block = forged(index);
                self.reporter.emit(Event::Rejected { index, block, proof, reason, message });
            }
        }
    }

    /// Makes `work` (just read from the server, at `arrival`) the block to mine: nothing if it
    /// is the one being searched, else the running search is aborted and a new one started.
    /// Returns the outcome that ends a `--once` run.
    pub(crate) async fn follow(&mut self, work: Arc<Work>, arrival: Arrival) -> Option<Outcome> {
        match self.miner.current() {
            Some(current) if **current == *work => return None,
            Some(_) => {
                self.miner.abort(work.index, arrival).await;
                self.new_block(&work);
                if let Some(outcome) = self.once_after_abort() {
                    return Some(outcome);
                }
            }
            None => self.new_block(&work),
        }
        self.start(work);
        None
    }

    /// Reports `work`'s block once, if it is newer than every block seen before and was forged
    /// during this run (the block current when the miner joined was not): who found it and,
    /// under PPLNS, what it paid this id, which the run's earnings add up.
    fn new_block(&mut self, work: &Work) {
        let Some(index) = work.index else { return };
        let first = match self.seen_block {
            Some(seen) if index <= seen => return,
            seen => seen.is_none(),
        };
        self.seen_block = Some(index);
        let Some(rewards) = work.rewards.as_ref().filter(|_| !first) else { return };
        let pplns = rewards.scheme() == protocol::Scheme::Pplns;
        let paid = rewards.to(&self.config.id);
        let earned = if pplns { self.miner.earned(paid) } else { 0 };
        self.reporter.emit(Event::NewBlock {
            block: Some(index),
            finder: rewards.finder().to_owned(),
            ours: rewards.finder() == self.config.id,
            payout: if pplns { "pplns" } else { "solo" },
            paid,
            paid_ids: rewards.paid.len(),
            earned,
        });
    }

    /// Settles a proof found earlier whose block is no longer current, now that `block` is the
    /// server's last block: a win if `block` carries it, else dropped. Returns the outcome that
    /// ends a `--once` run.
    pub(crate) fn settle(&mut self, found: &Found, block: &Value) -> Option<Outcome> {
        if carries_our_proof(block, found.proof, &self.config.id) {
            let won = block.get("index").and_then(Value::as_u64);
            self.judged(found, Verdict::Accepted, "the next block carries our proof".into(), won);
            return self.once_after_result(true);
        }
        self.reporter.emit(Event::ProofDropped {
            index: found.work.index,
            block: forged(found.work.index),
            proof: found.proof,
        });
        self.once_after_result(false)
    }

    /// With several pools: notes that this pool failed (`reason`) and returns `None`; the
    /// transport then leaves it (see [`Ctx::left`]). With one server: returns `reason`, which
    /// the transport reports before it retries, as always.
    pub(crate) fn fail(&mut self, reason: String) -> Option<String> {
        match self.failover.as_mut() {
            Some(failover) => {
                failover.failed.get_or_insert(reason);
                None
            }
            None => Some(reason),
        }
    }

    /// Returns why this pool failed, if it did (runs with several pools only).
    pub(crate) fn left(&mut self) -> Option<String> {
        self.failover.as_mut().and_then(|f| f.failed.take())
    }

    /// Hands proofs not judged on this pool to the next one (runs with several pools only).
    pub(crate) fn carry(&mut self, proofs: impl IntoIterator<Item = Found>) {
        if let Some(failover) = self.failover.as_mut() {
            failover.carried.extend(proofs);
        }
    }

    /// Called with each block this pool serves: returns the proofs carried from another pool
    /// that solve `work`, this pool's current block, to be sent here; drops the others with a
    /// line each (their block is not this pool's, so they do not extend its chain).
    pub(crate) fn carried_for(&mut self, work: &Arc<Work>) -> Vec<Found> {
        let Some(failover) = self.failover.as_mut() else { return Vec::new() };
        failover.block = Some(work.clone());
        let (send, drop): (Vec<Found>, Vec<Found>) =
            std::mem::take(&mut failover.carried).into_iter().partition(|f| *f.work == **work);
        for found in drop {
            self.reporter.emit(Event::ProofNotSent {
                index: found.work.index,
                block: forged(found.work.index),
                proof: found.proof,
                server: failover.url.clone(),
                server_block: forged(work.index),
            });
        }
        send
    }

    /// Called with each proof the search finds: returns it when it may be sent to this pool.
    /// With several pools, a search still running on the previous pool's block may find a proof
    /// after the switch: it is kept until this pool's first block decides (see
    /// [`Ctx::carried_for`]), or dropped with a line when this pool's block is another.
    pub(crate) fn sendable(&mut self, found: Found) -> Option<Found> {
        let Some(failover) = self.failover.as_mut() else { return Some(found) };
        match &failover.block {
            Some(block) if **block == *found.work => Some(found),
            Some(block) => {
                self.reporter.emit(Event::ProofNotSent {
                    index: found.work.index,
                    block: forged(found.work.index),
                    proof: found.proof,
                    server: failover.url.clone(),
                    server_block: forged(block.index),
                });
                None
            }
            None => {
                failover.carried.push(found);
                None
            }
        }
    }

    /// Every [`crate::limits::SHARES_REPORT_EVERY`]: the `shares` line, when the counts changed
    /// since the last one.
    pub(crate) fn report_shares(&mut self) {
        let counts = self.miner.share_counts();
        if counts == self.shares_shown {
            return;
        }
        self.shares_shown = counts;
        let event = self.miner.shares_report();
        match self.workers.as_mut() {
            Some(workers) => workers.report(event, &self.reporter),
            None => self.reporter.emit(event),
        }
    }

    /// Handles a share the search found: sent to the pool while its block is the one mined and
    /// it meets the current target (which may have risen since it was found), else dropped
    /// (counted in the summary).
    async fn share_found<T: Transport>(&mut self, transport: &mut T, found: Found) -> Step {
        let current = self.miner.current().is_some_and(|work| **work == *found.work);
        let meets = self
            .miner
            .share_target()
            .is_some_and(|bits| found.work.zero_bits(found.proof) >= u32::from(bits));
        if !current || !meets || self.draining || !transport.is_connected() {
            self.miner.share_dropped();
            return Step::Continue;
        }
        match transport.send_share(&found).await {
            Ok(true) => self.miner.share_sent(),
            Ok(false) => self.miner.share_dropped(),
            Err(reason) => return Step::Lost(reason),
        }
        Step::Continue
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

/// Resolves when a pool earlier in the list than the one mined on answers again; never with
/// one server, on the first pool, or once the probe is gone.
async fn preferred_back(failover: &mut Option<Failover>) {
    let Some(slot) = failover.as_mut().map(|f| &mut f.preferred) else {
        return pending().await;
    };
    let Some(rx) = slot.as_mut() else { return pending().await };
    let answered = rx.await.is_ok();
    // A finished receiver must not be polled again.
    *slot = None;
    if !answered {
        pending::<()>().await;
    }
}

/// Returns true when `block` (the one after ours) carries `proof` and rewards `id`.
pub(crate) fn carries_our_proof(block: &Value, proof: u64, id: &str) -> bool {
    block_proof(block) == Some(proof)
        && block.get("transactions").and_then(Value::as_array).is_some_and(|txs| {
            txs.iter()
                .any(|t| t.get("recipient").and_then(Value::as_str).is_some_and(|r| r.trim() == id))
        })
}

/// What a transport read from its server, or learned about its connection.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A connection works now (`protocol`: `"websocket"` or `"http"`).
    Connected {
        /// The endpoint, for the line.
        url: String,
        /// `"websocket"` or `"http"`.
        protocol: &'static str,
    },
    /// The server's current block (pushed or polled) and the work it makes.
    Block {
        /// The block as the server sent it (a later block may carry one of our proofs).
        block: Value,
        /// What to search.
        work: Arc<Work>,
    },
    /// The server's answer to the oldest proof sent and not answered yet.
    Verdict {
        /// What the server decided.
        verdict: Verdict,
        /// The server's words.
        message: String,
        /// The number of the block the proof forged, when the server says.
        won: Option<u64>,
        /// The answer as read (made safe to print), for the line when no proof awaits one.
        frame: String,
        /// A line the transport adds after the verdict's (the course protocol's dialect
        /// switch after a rejection).
        then: Option<Event>,
    },
    /// An error message from the server: the answer to the oldest proof sent, if one awaits.
    Error(String),
    /// The pool set (or changed) this connection's share target: leading zero bits.
    ShareTarget(u8),
    /// The pool's answer to a share sent on this connection.
    ShareVerdict {
        /// The share.
        found: Found,
        /// Whether it was counted.
        accepted: bool,
        /// Why not (`"stale"`, `"invalid"`, `"duplicate"`, `"error"`); `None` when counted.
        reason: Option<&'static str>,
        /// The target it was judged at.
        bits: u8,
        /// The pool's words.
        message: String,
    },
    /// The server answered the share opt-in with an error (it has no shares): why.
    SharesRefused(String),
    /// No connection could be opened: why. Nothing was open.
    Unreachable(String),
    /// The open connection is gone: why. No answer comes for the proofs sent on it.
    Lost(String),
    /// The server answered the WebSocket upgrade with plain HTTP (why): the course HTTP
    /// protocol is to be used instead. Only a session that was asked to fall back says so.
    Fallback(String),
}

/// What carries the driver's messages to one server and back; it holds no mining rule.
pub(crate) trait Transport {
    /// Waits for what comes next from the server (connecting first when there is no
    /// connection, once the delay [`Transport::retry`] set has passed).
    ///
    /// Must be cancel-safe: the driver waits on the search, Ctrl-C and the status line at the
    /// same time and calls again, so an operation under way is resumed, not restarted or lost.
    async fn next(&mut self) -> Incoming;

    /// Sends `found` to the server; its answer comes from [`Transport::next`] as a
    /// [`Incoming::Verdict`] or [`Incoming::Error`], in the order the proofs were sent.
    ///
    /// # Errors
    /// Why the connection is gone (the proof did not reach the server).
    async fn send(&mut self, found: &Found) -> Result<(), String>;

    /// Asks the server for its current block (the miner is idle after a verdict).
    ///
    /// # Errors
    /// Why the connection is gone.
    async fn request_block(&mut self) -> Result<(), String>;

    /// Schedules the next attempt after a failure (the connection is closed by then) and
    /// returns its delay.
    fn retry(&mut self) -> Duration;

    /// Returns true while a connection is open (answers can still come on it).
    fn is_connected(&self) -> bool;

    /// Called once a connection works: asks the server for shares when the transport has them
    /// (an [`Incoming::ShareTarget`] then follows). The course HTTP protocol has none.
    ///
    /// # Errors
    /// Why the connection is gone.
    async fn opt_in(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Returns true when a share may be sent now: connected, and fewer than
    /// [`crate::limits::MAX_SHARES_IN_FLIGHT`] shares await an answer.
    fn share_window_open(&self) -> bool {
        false
    }

    /// Sends a share; its answer comes from [`Transport::next`] as an
    /// [`Incoming::ShareVerdict`]. Only called while a share target is set. Returns false when
    /// the share was not sent (too many await an answer).
    ///
    /// # Errors
    /// Why the connection is gone.
    async fn send_share(&mut self, _share: &Found) -> Result<bool, String> {
        Ok(false)
    }

    /// Returns true while a share sent on this connection awaits its answer.
    fn shares_awaiting(&self) -> bool {
        false
    }

    /// Returns the server's URL, for lines.
    fn url(&self) -> String;
}

/// How a run over one transport ended.
pub(crate) enum End {
    /// The run is over.
    Done(Outcome),
    /// The server answered the WebSocket upgrade with plain HTTP: use the course HTTP protocol.
    Fallback,
    /// Several pools: this one failed, or an earlier one answers again (unjudged proofs are
    /// carried in the context).
    Left(Leave),
}

/// Proof bookkeeping across messages and reconnects.
#[derive(Default)]
struct Proofs {
    /// Sent, oldest first; the server answers proofs in the order it receives them, and a
    /// miner may send the next proof before the previous one is answered.
    awaiting: VecDeque<Found>,
    /// Found (or sent before the connection dropped) while no answer can come: sent again when
    /// the server is back and the block is still current, else settled (won or dropped).
    unsent: Vec<Found>,
}

/// What handling one message leads to.
enum Step {
    Continue,
    End(End),
    /// The connection is gone: why.
    Lost(String),
}

/// Mines over `transport` until the run ends, or, with several pools, until this pool fails or
/// an earlier one answers again (unjudged proofs are then carried in the context).
pub(crate) async fn drive<T: Transport>(ctx: &mut Ctx, transport: &mut T) -> End {
    let end = drive_on(ctx, transport).await;
    if !matches!(end, End::Done(_)) {
        // The next transport (or pool) sets its own share target, if any.
        ctx.miner.set_share_target(None).await;
    }
    end
}

async fn drive_on<T: Transport>(ctx: &mut Ctx, transport: &mut T) -> End {
    let mut proofs = Proofs::default();
    let every = ctx.config.shares_report.max(Duration::from_millis(10));
    let mut shares_report = interval_at(Instant::now() + every, every);
    let mut shutdown = ctx.shutdown.clone();
    let mut status = interval(STATUS_EVERY);
    let show_status = ctx.reporter.has_status_line();
    // After Ctrl-C with proofs in flight: when to stop waiting for their answers.
    let mut grace_until = Instant::now();
    loop {
        if ctx.draining
            && ((proofs.awaiting.is_empty() && !transport.shares_awaiting())
                || !transport.is_connected())
        {
            return End::Done(Outcome::Interrupted);
        }
        if let Some(reason) = ctx.left() {
            let unjudged: Vec<Found> =
                proofs.awaiting.drain(..).chain(proofs.unsent.drain(..)).collect();
            ctx.carry(unjudged);
            return End::Left(Leave::Failed(reason));
        }
        let step = tokio::select! {
            () = stopped(&mut shutdown), if !ctx.draining => {
                if !transport.is_connected()
                    || (proofs.awaiting.is_empty() && !transport.shares_awaiting())
                {
                    return End::Done(Outcome::Interrupted);
                }
                // A proof is being judged: its answer may be a win (or a share counted). Stop the
                // search and wait a little (SHUTDOWN_GRACE) for the answers, so that the summary
                // counts them.
                ctx.draining = true;
                ctx.miner.halt().await;
                grace_until = Instant::now() + SHUTDOWN_GRACE;
                Step::Continue
            }
            () = sleep_until(grace_until), if ctx.draining => {
                return End::Done(Outcome::Interrupted);
            }
            incoming = transport.next() => {
                // Taken as the message is read, before anything else is done with it.
                let arrival = ctx.miner.arrival();
                on_incoming(ctx, transport, &mut proofs, incoming, arrival).await
            }
            found = ctx.miner.found() => {
                // With several pools: only a proof for this pool's block goes to it.
                match ctx.sendable(found) {
                    Some(found) if transport.is_connected() => {
                        match transport.send(&found).await {
                            Ok(()) => {
                                proofs.awaiting.push_back(found);
                                Step::Continue
                            }
                            Err(reason) => {
                                proofs.unsent.push(found);
                                Step::Lost(reason)
                            }
                        }
                    }
                    Some(found) => {
                        proofs.unsent.push(found);
                        Step::Continue
                    }
                    None => Step::Continue,
                }
            }
            // Several pools: an earlier one answers again; leave once no answer is awaited here.
            () = preferred_back(&mut ctx.failover), if proofs.awaiting.is_empty() && !ctx.draining => {
                let unsent = std::mem::take(&mut proofs.unsent);
                ctx.carry(unsent);
                return End::Left(Leave::Preferred);
            }
            _ = status.tick(), if show_status => {
                ctx.miner.show_status();
                Step::Continue
            }
            // Shares wait in the queue while the window is full; without a target they are
            // taken and dropped.
            share = ctx.shares.next(),
                if ctx.miner.share_target().is_none() || transport.share_window_open() =>
            {
                ctx.share_found(transport, share).await
            }
            _ = shares_report.tick() => {
                ctx.report_shares();
                Step::Continue
            }
        };
        match step {
            Step::Continue => {}
            Step::End(end) => return end,
            Step::Lost(reason) => {
                // A new connection gets a new share target.
                ctx.miner.set_share_target(None).await;
                lose(ctx, transport, &mut proofs, reason);
            }
        }
    }
}

/// Handles one message from the transport.
async fn on_incoming<T: Transport>(
    ctx: &mut Ctx,
    transport: &mut T,
    proofs: &mut Proofs,
    incoming: Incoming,
    arrival: Arrival,
) -> Step {
    match incoming {
        Incoming::Connected { url, protocol } => {
            ctx.reached = true;
            ctx.reporter.emit(Event::Connected { url, protocol });
            match transport.opt_in().await {
                Ok(()) => Step::Continue,
                Err(reason) => Step::Lost(reason),
            }
        }
        Incoming::ShareTarget(bits) => {
            ctx.reporter.emit(Event::ShareTarget { bits });
            ctx.miner.set_share_target(Some(bits)).await;
            Step::Continue
        }
        Incoming::ShareVerdict { found, accepted, reason, bits, message } => {
            ctx.miner.share_judged(accepted, reason == Some("stale"), bits);
            ctx.reporter.emit(Event::ShareResult {
                index: found.work.index,
                proof: found.proof,
                accepted,
                reason,
                bits,
                message,
            });
            Step::Continue
        }
        Incoming::SharesRefused(message) => {
            ctx.reporter.emit(Event::SharesRefused { message });
            ctx.miner.set_share_target(None).await;
            Step::Continue
        }
        Incoming::Block { block, work } => {
            on_block(ctx, transport, proofs, &block, work, arrival).await
        }
        Incoming::Verdict { verdict, message, won, frame, then } => {
            let Some(found) = proofs.awaiting.pop_front() else {
                ctx.reporter.emit(Event::Ignored {
                    what: format!("a result for no proof of ours: {frame}"),
                });
                return Step::Continue;
            };
            ctx.judged(&found, verdict, message, won);
            if let Some(event) = then {
                ctx.reporter.emit(event);
            }
            after_verdict(ctx, transport, verdict == Verdict::Accepted).await
        }
        Incoming::Error(message) => {
            ctx.reporter.emit(Event::ServerError { message: message.clone() });
            // An error while a proof is being judged is the server's answer to that proof.
            let Some(found) = proofs.awaiting.pop_front() else { return Step::Continue };
            ctx.judged(&found, Verdict::Invalid, message, None);
            after_verdict(ctx, transport, false).await
        }
        Incoming::Unreachable(error) => {
            // With several pools the next one is tried instead (see `pools`).
            if let Some(error) = ctx.fail(error) {
                let delay = transport.retry();
                ctx.reporter.emit(Event::ConnectFailed {
                    url: transport.url(),
                    error,
                    retry_in_ms: delay.as_millis().try_into().unwrap_or(u64::MAX),
                });
            }
            Step::Continue
        }
        Incoming::Lost(reason) => Step::Lost(reason),
        Incoming::Fallback(reason) => {
            ctx.reporter.emit(Event::FallbackToHttp { reason });
            Step::End(End::Fallback)
        }
    }
}

/// After a verdict: ends a `--once` run, or asks for the current block when nothing is mined.
async fn after_verdict<T: Transport>(ctx: &mut Ctx, transport: &mut T, accepted: bool) -> Step {
    if let Some(outcome) = ctx.once_after_result(accepted) {
        return Step::End(End::Done(outcome));
    }
    if ctx.miner.current().is_none() {
        // Nothing to do until a block comes: ask for it rather than wait for the next one.
        if let Err(reason) = transport.request_block().await {
            return Step::Lost(reason);
        }
    }
    Step::Continue
}

/// A new block arrived (or the same one again): proofs carried from another pool and proofs
/// not sent yet go out if they solve it, else are settled (won if `block` carries them, else
/// dropped); then the search follows the block (abort and restart, or nothing if unchanged),
/// unless our proof for this very block is being judged.
async fn on_block<T: Transport>(
    ctx: &mut Ctx,
    transport: &mut T,
    proofs: &mut Proofs,
    block: &Value,
    work: Arc<Work>,
    arrival: Arrival,
) -> Step {
    // Proofs found on another pool's block go out only if it is this server's block too.
    let carried = ctx.carried_for(&work);
    let unsent = std::mem::take(&mut proofs.unsent);
    // (`carried_for` returns only proofs of this block; it drops the others with a line.)
    let mut pending = carried.into_iter().chain(unsent);
    while let Some(found) = pending.next() {
        if *found.work == *work {
            if let Err(reason) = transport.send(&found).await {
                proofs.unsent.push(found);
                proofs.unsent.extend(pending);
                return Step::Lost(reason);
            }
            proofs.awaiting.push_back(found);
        } else if let Some(outcome) = ctx.settle(&found, block) {
            return Step::End(End::Done(outcome));
        }
    }
    if proofs.awaiting.iter().any(|f| *f.work == *work) && ctx.miner.current().is_none() {
        // Our proof for this very block is being judged.
        return Step::Continue;
    }
    match ctx.follow(work, arrival).await {
        Some(outcome) => Step::End(End::Done(outcome)),
        None => Step::Continue,
    }
}

/// The connection is gone: the proofs whose answers were lost with it are sent again if their
/// block is still current when the server is back (the server says stale if it had already
/// counted one); the transport retries after its back-off, or, with several pools, the next
/// pool is tried instead (see `pools`).
fn lose<T: Transport>(ctx: &mut Ctx, transport: &mut T, proofs: &mut Proofs, reason: String) {
    proofs.unsent.extend(proofs.awaiting.drain(..));
    let Some(reason) = ctx.fail(reason) else { return };
    transport.retry();
    ctx.reporter.emit(Event::Disconnected { reason });
}

#[cfg(test)]
mod tests;
