//! [`Ledger`]: the chain paired with its database, so that judging a proof and appending the
//! block it forges is one step under one lock.
//!
//! Blocking (SQLite commits wait for the disk): call it only from `spawn_blocking` or startup.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use protocol::{Block, Difficulty, ProofSubmission, RejectReason, Transaction};

use crate::balances::{BalanceLimitError, Balances};
use crate::chain::{BlockFullError, Chain, Judgement};
use crate::store::Store;

/// Why a transaction was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The next block is full.
    #[error(transparent)]
    BlockFull(#[from] BlockFullError),
    /// It would take a balance beyond the bound.
    #[error(transparent)]
    Balance(#[from] BalanceLimitError),
}

/// What became of a proof.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The proof won: this block is now committed as the chain's last block.
    Accepted(Block),
    /// The proof lost.
    Rejected {
        /// Stale or invalid.
        reason: RejectReason,
        /// A sentence for the miner.
        message: String,
        /// The chain's last index.
        index: u64,
    },
}

/// The chain and its database, kept in step.
#[derive(Debug)]
pub struct Ledger {
    chain: Chain,
    store: Store,
    difficulty: Difficulty,
    balances: Balances,
}

/// Returns the current time as Python's `time()` would: float seconds since the epoch.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Ledger {
    /// Re-validates the whole stored chain (the store made the genesis block if the data
    /// directory was new), then marks the database as in use. New proofs are judged at
    /// `difficulty`.
    ///
    /// # Errors
    /// When the stored chain breaks a rule (the message names the file, the block and the
    /// problem), or the database cannot be written.
    pub fn open(store: Store, difficulty: Difficulty) -> anyhow::Result<Self> {
        let mut store = store;
        let path = store.path().display().to_string();
        let blocks = store.load_blocks().with_context(|| format!("corrupt chain in {path}"))?;
        let pending = store.load_pending().with_context(|| format!("corrupt chain in {path}"))?;
        let chain = Chain::from_stored(blocks, pending)
            .with_context(|| format!("corrupt chain in {path}"))?;
        store.mark_running()?;
        let balances = Balances::new(chain.blocks(), chain.pending());
        Ok(Ledger { chain, store, difficulty, balances })
    }

    /// Returns the chain.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Returns the difficulty new proofs are judged at.
    pub fn difficulty(&self) -> Difficulty {
        self.difficulty
    }

    /// Judges a proof and, when it wins, forges the next block and commits it before returning.
    ///
    /// # Errors
    /// When the database fails; then the chain is unchanged.
    pub fn submit(&mut self, sub: &ProofSubmission) -> anyhow::Result<Outcome> {
        let now = now();
        match self.chain.judge(sub, self.difficulty, now) {
            Judgement::Wins => {
                let block = self.chain.forge(sub.proof, &sub.id, now);
                self.store
                    .append_block(&block, Some(self.difficulty))
                    .with_context(|| format!("storing block {}", block.index))?;
                self.balances.record(&block);
                self.chain.append(block.clone());
                Ok(Outcome::Accepted(block))
            }
            Judgement::Rejected { reason, message } => {
                Ok(Outcome::Rejected { reason, message, index: self.chain.last().index })
            }
        }
    }

    /// Stores a transaction for the next block and returns that block's index, unless the next
    /// block is full or it would take a balance beyond ±[`protocol::message::MAX_COINS`] (the
    /// inner error).
    ///
    /// # Errors
    /// When the database fails; then nothing was queued.
    pub fn add_transaction(&mut self, t: Transaction) -> anyhow::Result<Result<u64, Refusal>> {
        if let Err(full) = self.chain.check_pending(&t) {
            return Ok(Err(Refusal::BlockFull(full)));
        }
        if let Err(e) = self.balances.check(&t) {
            return Ok(Err(Refusal::Balance(e)));
        }
        self.store.add_pending(&t).context("storing a pending transaction")?;
        self.balances.add_pending(&t);
        Ok(Ok(self.chain.add_pending(t)))
    }
}
