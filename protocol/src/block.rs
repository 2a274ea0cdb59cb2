//! Blocks and transactions of the course's chain, and the block hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::canonical::to_python_json;

/// The proof of the genesis block, as in the course's server.
pub const GENESIS_PROOF: u64 = 100;
/// The `previous_hash` of the genesis block, as in the course's server.
pub const GENESIS_PREVIOUS_HASH: &str = "1";
/// The sender of a mining reward.
pub const REWARD_SENDER: &str = "0";
/// The amount of a mining reward: one coin.
pub const REWARD_AMOUNT: u64 = 1;
/// The largest block string (`json.dumps(block, sort_keys=True)`) this pool's server forges. Its
/// WebSocket `block` frame is no larger plus 64 bytes (the frame's JSON is never longer than the
/// block string: no spaces after separators, UTF-8 instead of `\uXXXX` escapes), far below the
/// 1 MiB a Python `websockets` client accepts by default and the 16 MiB frames and 64 MiB messages
/// of `tungstenite`'s defaults. The server refuses transactions that would make the next block
/// larger.
pub const MAX_BLOCK_BYTES: usize = 256 * 1024;

/// A transfer recorded in a block. A mining reward has `sender == "0"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Who pays, `"0"` for a reward.
    pub sender: String,
    /// Who is paid.
    pub recipient: String,
    /// How much, in whole coins.
    pub amount: u64,
}

impl Transaction {
    /// Returns the reward transaction that pays one coin to `id`.
    pub fn reward(id: &str) -> Self {
        Transaction {
            sender: REWARD_SENDER.to_owned(),
            recipient: id.to_owned(),
            amount: REWARD_AMOUNT,
        }
    }

    /// Returns true when this is a mining reward.
    pub fn is_reward(&self) -> bool {
        self.sender == REWARD_SENDER
    }
}

/// A block of the chain, with exactly the course's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Position in the chain; the genesis block is 1.
    pub index: u64,
    /// Seconds since the Unix epoch, a float like Python's `time()`.
    pub timestamp: f64,
    /// The transactions this block records.
    pub transactions: Vec<Transaction>,
    /// The proof that was found for the previous block (100 for genesis).
    pub proof: u64,
    /// The hash of the previous block (`"1"` for genesis).
    pub previous_hash: String,
}

impl Block {
    /// Returns the genesis block created at `timestamp`.
    pub fn genesis(timestamp: f64) -> Self {
        Block {
            index: 1,
            timestamp,
            transactions: Vec::new(),
            proof: GENESIS_PROOF,
            previous_hash: GENESIS_PREVIOUS_HASH.to_owned(),
        }
    }

    /// Returns the block string: Python's `json.dumps(block, sort_keys=True)`.
    pub fn block_string(&self) -> String {
        to_python_json(&self.to_value())
    }

    /// Returns the block as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a Block has string keys and finite floats")
    }

    /// Returns this block's hash, which the next block carries as `previous_hash`.
    pub fn hash(&self) -> BlockHash {
        BlockHash(Sha256::digest(self.block_string().as_bytes()).into())
    }

    /// Returns the id of the miner rewarded in this block, if any.
    pub fn winner(&self) -> Option<&str> {
        self.transactions.iter().rev().find(|t| t.is_reward()).map(|t| t.recipient.as_str())
    }
}

/// The SHA-256 of a block string.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// Returns the lower-case hex form used as `previous_hash`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_block_string_matches_python() {
        // json.dumps({'index': 1, 'timestamp': 1732531641.0, 'transactions': [], 'proof': 100,
        //             'previous_hash': '1'}, sort_keys=True)
        let genesis = Block::genesis(1732531641.0);
        assert_eq!(
            genesis.block_string(),
            r#"{"index": 1, "previous_hash": "1", "proof": 100, "timestamp": 1732531641.0, "transactions": []}"#
        );
        // hashlib.sha256(that.encode()).hexdigest()
        assert_eq!(
            genesis.hash().to_hex(),
            "224e2f134a91b5c47aaec2272b728700b08e0051689adda9e36e2134e281f7a5"
        );
    }

    #[test]
    fn winner_is_the_reward_recipient() {
        let mut block = Block::genesis(0.0);
        assert_eq!(block.winner(), None);
        block.transactions.push(Transaction {
            sender: "a".into(),
            recipient: "b".into(),
            amount: 3,
        });
        block.transactions.push(Transaction::reward("José 🚀"));
        assert_eq!(block.winner(), Some("José 🚀"));
    }
}
