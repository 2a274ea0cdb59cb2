//! [`Ledger`]: the chain paired with its [`Storage`], so that judging a proof and appending the
//! block it forges is one step under one lock (and, on a shared database, one step across
//! every server on it).
//!
//! Blocking (SQLite commits wait for the disk): call it only from `spawn_blocking` or startup.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use protocol::share::{ShareReject, block_bits};
use protocol::{Block, Difficulty, ProofSubmission, RejectReason, Transaction};

use crate::balances::{BalanceLimitError, Balances};
use crate::chain::{BlockFullError, Chain, Judgement, ShareJudgement};
use crate::payout::Payout;
use crate::storage::{
    FinderShare, Forged, MAX_CHANGED_BLOCKS, Queued, RefusedCount, ShareRow, ShareStored, Storage,
    Unavailable, WorkerRow,
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
    /// The proof won no block and was judged as a share (the connection asked for shares).
    Share {
        /// Whether it was counted.
        accepted: bool,
        /// Why not, when not.
        reason: Option<ShareReject>,
        /// A sentence for the miner.
        message: String,
        /// The chain's last index.
        index: u64,
        /// The target it was judged at.
        bits: u8,
    },
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
    /// Refused shares per id not stored yet (stale, invalid).
    refused: HashMap<String, (u64, u64)>,
}

/// Refused shares are counted in memory and stored together this often (by
/// `AppState::flush_refused`; also when the workers are read, and when the server stops): a
/// flood of stale or invalid shares costs one commit a second, not one each. A crash loses at
/// most these counts, never an accepted share.
pub const REFUSED_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// ...or once this many ids have refusals waiting.
pub const MAX_REFUSED_IDS: usize = 1024;

impl Drop for Ledger {
    fn drop(&mut self) {
        // A clean stop keeps the refused shares counted in memory.
        if let Err(e) = self.flush_refused() {
            tracing::warn!(error = format!("{e:#}"), "could not count refused shares at stop");
        }
    }
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
        Ok(Ledger {
            chain,
            store,
            difficulty,
            balances,
            payout,
            appended: Vec::new(),
            refused: HashMap::new(),
        })
    }

    /// Returns the chain.
    pub fn chain(&self) -> &Chain {
        &self.chain
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
    /// With `share_bits` (the connection opted in to shares), a proof that wins no block and
    /// is not valid for an earlier one at the block difficulty is judged as a share at that
    /// target; an accepted share is stored before this returns.
    ///
    /// # Errors
    /// When the database fails; then the chain is unchanged.
    pub fn submit(
        &mut self,
        sub: &ProofSubmission,
        share_bits: Option<u8>,
    ) -> anyhow::Result<Outcome> {
        let outcome = self.submit_block(sub, share_bits)?;
        match (share_bits, &outcome) {
            (Some(bits), Outcome::Rejected { reason: RejectReason::Invalid, .. }) => {
                self.submit_share(sub, bits)
            }
            _ => Ok(outcome),
        }
    }

    fn submit_share(&mut self, sub: &ProofSubmission, bits: u8) -> anyhow::Result<Outcome> {
        let now = now();
        let share = |accepted: bool, reason: Option<ShareReject>, message: String, index: u64| {
            Outcome::Share { accepted, reason, message, index, bits }
        };
        let refused = match self.chain.judge_share(sub, bits) {
            ShareJudgement::Share { block } => {
                let row = ShareRow { block, proof: sub.proof, id: sub.id.clone(), bits, ts: now };
                match self.store.add_share(&row, block)? {
                    ShareStored::Stored => {
                        return Ok(share(
                            true,
                            None,
                            format!("share accepted ({bits} bits)"),
                            block,
                        ));
                    }
                    ShareStored::Duplicate => (
                        ShareReject::Duplicate,
                        format!(
                            "proof {} was already counted as a share for block #{}",
                            sub.proof,
                            block + 1
                        ),
                    ),
                    ShareStored::Behind => {
                        self.catch_up()?;
                        (
                            ShareReject::Stale,
                            format!(
                                "block #{} was already won; mine on block #{}",
                                block + 1,
                                self.chain.last().index + 1
                            ),
                        )
                    }
                }
            }
            ShareJudgement::Stale { block } => (
                ShareReject::Stale,
                format!(
                    "block #{} was already won (this share is for block {block}); mine on \
                     block #{}",
                    block + 1,
                    self.chain.last().index + 1
                ),
            ),
            ShareJudgement::Invalid { zero_bits } => (
                ShareReject::Invalid,
                match zero_bits {
                    Some(z) => format!(
                        "proof {} meets neither the block's difficulty ({} hex zeroes) nor the \
                         share target ({bits} zero bits): its hash has {z}",
                        sub.proof, self.difficulty
                    ),
                    None => format!(
                        "proof {} is for no recent block; the last block is {}",
                        sub.proof,
                        self.chain.last().index
                    ),
                },
            ),
        };
        let (reason, message) = refused;
        self.note_refused(&sub.id, reason);
        Ok(share(false, Some(reason), message, self.chain.last().index))
    }

    /// Counts a refused share in memory (stored by [`Ledger::flush_refused`]).
    fn note_refused(&mut self, id: &str, reason: ShareReject) {
        if !self.refused.contains_key(id)
            && self.refused.len() >= MAX_REFUSED_IDS
            && let Err(e) = self.flush_refused()
        {
            // The counts waiting are kept for the next try; this one is let go, so the map
            // stays bounded while the database is away.
            tracing::warn!(error = format!("{e:#}"), "could not count refused shares");
            return;
        }
        let counts = match self.refused.get_mut(id) {
            Some(counts) => counts,
            None => self.refused.entry(id.to_owned()).or_default(),
        };
        if reason == ShareReject::Stale {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }

    /// Stores the refused shares counted so far.
    ///
    /// # Errors
    /// When the database fails; then the counts are kept for the next try.
    pub fn flush_refused(&mut self) -> anyhow::Result<()> {
        if self.refused.is_empty() {
            return Ok(());
        }
        let counts: Vec<RefusedCount> = self
            .refused
            .iter()
            .map(|(id, (stale, invalid))| (id.clone(), *stale, *invalid))
            .collect();
        self.store.count_refused(&counts)?;
        self.refused.clear();
        Ok(())
    }

    /// Returns up to `limit` miners with shares since `since`, most work first (the refused
    /// shares counted so far are stored first).
    ///
    /// # Errors
    /// When the database fails.
    pub fn workers(&mut self, since: f64, limit: usize) -> anyhow::Result<Vec<WorkerRow>> {
        self.flush_refused()?;
        self.store.workers(since, limit)
    }

    fn submit_block(
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
            let (chain, payout) = (&self.chain, self.payout);
            let mut make = |pending: Option<&[Transaction]>, shares: &[(String, u8)]| {
                let rewards = payout.rewards(&sub.id, finder_bits, shares);
                chain.forge_with(pending.unwrap_or(chain.pending()), &rewards, sub.proof, now)
            };
            // A block is a share too (for a connection with shares): its work counts toward
            // the miner's hashrate, stored with the block.
            let finder =
                share_bits.map(|bits| FinderShare { id: sub.id.clone(), proof: sub.proof, bits });
            match self.store.forge(
                tip,
                self.difficulty,
                payout.window(),
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
