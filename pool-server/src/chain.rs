//! The chain and its rules: validating a stored chain, judging a proof (win, stale or invalid)
//! and forging the next block.
//!
//! Pure and synchronous: no SQLite, no async, no clock reads (callers pass `now`). The server
//! pairs a [`Chain`] with the `store` under one lock (see `ledger`), which is what makes
//! "validate, then append" a single atomic step.

use std::collections::VecDeque;

use protocol::{Block, Difficulty, ProofSubmission, RejectReason, Transaction};

use crate::store::StoredBlock;

/// How many of the newest blocks keep their block string cached, to tell a stale proof (valid
/// for a block already won) from an invalid one.
pub const RECENT_BLOCKS: usize = 64;

/// The whole chain in memory, the block strings of the newest blocks, and the transactions
/// waiting for the next block.
#[derive(Debug)]
pub struct Chain {
    blocks: Vec<Block>,
    /// `(index, block string)` of the newest [`RECENT_BLOCKS`] blocks, oldest first.
    recent: VecDeque<(u64, String)>,
    pending: Vec<Transaction>,
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
        let mut chain = Chain { blocks: Vec::new(), recent: VecDeque::new(), pending: Vec::new() };
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
        let mut chain = Chain { blocks: Vec::new(), recent: VecDeque::new(), pending };
        for (pos, s) in stored.into_iter().enumerate() {
            let expected = pos as u64 + 1;
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
            match chain.blocks.last() {
                None => {
                    let genesis = Block::genesis(s.block.timestamp);
                    if s.block != genesis {
                        return Err(bad("is not a genesis block".to_owned()));
                    }
                }
                Some(prev) => {
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
                    if !difficulty.is_valid_proof(&prev.block_string(), s.block.proof) {
                        return Err(bad(format!(
                            "proof {} is not valid for block {} at difficulty {difficulty}",
                            s.block.proof, prev.index
                        )));
                    }
                    if s.block.winner().is_none() {
                        return Err(bad("has no mining reward".to_owned()));
                    }
                }
            }
            chain.push(s.block);
        }
        if chain.blocks.is_empty() {
            return Err(CorruptChainError { index: 1, problem: "the chain is empty".to_owned() });
        }
        Ok(chain)
    }

    fn push(&mut self, block: Block) {
        self.recent.push_back((block.index, block.block_string()));
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

    /// Queues a transaction for the next block and returns that block's index.
    pub fn add_pending(&mut self, t: Transaction) -> u64 {
        self.pending.push(t);
        self.last().index + 1
    }

    fn block_string_of(&self, index: u64) -> Option<&str> {
        self.recent.iter().find(|(i, _)| *i == index).map(|(_, s)| s.as_str())
    }

    /// Judges `sub` against the chain at `difficulty`. `now` (seconds since the epoch) only
    /// words the stale message ("won ... 1.3 s ago").
    ///
    /// A proof valid for the last block wins, unless the miner named another block in `index`.
    /// A proof valid for a recent earlier block (the named one, or any recent one) is stale,
    /// anything else invalid.
    pub fn judge(&self, sub: &ProofSubmission, difficulty: Difficulty, now: f64) -> Judgement {
        let last = self.last();
        let last_string = self.block_string_of(last.index).expect("the last block is recent");
        match sub.index {
            Some(i) if i > last.index => {
                return self.invalid(format!(
                    "block {i} does not exist yet; the last block is {}",
                    last.index
                ));
            }
            Some(i) if i < last.index => {
                return match self.block_string_of(i) {
                    Some(s) if difficulty.is_valid_proof(s, sub.proof) => self.stale(i, now),
                    Some(_) => self.invalid(format!(
                        "proof {} is not valid for block {i} (and block {i} was already won)",
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
        if difficulty.is_valid_proof(last_string, sub.proof) {
            return Judgement::Wins;
        }
        let stale = self
            .recent
            .iter()
            .rev()
            .skip(1)
            .find(|(_, s)| difficulty.is_valid_proof(s, sub.proof))
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
                "block {index} was already won by {} {:.1} s ago; mine on block {}",
                next.winner().unwrap_or("nobody"),
                (now - next.timestamp).max(0.0),
                self.last().index
            ),
            None => format!("block {index} was already won"),
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
        let last = self.last();
        let mut transactions = self.pending.clone();
        transactions.push(Transaction::reward(winner));
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
        self.push(block);
    }
}

#[cfg(test)]
mod tests;
