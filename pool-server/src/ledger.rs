//! [`Ledger`]: the chain paired with its [`Storage`], so that judging a proof and appending the
//! block it forges is one step under one lock (and, on a shared database, one step across
//! every server on it).
//!
//! Blocking (SQLite commits wait for the disk): call it only from `spawn_blocking` or startup.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use protocol::share::block_bits;
use protocol::{Block, Difficulty, ProofSubmission, RejectReason, Transaction};

use crate::balances::{BalanceLimitError, Balances};
use crate::chain::{BlockFullError, Chain, Judgement};
use crate::payout::Payout;
use crate::storage::{
    FinderShare, Forged, MAX_CHANGED_BLOCKS, Queued, ShareStore, Storage, Unavailable,
};

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
    store: Box<dyn Storage>,
    difficulty: Difficulty,
    balances: Balances,
    payout: Payout,
    /// Blocks appended since [`Ledger::take_appended`] last ran, oldest first: won here or
    /// caught up from a shared database.
    appended: Vec<Block>,
}

/// How often a write is retried after finding that other servers moved the chain on.
const MAX_RETRIES: usize = 3;

/// Returns the current time as Python's `time()` would: float seconds since the epoch.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Ledger {
    /// Re-validates the whole stored chain (the store made the genesis block if it was new),
    /// then marks the database as in use. New proofs are judged at `difficulty`.
    ///
    /// # Errors
    /// When the stored chain breaks a rule (the message names the database, the block and the
    /// problem), or the database cannot be written.
    pub fn open(
        store: Box<dyn Storage>,
        difficulty: Difficulty,
        payout: Payout,
    ) -> anyhow::Result<Self> {
        let mut store = store;
        let name = store.describe();
        let loaded = store.load().with_context(|| format!("corrupt chain in {name}"))?;
        let mut chain = Chain::from_stored(loaded.blocks, loaded.pending)
            .with_context(|| format!("corrupt chain in {name}"))?;
        chain.reserve_reward_bytes(payout.extra_reward_bytes());
        store.mark_running()?;
        let balances = Balances::new(chain.blocks(), chain.pending());
        Ok(Ledger { chain, store, difficulty, balances, payout, appended: Vec::new() })
    }

    /// Returns the chain.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Opens the share writer's connection to the same database (see [`Storage::share_store`]).
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn share_store(&self) -> anyhow::Result<Box<dyn ShareStore>> {
        self.store.share_store()
    }

    /// Returns the difficulty new proofs are judged at.
    pub fn difficulty(&self) -> Difficulty {
        self.difficulty
    }

    /// Returns the blocks appended since the last call, oldest first, for publishing.
    pub fn take_appended(&mut self) -> Vec<Block> {
        std::mem::take(&mut self.appended)
    }

    /// Brings the chain up to what the database holds: blocks other servers stored (each
    /// checked against the rules) and the pending transactions. Nothing to do on a database
    /// this server writes alone.
    ///
    /// # Errors
    /// When the database fails, or a stored block breaks a rule (then the chain keeps the
    /// blocks before it).
    pub fn catch_up(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(changes) = self.store.changes(self.chain.last().index)? else {
                return Ok(());
            };
            let more = changes.blocks.len() >= MAX_CHANGED_BLOCKS;
            for stored in changes.blocks {
                let block = stored.block.clone();
                self.chain.append_stored(stored).with_context(|| {
                    format!("a block stored in {} breaks the rules", self.store.describe())
                })?;
                self.balances.record(&block);
                self.appended.push(block);
            }
            self.balances.set_pending(&changes.pending);
            self.chain.set_pending(changes.pending);
            if !more {
                return Ok(());
            }
        }
    }

    /// Judges a proof and, when it wins, forges the next block and commits it before returning.
    /// With `share_bits` (the connection opted in to shares), a winning proof is also stored as
    /// its finder's share of that target, in the block's transaction. (Shares that win no
    /// block are judged and stored beside the ledger: `state`, `writer`.)
    ///
    /// # Errors
    /// When the database fails; then the chain is unchanged.
    pub fn submit(
        &mut self,
        sub: &ProofSubmission,
        share_bits: Option<u8>,
    ) -> anyhow::Result<Outcome> {
        // Under PPLNS the finder's proof counts as a share of its target (a proof sent over HTTP,
        // or by a connection without shares, as one of the block's).
        let finder_bits = share_bits.unwrap_or_else(|| block_bits(self.difficulty));
        let now = now();
        for attempt in 0..=MAX_RETRIES {
            let judgement = self.chain.judge(sub, self.difficulty, now);
            let judgement = match judgement {
                // Perhaps valid for a block another server stored that this one has not read
                // yet (a course miner behind a load balancer): look once.
                // (When the database cannot tell, the answer stands.)
                Judgement::Rejected { reason: RejectReason::Invalid, .. } if attempt == 0 => {
                    let tip = self.chain.last().index;
                    if let Err(e) = self.catch_up() {
                        tracing::debug!(error = %e, "could not look for newer blocks");
                    }
                    if self.chain.last().index == tip {
                        judgement
                    } else {
                        self.chain.judge(sub, self.difficulty, now)
                    }
                }
                other => other,
            };
            if let Judgement::Rejected { reason, message } = judgement {
                return Ok(Outcome::Rejected { reason, message, index: self.chain.last().index });
            }
            let tip = self.chain.last().index;
            let (chain, payout, difficulty) = (&self.chain, self.payout, self.difficulty);
            let mut make = |pending: Option<&[Transaction]>, shares: &[(String, u8)]| {
                let rewards = payout.rewards(&sub.id, finder_bits, shares, difficulty);
                chain.forge_with(pending.unwrap_or(chain.pending()), &rewards, sub.proof, now)
            };
            // A block is a share too (for a connection with shares): its work counts toward
            // the miner's hashrate, stored with the block.
            let finder =
                share_bits.map(|bits| FinderShare { id: sub.id.clone(), proof: sub.proof, bits });
            match self.store.forge(
                tip,
                self.difficulty,
                payout.window(self.difficulty),
                finder.as_ref(),
                &mut make,
            )? {
                Forged::Stored(block) => {
                    self.balances.record(&block);
                    self.chain.append(block.clone());
                    self.appended.push(block.clone());
                    return Ok(Outcome::Accepted(block));
                }
                // Another server stored this height first: read its block, judge again (stale).
                Forged::Lost => self.catch_up()?,
            }
        }
        Err(anyhow::Error::new(Unavailable(
            "the chain moved on while this proof was being stored; send it again".to_owned(),
        )))
    }

    /// Stores a transaction for the next block and returns that block's index, unless the next
    /// block is full or it would take a balance beyond ±[`protocol::message::MAX_COINS`] (the
    /// inner error).
    ///
    /// # Errors
    /// When the database fails; then nothing was queued.
    pub fn add_transaction(&mut self, t: Transaction) -> anyhow::Result<Result<u64, Refusal>> {
        for _ in 0..=MAX_RETRIES {
            let tip = self.chain.last().index;
            let (chain, balances) = (&mut self.chain, &mut self.balances);
            let mut check = |pending: Option<&[Transaction]>| -> Result<(), Refusal> {
                if let Some(pending) = pending {
                    balances.set_pending(pending);
                    chain.set_pending(pending.to_vec());
                }
                chain.check_pending(&t)?;
                balances.check(&t)?;
                Ok(())
            };
            match self.store.add_pending(tip, &t, &mut check)? {
                Queued::Stored => {
                    self.balances.add_pending(&t);
                    return Ok(Ok(self.chain.add_pending(t)));
                }
                Queued::Refused(refusal) => return Ok(Err(refusal)),
                Queued::Behind => self.catch_up()?,
            }
        }
        Err(anyhow::Error::new(Unavailable(
            "the chain moved on while this transaction was being stored; send it again".to_owned(),
        )))
    }
}
