//! The chain and its rules: validating a stored chain, judging a proof (win, stale or invalid)
//! and forging the next block.
//!
//! Pure and synchronous: no SQLite, no async, no clock reads (callers pass `now`). The server
//! pairs a [`Chain`] with the `store` under one lock (see `ledger`), which is what makes
//! "validate, then append" a single atomic step.

use std::collections::VecDeque;

use protocol::block::MAX_BLOCK_BYTES;
use protocol::share::{block_bits, leading_zero_bits};
use protocol::{
    Block, Difficulty, ProofChecker, ProofSubmission, RejectReason, Transaction, to_python_json,
};

use crate::storage::StoredBlock;

/// How many of the newest blocks a proof can be found stale for (valid for a block already
/// won); an older one is invalid. Judging a proof checks at most this many blocks, each check
/// costing one or two SHA-256 compressions whatever the block's size (see [`ProofChecker`]).
pub const RECENT_BLOCKS: usize = 64;
/// The most transactions waiting for the next block; one more is refused until a block is forged.
pub const MAX_PENDING_TRANSACTIONS: usize = 1000;
/// What a block string holds besides its pending transactions, at most: the keys, a 20-digit
/// index and proof, the timestamp, the previous hash and the reward to an id of 128 bytes of
/// the longest escapes (1 KiB measured on the worst case, rounded up).
pub const BLOCK_OVERHEAD_BYTES: usize = 2 * 1024;
/// The most bytes the pending transactions may take in the next block string (as Python's
/// `json.dumps` prints them, with their `", "` separators), so that no forged block's string is
/// longer than [`MAX_BLOCK_BYTES`].
pub const MAX_PENDING_BYTES: usize = MAX_BLOCK_BYTES - BLOCK_OVERHEAD_BYTES;

/// The whole chain in memory, a proof checker for each of the newest blocks, and the
/// transactions waiting for the next block.
#[derive(Debug)]
pub struct Chain {
    blocks: Vec<Block>,
    /// `(index, checker)` of the newest [`RECENT_BLOCKS`] blocks, oldest first.
    recent: VecDeque<(u64, ProofChecker)>,
    pending: Vec<Transaction>,
    /// The bytes the pending transactions take in the next block string.
    pending_bytes: usize,
    /// Bytes of [`MAX_PENDING_BYTES`] kept for rewards beyond the one every block has (PPLNS).
    reserved_bytes: usize,
}

/// The next block is full: a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the next block (#{next}) is full: at most {MAX_PENDING_TRANSACTIONS} transactions and \
     {cap} bytes of them wait for a block, and {pending} transactions taking {bytes} \
     bytes already do; send it again once block #{next} is forged"
)]
pub struct BlockFullError {
    /// The index of the block the transaction would have gone into.
    pub next: u64,
    /// Transactions already waiting.
    pub pending: usize,
    /// Their bytes in the block string.
    pub bytes: usize,
    /// The most bytes they may take ([`MAX_PENDING_BYTES`], less what PPLNS rewards keep).
    pub cap: usize,
}

/// What a proof achieves against the current chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// The proof is valid for the last block: it wins the next one.
    Wins,
    /// The proof lost; `message` says why, for the miner.
    Rejected {
        /// Stale or invalid.
        reason: RejectReason,
        /// A sentence for the miner.
        message: String,
    },
}

/// What a proof from a connection with shares is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareJudgement {
    /// It meets the block difficulty for its block: a block (or a stale one), for the chain's
    /// owner to judge.
    Block,
    /// It meets the target for the last block, whose index this is.
    Share {
        /// The block it was found on.
        block: u64,
        /// The target it is counted at: the connection's, or the one just before a retarget.
        bits: u8,
    },
    /// It meets the target for an earlier block, already won.
    Stale {
        /// The block it was found on.
        block: u64,
    },
    /// It does not meet the target (its digest's leading zero bits, when its block is recent).
    Invalid {
        /// The leading zero bits it has.
        zero_bits: Option<u32>,
    },
}

/// A connection's share target: the current one, and the one before it while in-flight shares
/// found for it may still arrive (see `shares::ShareConn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareTarget {
    /// The target in force, in leading zero bits.
    pub bits: u8,
    /// A harder target's predecessor, still accepted for a moment after the retarget.
    pub grace: Option<u8>,
}

/// The proof checkers of the newest [`RECENT_BLOCKS`] blocks, oldest first: enough to judge a
/// share without the chain, and so without its lock. Published with each new block.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    checkers: Vec<(u64, ProofChecker)>,
}

impl Recent {
    fn checker_of(&self, index: u64) -> Option<&ProofChecker> {
        let oldest = self.checkers.first()?.0;
        let (i, checker) = self.checkers.get(usize::try_from(index.checked_sub(oldest)?).ok()?)?;
        (*i == index).then_some(checker)
    }

    /// Judges a proof from a connection with shares at `difficulty` and `target`: a
    /// [`ShareJudgement::Block`] when it meets the block difficulty for its block; else a share
    /// for the last block, or for the recent block it names in `index` (stale), or invalid
    /// (below the target, or for no recent block). A proof without `index` is judged against
    /// the last block.
    pub fn judge_share(
        &self,
        sub: &ProofSubmission,
        difficulty: Difficulty,
        target: ShareTarget,
    ) -> ShareJudgement {
        let Some(last) = self.checkers.last().map(|(i, _)| *i) else {
            return ShareJudgement::Invalid { zero_bits: None };
        };
        let block = sub.index.unwrap_or(last);
        let Some(checker) = self.checker_of(block) else {
            return ShareJudgement::Invalid { zero_bits: None };
        };
        let zero_bits = leading_zero_bits(&checker.digest(sub.proof));
        if zero_bits >= u32::from(block_bits(difficulty)) {
            return ShareJudgement::Block;
        }
        let bits = if zero_bits >= u32::from(target.bits) {
            target.bits
        } else {
            match target.grace {
                Some(grace) if zero_bits >= u32::from(grace) => grace,
                _ => return ShareJudgement::Invalid { zero_bits: Some(zero_bits) },
            }
        };
        if block == last {
            ShareJudgement::Share { block, bits }
        } else {
            ShareJudgement::Stale { block }
        }
    }
}

/// A stored chain that breaks the rules; the message names the block and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block {index}: {problem}")]
pub struct CorruptChainError {
    /// The first bad block's index (or position, when the index itself is wrong).
    pub index: u64,
    /// What is wrong with it.
    pub problem: String,
}

impl Chain {
    /// Returns a chain of just `genesis`.
    pub fn new(genesis: Block) -> Self {
        let mut chain = Chain {
            blocks: Vec::new(),
            recent: VecDeque::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            reserved_bytes: 0,
        };
        chain.push(genesis);
        chain
    }

    /// Re-validates a stored chain: indexes consecutive from 1, the genesis fields, every
    /// `previous_hash` link, every recorded hash, and every proof at the difficulty recorded
    /// for it.
    ///
    /// # Errors
    /// Names the first block that breaks a rule.
    pub fn from_stored(
        stored: Vec<StoredBlock>,
        pending: Vec<Transaction>,
    ) -> Result<Self, CorruptChainError> {
        // Transactions stored by an older server may exceed today's caps; they are kept (and
        // mined), and new ones are refused until they are.
        let pending_bytes = pending.iter().map(transaction_bytes).sum();
        let mut chain = Chain {
            blocks: Vec::new(),
            recent: VecDeque::new(),
            pending,
            pending_bytes,
            reserved_bytes: 0,
        };
        for s in stored {
            chain.check_stored(&s)?;
            chain.push(s.block);
        }
        if chain.blocks.is_empty() {
            return Err(CorruptChainError { index: 1, problem: "the chain is empty".to_owned() });
        }
        Ok(chain)
    }

    /// Checks a stored block against the chain it would extend: its index, the recorded hash,
    /// the link to the last block and its proof at the difficulty recorded for it (or, on an
    /// empty chain, that it is a genesis block).
    fn check_stored(&self, s: &StoredBlock) -> Result<(), CorruptChainError> {
        let expected = self.blocks.last().map_or(1, |b| b.index + 1);
        let bad = |problem: String| CorruptChainError { index: expected, problem };
        if s.block.index != expected {
            return Err(bad(format!("index is {}, expected {expected}", s.block.index)));
        }
        let hash = s.block.hash().to_hex();
        if hash != s.hash {
            return Err(bad(format!(
                "its contents hash to {hash} but {} was recorded: the block was altered",
                s.hash
            )));
        }
        let Some(prev) = self.blocks.last() else {
            if s.block != Block::genesis(s.block.timestamp) {
                return Err(bad("is not a genesis block".to_owned()));
            }
            return Ok(());
        };
        let prev_hash = prev.hash().to_hex();
        if s.block.previous_hash != prev_hash {
            return Err(bad(format!(
                "previous_hash {} does not match block {}'s hash {prev_hash}",
                s.block.previous_hash, prev.index
            )));
        }
        let Some(difficulty) = s.difficulty else {
            return Err(bad("has no recorded difficulty".to_owned()));
        };
        let checker = &self.recent.back().expect("the last block is recent").1;
        if !checker.is_valid_proof(difficulty, s.block.proof) {
            return Err(bad(format!(
                "proof {} is not valid for block {} at difficulty {difficulty}",
                s.block.proof, prev.index
            )));
        }
        if s.block.winner().is_none() {
            return Err(bad("has no mining reward".to_owned()));
        }
        Ok(())
    }

    /// Appends a block another server stored (read back from a shared database), after the
    /// same checks as a stored chain's at start-up; it took every pending transaction.
    ///
    /// # Errors
    /// When it breaks a rule; then the chain is unchanged.
    pub fn append_stored(&mut self, s: StoredBlock) -> Result<(), CorruptChainError> {
        self.check_stored(&s)?;
        self.append(s.block);
        Ok(())
    }

    /// Keeps `bytes` of each block for rewards beyond the one every block has: the pending
    /// transactions may take [`MAX_PENDING_BYTES`] less that.
    pub fn reserve_reward_bytes(&mut self, bytes: usize) {
        self.reserved_bytes = bytes.min(MAX_PENDING_BYTES);
    }

    /// Replaces the pending transactions with `pending` (as a shared database holds them now).
    pub fn set_pending(&mut self, pending: Vec<Transaction>) {
        self.pending_bytes = pending.iter().map(transaction_bytes).sum();
        self.pending = pending;
    }

    fn push(&mut self, block: Block) {
        self.recent.push_back((block.index, ProofChecker::new(&block.block_string())));
        if self.recent.len() > RECENT_BLOCKS {
            self.recent.pop_front();
        }
        self.blocks.push(block);
    }

    /// Returns the last block.
    pub fn last(&self) -> &Block {
        self.blocks.last().expect("a chain always holds its genesis block")
    }

    /// Returns every block, genesis first.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Returns the number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Returns false: a chain always holds its genesis block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Returns the transactions that will go into the next block.
    pub fn pending(&self) -> &[Transaction] {
        &self.pending
    }

    /// Checks that `t` fits in the next block ([`MAX_PENDING_TRANSACTIONS`],
    /// [`MAX_PENDING_BYTES`]).
    ///
    /// # Errors
    /// When it does not; nothing changes.
    pub fn check_pending(&self, t: &Transaction) -> Result<(), BlockFullError> {
        let bytes = self.pending_bytes + transaction_bytes(t);
        let cap = MAX_PENDING_BYTES - self.reserved_bytes;
        if self.pending.len() >= MAX_PENDING_TRANSACTIONS || bytes > cap {
            return Err(BlockFullError {
                next: self.last().index + 1,
                pending: self.pending.len(),
                bytes: self.pending_bytes,
                cap,
            });
        }
        Ok(())
    }

    /// Queues a transaction for the next block and returns that block's index. Call
    /// [`Chain::check_pending`] first: this does not refuse.
    pub fn add_pending(&mut self, t: Transaction) -> u64 {
        self.pending_bytes += transaction_bytes(&t);
        self.pending.push(t);
        self.last().index + 1
    }

    fn checker_of(&self, index: u64) -> Option<&ProofChecker> {
        let oldest = self.recent.front()?.0;
        let (i, checker) = self.recent.get(usize::try_from(index.checked_sub(oldest)?).ok()?)?;
        (*i == index).then_some(checker)
    }

    /// Returns the proof checkers of the newest blocks, for judging shares without the chain
    /// (see [`Recent`]).
    pub fn recent(&self) -> Recent {
        Recent { checkers: self.recent.iter().cloned().collect() }
    }

    /// Judges `sub` against the chain at `difficulty`. `now` (seconds since the epoch) only
    /// words the stale message ("won ... 1.3 s ago").
    ///
    /// A proof valid for the last block wins, unless the miner named another block in `index`.
    /// A proof valid for a recent earlier block (the named one, or any recent one) is stale,
    /// anything else invalid.
    pub fn judge(&self, sub: &ProofSubmission, difficulty: Difficulty, now: f64) -> Judgement {
        let last = self.last();
        let last_checker = self.checker_of(last.index).expect("the last block is recent");
        match sub.index {
            Some(i) if i > last.index => {
                return self.invalid(format!(
                    "block {i} does not exist yet; the last block is {}",
                    last.index
                ));
            }
            Some(i) if i < last.index => {
                return match self.checker_of(i) {
                    Some(c) if c.is_valid_proof(difficulty, sub.proof) => self.stale(i, now),
                    Some(_) => self.invalid(format!(
                        "proof {} is not valid for block {i} (and block {i} was already mined on)",
                        sub.proof
                    )),
                    None => self.invalid(format!(
                        "block {i} is too old; mine on the last block, {}",
                        last.index
                    )),
                };
            }
            _ => {}
        }
        if last_checker.is_valid_proof(difficulty, sub.proof) {
            return Judgement::Wins;
        }
        let stale = self
            .recent
            .iter()
            .rev()
            .skip(1)
            .find(|(_, c)| c.is_valid_proof(difficulty, sub.proof))
            .map(|(i, _)| *i);
        match stale {
            Some(i) => self.stale(i, now),
            None => self.invalid(format!(
                "proof {} is not valid for block {} (it needs {difficulty} leading hex zeroes)",
                sub.proof, last.index
            )),
        }
    }

    fn stale(&self, index: u64, now: f64) -> Judgement {
        // Block `index` was won by whoever is rewarded in its successor, forged at its timestamp.
        let successor = usize::try_from(index).ok().and_then(|i| self.blocks.get(i));
        let message = match successor {
            Some(next) => format!(
                "block #{} was already won by {} {:.1} s ago; mine on block #{}",
                next.index,
                next.winner().unwrap_or("nobody"),
                (now - next.timestamp).max(0.0),
                self.last().index + 1
            ),
            None => format!("block {index} was already mined on"),
        };
        Judgement::Rejected { reason: RejectReason::Stale, message }
    }

    fn invalid(&self, message: String) -> Judgement {
        Judgement::Rejected { reason: RejectReason::Invalid, message }
    }

    /// Returns the block that `proof` by `winner` forges on top of the last block at `now`:
    /// the pending transactions, then the reward. Does not change the chain; [`Chain::append`]
    /// does, once the block is stored.
    pub fn forge(&self, proof: u64, winner: &str, now: f64) -> Block {
        self.forge_with(&self.pending, &[Transaction::reward(winner)], proof, now)
    }

    /// Like [`Chain::forge`], but the block takes `pending` (the pending transactions as the
    /// database holds them when the block is stored) instead of the ones this chain knows, and
    /// `rewards` (the finder's last) instead of one coin to the finder.
    pub fn forge_with(
        &self,
        pending: &[Transaction],
        rewards: &[Transaction],
        proof: u64,
        now: f64,
    ) -> Block {
        let last = self.last();
        let mut transactions = pending.to_vec();
        transactions.extend_from_slice(rewards);
        Block {
            index: last.index + 1,
            timestamp: now,
            transactions,
            proof,
            previous_hash: last.hash().to_hex(),
        }
    }

    /// Appends a forged (and stored) block and clears the pending transactions it took.
    pub fn append(&mut self, block: Block) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.push(block);
    }
}

/// Returns the bytes `t` takes in a block string, with its `", "` separator.
fn transaction_bytes(t: &Transaction) -> usize {
    let value = serde_json::to_value(t).expect("a transaction is plain JSON");
    to_python_json(&value).len() + 2
}

#[cfg(test)]
mod tests;
