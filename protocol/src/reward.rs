//! What a block paid, read off its reward transactions (`"sender": "0"`, at the block's end), so
//! that a client can tell how a pool pays without asking: a solo pool mints one coin a block, a
//! PPLNS pool [`UNITS_PER_BLOCK`] units, which clients show as coins with their six decimals
//! (`223.554847`). Balances and amounts stay exact integers on the wire; only their display
//! changes.

use serde_json::Value;

use crate::block::REWARD_SENDER;

/// Units a PPLNS block mints (pool-server's `--payout pplns`); also the units of one coin, as
/// clients show PPLNS amounts.
pub const UNITS_PER_BLOCK: u64 = 1_000_000;

/// The rewards at the end of one block, in the block's order (the finder's last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewards {
    /// Each reward's recipient and amount.
    pub paid: Vec<(String, u64)>,
}

/// How a pool pays, as its blocks show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// One coin to the block's finder (the course's rule).
    Solo,
    /// [`UNITS_PER_BLOCK`] units split over the pool's recent shares: amounts are units.
    Pplns,
}

impl Rewards {
    /// Returns the rewards of `block` (any JSON shape): the run of `"sender": "0"` transactions
    /// that ends its `transactions`; `None` when it ends with none (genesis, or not a block).
    pub fn of(block: &Value) -> Option<Rewards> {
        let transactions = block.get("transactions")?.as_array()?;
        let reward = |t: &Value| {
            if t.get("sender")?.as_str()? != REWARD_SENDER {
                return None;
            }
            Some((t.get("recipient")?.as_str()?.to_owned(), t.get("amount")?.as_u64()?))
        };
        let mut paid: Vec<(String, u64)> = transactions.iter().rev().map_while(reward).collect();
        paid.reverse();
        (!paid.is_empty()).then_some(Rewards { paid })
    }

    /// Returns the block's finder: the last reward's recipient.
    pub fn finder(&self) -> &str {
        self.paid.last().map_or("", |(id, _)| id.as_str())
    }

    /// Returns how the block was paid: PPLNS when its rewards add up to [`UNITS_PER_BLOCK`]
    /// or more, else solo.
    pub fn scheme(&self) -> Scheme {
        let total = self.paid.iter().fold(0u64, |sum, (_, amount)| sum.saturating_add(*amount));
        if total >= UNITS_PER_BLOCK { Scheme::Pplns } else { Scheme::Solo }
    }

    /// Returns what the block paid `id` (0 when nothing).
    pub fn to(&self, id: &str) -> u64 {
        self.paid
            .iter()
            .filter(|(to, _)| to == id)
            .fold(0u64, |sum, (_, amount)| sum.saturating_add(*amount))
    }
}

impl Scheme {
    /// Formats an amount or a balance as this scheme counts coins: solo amounts as they are,
    /// PPLNS units as coins with six decimals (`223554847` → `223.554847`).
    pub fn coins(self, amount: i128) -> String {
        match self {
            Scheme::Solo => amount.to_string(),
            Scheme::Pplns => {
                let sign = if amount < 0 { "-" } else { "" };
                let (abs, units) = (amount.unsigned_abs(), u128::from(UNITS_PER_BLOCK));
                format!("{sign}{}.{:06}", abs / units, abs % units)
            }
        }
    }
}

#[cfg(test)]
mod tests;
