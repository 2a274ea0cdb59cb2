//! The mining rules both transports follow (the WebSocket session and the course HTTP
//! protocol only move messages, and neither imports the other): which block to mine, when to
//! abort, what becomes of a proof whose block is gone, how a verdict is counted and reported,
//! and when `--once` ends the run.

use serde_json::Value;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

use crate::balance::BalanceProbe;
use crate::cli::Config;
use crate::error::Outcome;
use crate::job::{Work, block_proof};
use crate::miner::{Arrival, Found, Miner};
use crate::output::{Event, Reporter, forged};

/// How often the live status line is refreshed.
pub(crate) const STATUS_EVERY: Duration = Duration::from_millis(250);

/// What both transports share: the configuration, the search, the totals and the stop signal.
pub(crate) struct Ctx {
    pub config: Config,
    pub miner: Miner,
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
                if let Some(outcome) = self.once_after_abort() {
                    return Some(outcome);
                }
            }
            None => {}
        }
        self.start(work);
        None
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
pub(crate) async fn preferred_back(failover: &mut Option<Failover>) {
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
