//! Exact coin balances: everything an id received minus everything it sent, in `i128`, which
//! cannot overflow (a transaction moves at most 2^64 − 1 coins, and no chain holds 2^63
//! transactions). [`Balances`] also enforces [`MAX_COINS`]: a transfer that could leave an id's
//! balance beyond ±[`MAX_COINS`] once the next block holds it is refused, so `/balances` and
//! the dashboard always show exact numbers that add up to the coins minted.
//!
//! Pure data, no I/O: the `ledger` keeps one in step with the chain, under its lock.

use std::collections::HashMap;

use protocol::block::REWARD_SENDER;
use protocol::message::MAX_COINS;
use protocol::{Block, Transaction};

/// Adds one block's transactions to `coins`: rewards (sender `"0"`) only credit, transfers
/// debit the sender and credit the recipient.
pub fn apply_block(coins: &mut HashMap<String, i128>, block: &Block) {
    for t in &block.transactions {
        apply(coins, t);
    }
}

fn apply(coins: &mut HashMap<String, i128>, t: &Transaction) {
    let amount = i128::from(t.amount);
    if t.sender != REWARD_SENDER {
        *coins.entry(t.sender.clone()).or_default() -= amount;
    }
    *coins.entry(t.recipient.clone()).or_default() += amount;
}

/// A transfer refused because a balance would leave ±[`MAX_COINS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this transaction would take {id:?}'s balance to {balance} coins once the next block holds \
     it (counting the transactions already waiting); balances are kept within ±{MAX_COINS}"
)]
pub struct BalanceLimitError {
    /// The id whose balance would leave the range.
    pub id: String,
    /// That balance.
    pub balance: i128,
}

/// Balances over the forged blocks, plus the net effect of the pending transactions.
#[derive(Debug, Default)]
pub struct Balances {
    confirmed: HashMap<String, i128>,
    pending: HashMap<String, i128>,
}

impl Balances {
    /// Returns the balances of `blocks` with `pending` waiting for the next block.
    pub fn new(blocks: &[Block], pending: &[Transaction]) -> Self {
        let mut b = Balances::default();
        for block in blocks {
            apply_block(&mut b.confirmed, block);
        }
        for t in pending {
            apply(&mut b.pending, t);
        }
        b
    }

    /// Returns the coins `id` will hold once the pending transactions are in a block.
    fn after_pending(&self, id: &str) -> i128 {
        self.confirmed.get(id).copied().unwrap_or(0) + self.pending.get(id).copied().unwrap_or(0)
    }

    /// Checks that `t` keeps its sender's and recipient's balances within ±[`MAX_COINS`] once
    /// the next block holds it and every pending transaction. (A balance already beyond it, by
    /// mining rewards, may still move back toward it.)
    ///
    /// # Errors
    /// Names the id whose balance would leave the range.
    pub fn check(&self, t: &Transaction) -> Result<(), BalanceLimitError> {
        if t.sender == t.recipient {
            return Ok(());
        }
        let amount = i128::from(t.amount);
        let limit = i128::from(MAX_COINS);
        for (id, delta) in [(&t.sender, -amount), (&t.recipient, amount)] {
            let before = self.after_pending(id);
            let balance = before + delta;
            if balance.abs() > limit && balance.abs() > before.abs() {
                return Err(BalanceLimitError { id: id.clone(), balance });
            }
        }
        Ok(())
    }

    /// Counts `t` as pending (after [`Balances::check`]).
    pub fn add_pending(&mut self, t: &Transaction) {
        apply(&mut self.pending, t);
    }

    /// Replaces the pending transactions with `pending` (as a shared database holds them now).
    pub fn set_pending(&mut self, pending: &[Transaction]) {
        self.pending.clear();
        for t in pending {
            apply(&mut self.pending, t);
        }
    }

    /// Counts a forged block (which took every pending transaction).
    pub fn record(&mut self, block: &Block) {
        self.pending.clear();
        apply_block(&mut self.confirmed, block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(from: &str, to: &str, amount: u64) -> Transaction {
        Transaction { sender: from.into(), recipient: to.into(), amount }
    }

    #[test]
    fn pending_transfers_count_toward_the_limit() {
        let max = MAX_COINS as u64;
        let mut b = Balances::new(&[Block::genesis(0.0)], &[]);
        let add = |b: &mut Balances, t: Transaction| {
            b.check(&t)?;
            b.add_pending(&t);
            Ok::<(), BalanceLimitError>(())
        };
        assert_eq!(add(&mut b, transfer("a", "b", max)), Ok(()));
        // b would hold MAX + 1 once the block holds both.
        let err = add(&mut b, transfer("c", "b", 1)).expect_err("b would pass the limit");
        assert_eq!((err.id.as_str(), err.balance), ("b", i128::from(MAX_COINS) + 1));
        // a would owe more than MAX.
        assert!(add(&mut b, transfer("a", "c", 1)).is_err());
        // Paying back is fine, and to oneself changes nothing.
        assert_eq!(add(&mut b, transfer("b", "a", 2)), Ok(()));
        assert_eq!(add(&mut b, transfer("z", "z", max)), Ok(()));
        let block = Block {
            index: 2,
            timestamp: 1.0,
            transactions: vec![transfer("a", "b", max), Transaction::reward("b")],
            proof: 0,
            previous_hash: "h".into(),
        };
        b.record(&block);
        // The reward took b past the limit: more is refused, paying out is not.
        assert_eq!(b.after_pending("b"), i128::from(MAX_COINS) + 1);
        assert!(add(&mut b, transfer("x", "b", 1)).is_err());
        assert_eq!(add(&mut b, transfer("b", "x", 1)), Ok(()));
    }

    #[test]
    fn sums_are_exact_beyond_64_bits() {
        let big = u64::MAX;
        let block = Block {
            index: 2,
            timestamp: 1.0,
            transactions: vec![transfer("a", "b", big), transfer("a", "b", big)],
            proof: 0,
            previous_hash: "h".into(),
        };
        let mut coins = HashMap::new();
        apply_block(&mut coins, &block);
        assert_eq!(coins["b"], 2 * i128::from(big));
        assert_eq!(coins.values().sum::<i128>(), 0);
    }
}
