//! The mining rules both transports follow (the WebSocket session and the course HTTP
//! protocol only move messages, and neither imports the other): which block to mine, when to
//! abort, what becomes of a proof whose block is gone, how a verdict is counted and reported,
//! and when `--once` ends the run.

use serde_json::Value;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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

/// Returns true when `block` (the one after ours) carries `proof` and rewards `id`.
pub(crate) fn carries_our_proof(block: &Value, proof: u64, id: &str) -> bool {
    block_proof(block) == Some(proof)
        && block.get("transactions").and_then(Value::as_array).is_some_and(|txs| {
            txs.iter()
                .any(|t| t.get("recipient").and_then(Value::as_str).is_some_and(|r| r.trim() == id))
        })
}
