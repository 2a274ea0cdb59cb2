//! [`AppState`]: what every handler and connection shares.
//!
//! The [`Ledger`] sits behind a `std::sync::Mutex` that is only ever locked inside
//! `spawn_blocking` (never across an `.await`), which makes "judge, forge, commit, publish" one
//! atomic step. The newest block is published through a `watch` channel as a [`Latest`] holding
//! the block and its WebSocket frame, serialised once per forged block however many clients
//! there are; a lagging connection just sees the newest value.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use protocol::message::STATS_WORKERS;
use protocol::share::ShareReject;
use protocol::{Block, Difficulty, ProofSubmission, ServerMessage, Transaction, Worker};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chain::{Recent, ShareJudgement, ShareTarget};
use crate::chain_json::{ChainJson, Snapshot};
use crate::error::AppError;
use crate::ledger::{self, Ledger, Outcome, Refusal};
use crate::metrics::{Gauges, Metrics};
use crate::ranking::Standings;
use crate::rate::RateLimiter;
use crate::scoreboard::Scoreboard;
use crate::serve::{BURST_SECONDS, Limits};
use crate::shares::ShareSettings;
use crate::storage::{ShareRow, ShareStored};
use crate::writer::{ShareWriter, WriteError};

/// The chain's newest block, ready to send.
#[derive(Debug)]
pub struct Latest {
    /// The block.
    pub block: Block,
    /// Its `{"type": "block", ...}` WebSocket frame.
    pub frame: Utf8Bytes,
    /// When it was published, for the broadcast fan-out metric.
    pub published: Instant,
    /// The newest blocks' proof checkers: shares are judged against these, without the ledger.
    pub recent: Recent,
}

/// What became of a proof that won no block, from a connection with shares.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareOutcome {
    /// Whether it was counted.
    pub accepted: bool,
    /// Why not, when not.
    pub reason: Option<ShareReject>,
    /// A sentence for the miner.
    pub message: String,
    /// The chain's last index (for an accepted share: the block it was found on).
    pub index: u64,
    /// The target it was judged at.
    pub bits: u8,
}

/// A share proof judged without the ledger (see [`AppState::judge_share`]).
#[derive(Debug)]
pub enum ShareVerdict {
    /// It meets the block difficulty: judge it as a block ([`AppState::submit`]).
    Block,
    /// Refused; counted already.
    Refused(ShareOutcome),
    /// Good: store it ([`AppState::store_share`]) before saying so.
    Accepted(ShareRow),
}

/// The proofs accepted as shares for the chain's last block on this server, so a duplicate is
/// refused without asking the database (which still refuses one sent to two servers).
#[derive(Debug, Default)]
struct SeenShares {
    block: u64,
    proofs: HashSet<u64>,
}

/// The most proofs [`SeenShares`] remembers for one block; beyond it, duplicates are found by
/// the database alone.
pub const MAX_SEEN_SHARES: usize = 1 << 20;

/// Live counts that are not metrics of their own (those live in [`Metrics`]).
#[derive(Debug, Default)]
pub struct Stats {
    /// WebSocket connections open now.
    pub connections: AtomicU64,
}

/// The state shared by all handlers; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// `None` once the server has closed it ([`AppState::close`]).
    ledger: Mutex<Option<Ledger>>,
    difficulty: Difficulty,
    latest: watch::Sender<Arc<Latest>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    stats: Stats,
    metrics: Metrics,
    /// Balances, recent blocks and the block rate; updated under the ledger lock, read briefly
    /// (never across an `.await`).
    scoreboard: Mutex<Scoreboard>,
    /// Every block's JSON for `GET /chain`; appended under the ledger lock, read without it.
    chain_json: ChainJson,
    started: Instant,
    /// Proofs per address, HTTP and WebSocket together.
    proof_rate: RateLimiter,
    /// Transactions per address.
    transaction_rate: RateLimiter,
    shares: ShareSettings,
    /// Bumped by every judged proof and every appended block: what the workers' figures
    /// depend on.
    generation: AtomicU64,
    /// Stores accepted shares in batches, counts refused ones.
    writer: ShareWriter,
    seen: Mutex<SeenShares>,
    /// The last `workers` answer (see [`AppState::workers`]). An async lock, held across the
    /// query, so that readers arriving meanwhile wait for its answer instead of querying too.
    workers: tokio::sync::Mutex<Option<CachedWorkers>>,
}

#[derive(Debug)]
struct CachedWorkers {
    generation: u64,
    at: Instant,
    workers: Arc<[Worker]>,
}

/// How long the workers' figures are reused at most while no proof is judged here (what other
/// frontends judged shows up after that).
pub const WORKERS_CACHE_AGE: Duration = Duration::from_secs(1);
/// How long they are reused at least, even when proofs were judged since: so `/workers`,
/// `/metrics` and the `stats` requests of any number of dashboards (or of a client sending
/// nothing else) cost at most one query per this time between them.
pub const WORKERS_MIN_AGE: Duration = Duration::from_millis(250);

impl AppState {
    /// Wraps an opened ledger; `limits` gives the write rates. `shutdown` is cancelled when the
    /// server stops; `tasks` tracks the WebSocket connections so that shutdown can wait for them.
    pub fn new(
        ledger: Ledger,
        writer: ShareWriter,
        limits: &Limits,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let limiter = |rate: u32| RateLimiter::new(rate, rate.saturating_mul(BURST_SECONDS));
        let difficulty = ledger.difficulty();
        let latest = watch::Sender::new(latest(ledger.chain(), difficulty));
        let scoreboard = Scoreboard::from_chain(ledger.chain().blocks(), ledger::now());
        let chain_json = ChainJson::new(ledger.chain().blocks());
        let inner = Shared {
            ledger: Mutex::new(Some(ledger)),
            difficulty,
            latest,
            shutdown,
            tasks,
            stats: Stats::default(),
            metrics: Metrics::default(),
            scoreboard: Mutex::new(scoreboard),
            chain_json,
            started: Instant::now(),
            proof_rate: limiter(limits.proof_rate),
            transaction_rate: limiter(limits.transaction_rate),
            shares: limits.shares,
            generation: AtomicU64::new(0),
            writer,
            seen: Mutex::new(SeenShares::default()),
            workers: tokio::sync::Mutex::new(None),
        };
        AppState { inner: Arc::new(inner) }
    }

    /// Returns the share settings of opted-in connections.
    pub fn share_settings(&self) -> ShareSettings {
        self.inner.shares
    }

    /// Returns the difficulty new proofs need.
    pub fn difficulty(&self) -> Difficulty {
        self.inner.difficulty
    }

    /// Returns the newest block.
    pub fn latest(&self) -> Arc<Latest> {
        self.inner.latest.borrow().clone()
    }

    /// Returns a receiver that wakes on every forged block.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Latest>> {
        self.inner.latest.subscribe()
    }

    /// Returns the token cancelled at shutdown.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Returns the tracker of connection tasks.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// Returns the counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Returns the metrics counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Takes one proof from `ip`'s allowance.
    ///
    /// # Errors
    /// A 429 saying how long to wait, when `ip` sent too many.
    pub fn allow_proof(&self, ip: IpAddr) -> Result<(), AppError> {
        limited(&self.inner.proof_rate, ip, "proofs")
    }

    /// Returns the proof allowance of one address (or of one connection that asked for shares):
    /// proofs a second on average, and at once.
    pub fn proof_allowance(&self) -> (f64, f64) {
        let rate = &self.inner.proof_rate;
        (rate.per_second(), rate.burst())
    }

    /// Takes one transaction from `ip`'s allowance.
    ///
    /// # Errors
    /// A 429 saying how long to wait, when `ip` sent too many.
    pub fn allow_transaction(&self, ip: IpAddr) -> Result<(), AppError> {
        limited(&self.inner.transaction_rate, ip, "transactions")
    }

    fn scoreboard(&self) -> MutexGuard<'_, Scoreboard> {
        // `record` cannot leave the scoreboard half-updated in a way worth refusing to read.
        self.inner.scoreboard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns every id's coins, highest first, ties by id: a snapshot, cheap to take and to
    /// hold (see [`Standings`]).
    pub fn balances(&self) -> Standings {
        self.scoreboard().balances()
    }

    /// Returns the coins of `id` (0 when the chain never mentions it).
    pub fn coins(&self, id: &str) -> i64 {
        self.scoreboard().coins(id)
    }

    /// Returns the `stats` message the dashboard asks for. Its workers are those of
    /// [`AppState::workers`]; when the database cannot give them, the last ones known (or none).
    pub async fn stats_message(&self) -> ServerMessage {
        let workers = self.workers_or_last_known().await;
        let workers = workers.iter().take(STATS_WORKERS).cloned().collect();
        let clients = self.stats().connections.load(Ordering::Relaxed);
        self.scoreboard().stats(self.difficulty(), clients, ledger::now(), workers)
    }

    /// Returns the Prometheus text of `/metrics`; the per-worker series are those of
    /// [`AppState::workers`] (the last ones known when the database cannot give them).
    pub async fn metrics_text(&self) -> String {
        let workers = self.workers_or_last_known().await;
        let gauges = Gauges {
            chain_length: self.scoreboard().chain_length(),
            difficulty: self.difficulty().zeros(),
            ws_clients: self.stats().connections.load(Ordering::Relaxed),
            uptime: self.inner.started.elapsed(),
            workers: &workers,
        };
        self.metrics().render(&gauges)
    }

    async fn workers_or_last_known(&self) -> Arc<[Worker]> {
        match self.workers().await {
            Ok(workers) => workers,
            Err(e) => {
                tracing::debug!(error = %e, "workers' figures unavailable");
                let cached = self.inner.workers.lock().await;
                cached.as_ref().map_or_else(|| Arc::from([]), |c| c.workers.clone())
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Ledger>> {
        // A panic while holding the lock cannot leave the ledger half-updated: the chain is only
        // changed after the commit, in one push. So a poisoned lock is still usable.
        self.inner.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the ledger on the blocking pool.
    async fn with_ledger<R: Send + 'static>(
        &self,
        f: impl FnOnce(&AppState, &mut Ledger) -> anyhow::Result<R> + Send + 'static,
    ) -> Result<R, AppError> {
        let state = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut ledger = state.lock();
            let Some(ledger) = ledger.as_mut() else { return Ok(Err(AppError::ShuttingDown)) };
            let result = f(&state, ledger);
            // Whatever the answer, blocks appended on the way (won here, or caught up) go out.
            state.publish(ledger);
            result.map(Ok)
        })
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("ledger task failed: {e}")))?;
        result?
    }

    /// Closes the ledger once whatever holds it now is done: the database records a clean stop
    /// and the data directory's lock is released, even while connection tasks that outlived
    /// shutdown still hold this state (they get [`AppError::ShuttingDown`] from then on).
    pub async fn close(&self) {
        let state = self.clone();
        let closed = tokio::task::spawn_blocking(move || {
            // Shares queued are stored first; then the chain records the clean stop.
            state.inner.writer.close();
            drop(state.lock().take());
        })
        .await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the chain failed");
        }
    }

    /// Judges a proof; a winning one is committed and then broadcast before this returns.
    /// `share_bits`: the target of a connection with shares, whose winning proof is also stored
    /// as its share.
    ///
    /// # Errors
    /// Only internal ones (the database failed), or a 503 when it is unavailable.
    pub async fn submit(
        &self,
        sub: ProofSubmission,
        share_bits: Option<u8>,
    ) -> Result<Outcome, AppError> {
        self.with_ledger(move |state, ledger| {
            let outcome = ledger.submit(&sub, share_bits);
            // Whatever the outcome, a worker's counts may have moved.
            state.inner.generation.fetch_add(1, Ordering::Relaxed);
            let outcome = outcome?;
            match &outcome {
                Outcome::Accepted(block) => {
                    tracing::info!(index = block.index, winner = %sub.id, proof = sub.proof, "block forged");
                    state.metrics().accepted();
                }
                Outcome::Rejected { reason, message, .. } => {
                    tracing::debug!(id = %sub.id, proof = sub.proof, reason = reason.as_str(), %message, "proof rejected");
                    state.metrics().rejected(*reason);
                }
            }
            Ok(outcome)
        })
        .await
    }

    /// Judges a proof from a connection with shares against the newest blocks, without the
    /// ledger: a block goes to [`AppState::submit`]; a share is refused here (stale, invalid, or
    /// already accepted for the block on this server) or accepted, to be stored with
    /// [`AppState::store_share`] before it is acknowledged.
    pub fn judge_share(&self, sub: &ProofSubmission, target: ShareTarget) -> ShareVerdict {
        let latest = self.latest();
        let last = latest.block.index;
        let refused = |reason: ShareReject, message: String| {
            self.refused(&sub.id, reason);
            ShareVerdict::Refused(ShareOutcome {
                accepted: false,
                reason: Some(reason),
                message,
                index: last,
                bits: target.bits,
            })
        };
        match latest.recent.judge_share(sub, self.difficulty(), target) {
            ShareJudgement::Block => ShareVerdict::Block,
            ShareJudgement::Share { block, bits } => {
                if !self.first_sighting(block, sub.proof) {
                    return refused(ShareReject::Duplicate, duplicate_message(sub.proof, block));
                }
                let ts = ledger::now();
                ShareVerdict::Accepted(ShareRow {
                    block,
                    proof: sub.proof,
                    id: sub.id.clone(),
                    bits,
                    ts,
                })
            }
            ShareJudgement::Stale { block } => refused(
                ShareReject::Stale,
                format!("block #{} was already won; mine on block #{}", block + 1, last + 1),
            ),
            ShareJudgement::Invalid { zero_bits } => refused(
                ShareReject::Invalid,
                match zero_bits {
                    Some(z) => format!(
                        "proof {} meets neither the block's difficulty ({} hex zeroes) nor the \
                         share target ({} zero bits): its hash has {z}",
                        sub.proof,
                        self.difficulty(),
                        target.bits
                    ),
                    None => format!(
                        "proof {} is for no recent block; the last block is {last}",
                        sub.proof
                    ),
                },
            ),
        }
    }

    /// Whether `proof` is new as a share for `block` on this server (and remembers it).
    fn first_sighting(&self, block: u64, proof: u64) -> bool {
        let mut seen = self.inner.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.block != block {
            // Shares are accepted for the last block only: the old ones can go.
            seen.block = block;
            seen.proofs.clear();
        }
        if seen.proofs.len() >= MAX_SEEN_SHARES {
            return true;
        }
        seen.proofs.insert(proof)
    }

    fn refused(&self, id: &str, reason: ShareReject) {
        self.metrics().share(false, Some(reason));
        self.inner.writer.refused(id, reason);
    }

    /// Stores a share accepted by [`AppState::judge_share`] (in the next batch) and answers
    /// once it is durable; a duplicate of a share stored by another server is refused then.
    ///
    /// # Errors
    /// A 503 when the database is unavailable or the server stopping: the share was not
    /// judged (nor counted).
    pub async fn store_share(&self, row: ShareRow) -> Result<ShareOutcome, AppError> {
        let (id, proof, block, bits) = (row.id.clone(), row.proof, row.block, row.bits);
        let stored = self.inner.writer.store(row).await.map_err(|e| match e {
            WriteError::Unavailable(message) => AppError::Unavailable(message),
            WriteError::ShuttingDown => AppError::ShuttingDown,
        })?;
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
        Ok(match stored {
            ShareStored::Stored => {
                self.metrics().share(true, None);
                ShareOutcome {
                    accepted: true,
                    reason: None,
                    message: format!("share accepted ({bits} bits)"),
                    index: block,
                    bits,
                }
            }
            ShareStored::Duplicate => {
                self.refused(&id, ShareReject::Duplicate);
                ShareOutcome {
                    accepted: false,
                    reason: Some(ShareReject::Duplicate),
                    message: duplicate_message(proof, block),
                    index: self.latest().block.index,
                    bits,
                }
            }
        })
    }

    /// Returns the miners with shares in the last [`WORKER_WINDOW`], most work first (at most
    /// [`MAX_WORKERS`]), with their hashrate estimated from that work. One answer serves every
    /// reader for [`WORKERS_MIN_AGE`], and for up to [`WORKERS_CACHE_AGE`] while no proof is
    /// judged here.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn workers(&self) -> Result<Arc<[Worker]>, AppError> {
        let mut cached = self.inner.workers.lock().await;
        // Read after the lock: a proof judged while another reader queried makes its answer old.
        let generation = self.inner.generation.load(Ordering::Relaxed);
        if let Some(c) = cached.as_ref() {
            let age = c.at.elapsed();
            if age < WORKERS_MIN_AGE || (c.generation == generation && age < WORKERS_CACHE_AGE) {
                return Ok(c.workers.clone());
            }
        }
        let at = Instant::now();
        let workers = self.query_workers().await?;
        *cached = Some(CachedWorkers { generation, at, workers: workers.clone() });
        Ok(workers)
    }

    async fn query_workers(&self) -> Result<Arc<[Worker]>, AppError> {
        let now = ledger::now();
        let rows = self
            .inner
            .writer
            .workers(now - WORKER_WINDOW.as_secs_f64(), MAX_WORKERS)
            .await
            .map_err(AppError::from)?;
        let idle_after = (self.inner.shares.interval * IDLE_INTERVALS).as_secs_f64();
        Ok(rows
            .into_iter()
            .map(|w| {
                // Over the window, or since the miner's first share when that is shorter.
                let span = (now - w.first_share)
                    .clamp(MIN_HASHRATE_SPAN.as_secs_f64(), WORKER_WINDOW.as_secs_f64());
                // A miner that stopped is idle at once, not for the rest of the window.
                let idle = now - w.last_share > idle_after;
                Worker {
                    coins: self.coins(&w.id),
                    hashrate: if idle { 0.0 } else { w.work / span },
                    id: w.id,
                    shares: w.shares,
                    stale: w.stale,
                    invalid: w.invalid,
                    last_share: w.last_share,
                }
            })
            .collect())
    }

    /// Brings the chain up to the shared database (blocks other frontends stored) and
    /// broadcasts what is new. Blocking: for the database listener's thread.
    ///
    /// # Errors
    /// When the database fails or a stored block breaks a rule.
    pub fn catch_up_blocking(&self) -> anyhow::Result<()> {
        let mut ledger = self.lock();
        let Some(ledger) = ledger.as_mut() else { return Ok(()) };
        let result = ledger.catch_up();
        self.publish(ledger);
        result
    }

    /// Records and broadcasts blocks newly appended to the chain, oldest first. Called under
    /// the ledger lock, so broadcasts go out in chain order.
    fn publish(&self, ledger: &mut Ledger) {
        let blocks = ledger.take_appended();
        if blocks.is_empty() {
            return;
        }
        {
            let mut scoreboard = self.scoreboard();
            for block in &blocks {
                scoreboard.record(block);
                self.inner.chain_json.push(block);
            }
        }
        self.inner.latest.send_replace(latest(ledger.chain(), self.difficulty()));
        // Coins moved.
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores a transaction for the next block and returns that block's index.
    ///
    /// # Errors
    /// A 429 when the next block is full, a 409 when it would take a balance beyond
    /// ±`MAX_COINS`; otherwise only internal ones (the database failed).
    pub async fn add_transaction(&self, t: Transaction) -> Result<u64, AppError> {
        self.with_ledger(move |_, ledger| ledger.add_transaction(t)).await?.map_err(|e| match e {
            Refusal::BlockFull(full) => AppError::TooMany(full.to_string()),
            Refusal::Balance(e) => AppError::Conflict(e.to_string()),
        })
    }

    /// Returns the chain's JSON as it is now, without taking the ledger lock: a reader holding
    /// it never slows the judge, and costs only references to bytes the chain keeps anyway.
    pub fn chain_json(&self) -> Snapshot {
        self.inner.chain_json.snapshot()
    }
}

/// The window a miner's hashrate is estimated over, from the work its accepted shares stand
/// for (Σ 2^bits): `hashrate = work in the window / the window` (or / the time since its first
/// share, when that is shorter, but at least [`MIN_HASHRATE_SPAN`]).
pub const WORKER_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);
/// The shortest span a hashrate is averaged over, so a miner's first share does not read as a
/// burst.
pub const MIN_HASHRATE_SPAN: std::time::Duration = std::time::Duration::from_secs(10);
/// A miner without an accepted share for this many share intervals (vardiff keeps an active one at
/// one or two shares an interval) is idle: its hashrate reads 0 while its shares stay in the
/// window. At the default 500 ms, 10 s.
pub const IDLE_INTERVALS: u32 = 20;
/// The most miners `GET /workers` lists (those with the most work in the window).
pub const MAX_WORKERS: usize = 100;

fn limited(limiter: &RateLimiter, ip: IpAddr, what: &str) -> Result<(), AppError> {
    limiter.check(ip).map_err(|limited| AppError::RateLimited {
        message: format!(
            "too many {what} from {ip}: at most {} a second (twice that at once); \
             try again in {} ms",
            limiter.per_second(),
            limited.retry_after.as_millis().max(1)
        ),
        retry_after: limited.retry_after,
    })
}

fn latest(chain: &crate::chain::Chain, difficulty: Difficulty) -> Arc<Latest> {
    let block = chain.last();
    let frame = ServerMessage::block(block, difficulty).to_json();
    Arc::new(Latest {
        block: block.clone(),
        frame: frame.into(),
        published: Instant::now(),
        recent: chain.recent(),
    })
}

fn duplicate_message(proof: u64, block: u64) -> String {
    format!("proof {proof} was already counted as a share for block #{}", block + 1)
}
