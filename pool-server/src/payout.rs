//! How a block's reward is paid: `--payout solo` (the course's rule: one coin to the proof's
//! sender) or `--payout pplns` (pay-per-last-N-shares).
//!
//! PPLNS: a block mints [`PPLNS_REWARD`] units. The finder gets 1 unit; the rest is split over
//! the last N accepted shares of the pool (`--pplns-shares`, the block's own proof included as a
//! share of the finder's target), each weighted by the work it stands for (2^bits), among the
//! [`MAX_PAYEES`] ids with the most weight (ties by id), in proportion and exactly: each gets the
//! floor of its part, and the units left over go one each to the largest remainders (ties by id),
//! so the amounts always add up to the reward. The rewards are ordinary reward transactions
//! (`sender` "0") at the end of the block, the finder's last, so the chain stays the record:
//! `/balances` and any course client's chain agree with it exactly.

use std::collections::BTreeMap;

use protocol::Transaction;
use protocol::block::REWARD_SENDER;

/// The units a block mints under PPLNS: fine enough that a share of a millionth of the window
/// still earns a unit, and small enough that balances stay exact far beyond any classroom.
pub const PPLNS_REWARD: u64 = 1_000_000;
/// The default N of PPLNS: the last this many shares are paid.
pub const DEFAULT_PPLNS_SHARES: usize = 1000;
/// The most N may be.
pub const MAX_PPLNS_SHARES: usize = 100_000;
/// The most ids one block pays (the finder included), so that the rewards fit in the block
/// beside the pending transactions.
pub const MAX_PAYEES: usize = 64;
/// The bytes one reward transaction may take in a block string at most: a 128-character id of
/// the longest escapes (12 bytes each, a surrogate pair) plus the keys and the amount, rounded up.
pub const MAX_REWARD_BYTES: usize = 1600;

/// How rewards are paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payout {
    /// One coin to the proof's sender (the course's rule).
    #[default]
    Solo,
    /// [`PPLNS_REWARD`] units over the last `shares` shares.
    Pplns {
        /// N.
        shares: usize,
    },
}

impl std::fmt::Display for Payout {
    /// `solo`, or `pplns over the last N shares`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payout::Solo => f.write_str("solo"),
            Payout::Pplns { shares } => write!(f, "pplns over the last {shares} shares"),
        }
    }
}

impl Payout {
    /// The shares a forge must read (0 for solo).
    pub fn window(self) -> usize {
        match self {
            Payout::Solo => 0,
            Payout::Pplns { shares } => shares,
        }
    }

    /// The bytes the rewards may take in a block string, beyond the one reward every block has.
    pub fn extra_reward_bytes(self) -> usize {
        match self {
            Payout::Solo => 0,
            Payout::Pplns { .. } => (MAX_PAYEES - 1) * MAX_REWARD_BYTES,
        }
    }

    /// Returns the reward transactions of a block found by `finder` at `finder_bits`, with
    /// `shares` the pool's last accepted shares (newest first, `(id, bits)`; at most the window).
    pub fn rewards(
        self,
        finder: &str,
        finder_bits: u8,
        shares: &[(String, u8)],
    ) -> Vec<Transaction> {
        match self {
            Payout::Solo => vec![Transaction::reward(finder)],
            Payout::Pplns { shares: n } => {
                let window = shares.iter().take(n.saturating_sub(1));
                let found = std::iter::once((finder, finder_bits));
                let weights = found.chain(window.map(|(id, bits)| (id.as_str(), *bits)));
                pplns(finder, weights, PPLNS_REWARD)
            }
        }
    }
}

fn reward(id: &str, amount: u64) -> Transaction {
    Transaction { sender: REWARD_SENDER.to_owned(), recipient: id.to_owned(), amount }
}

/// Splits `total` as the module says: 1 to `finder`, the rest by weight 2^bits.
fn pplns<'a>(
    finder: &str,
    shares: impl Iterator<Item = (&'a str, u8)>,
    total: u64,
) -> Vec<Transaction> {
    let mut weight: BTreeMap<&str, u128> = BTreeMap::new();
    for (id, bits) in shares {
        *weight.entry(id).or_default() += 1u128 << bits.min(100);
    }
    // The heaviest ids, ties by id; the finder is always among them.
    let mut ranked: Vec<(&str, u128)> = weight.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let finder_weight = ranked.iter().find(|(id, _)| *id == finder).map_or(0, |(_, w)| *w);
    ranked.retain(|(id, _)| *id != finder);
    ranked.truncate(MAX_PAYEES - 1);
    ranked.push((finder, finder_weight));
    // The finder's own proof is one of the shares, so the sum is never 0.
    let sum: u128 = ranked.iter().map(|(_, w)| w).sum::<u128>().max(1);
    let rest = u128::from(total.saturating_sub(1));
    let mut amounts: Vec<(&str, u128, u128)> =
        ranked.iter().map(|(id, w)| (*id, rest * w / sum, rest * w % sum)).collect();
    let mut left = rest - amounts.iter().map(|(_, a, _)| a).sum::<u128>();
    let mut order: Vec<usize> = (0..amounts.len()).collect();
    order.sort_by(|&i, &j| amounts[j].2.cmp(&amounts[i].2).then(amounts[i].0.cmp(amounts[j].0)));
    for i in order {
        if left == 0 {
            break;
        }
        amounts[i].1 += 1;
        left -= 1;
    }
    let finder_amount = amounts.pop().map_or(0, |f| f.1) + 1;
    amounts.sort_by(|a, b| a.0.cmp(b.0));
    let mut rewards: Vec<Transaction> = amounts
        .into_iter()
        .filter(|(_, amount, _)| *amount > 0)
        .map(|(id, amount, _)| reward(id, u64::try_from(amount).unwrap_or(u64::MAX)))
        .collect();
    rewards.push(reward(finder, u64::try_from(finder_amount).unwrap_or(u64::MAX)));
    rewards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(rewards: &[Transaction]) -> u64 {
        rewards.iter().map(|t| t.amount).sum()
    }

    #[test]
    fn solo_pays_one_coin_to_the_finder() {
        let r = Payout::Solo.rewards("alice", 20, &[("bob".to_owned(), 20)]);
        assert_eq!(r, vec![Transaction::reward("alice")]);
    }

    #[test]
    fn pplns_splits_by_work_exactly_and_pays_the_finder_last() {
        // bob: 2 shares of 2^10; carol: 1 share of 2^11 — equal work; alice found at 2^10.
        let shares = [("bob".to_owned(), 10), ("carol".to_owned(), 11), ("bob".to_owned(), 10)];
        let r = Payout::Pplns { shares: 100 }.rewards("alice", 10, &shares);
        assert_eq!(total(&r), PPLNS_REWARD);
        assert_eq!(r.last().map(|t| t.recipient.as_str()), Some("alice"));
        let of = |id: &str| r.iter().find(|t| t.recipient == id).map_or(0, |t| t.amount);
        // Work 2048 : 2048 : 1024 of 999,999, the finder's extra unit aside.
        assert!(of("bob").abs_diff(of("carol")) <= 1, "{r:?}");
        assert!((of("bob") as f64 / 999_999.0 - 0.4).abs() < 1e-5, "{r:?}");
        assert!(r.iter().all(|t| t.sender == "0"));
    }

    #[test]
    fn only_the_last_n_shares_count_and_payees_are_capped() {
        let old = [("new".to_owned(), 8), ("old".to_owned(), 8)];
        let r = Payout::Pplns { shares: 2 }.rewards("finder", 8, &old);
        assert!(r.iter().all(|t| t.recipient != "old"), "{r:?}");
        let many: Vec<(String, u8)> = (0..200).map(|i| (format!("m{i:03}"), 8)).collect();
        let r = Payout::Pplns { shares: 1000 }.rewards("finder", 8, &many);
        assert_eq!(r.len(), MAX_PAYEES);
        assert_eq!(total(&r), PPLNS_REWARD);
    }

    #[test]
    fn any_split_adds_up() {
        let mut seed = 7u64;
        for round in 0..200 {
            let mut shares = Vec::new();
            for _ in 0..(round % 50) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shares.push((format!("id{}", seed % 13), 4 + (seed >> 60) as u8));
            }
            let r = Payout::Pplns { shares: 30 }.rewards("f", 5, &shares);
            assert_eq!(total(&r), PPLNS_REWARD, "round {round}: {r:?}");
            assert!(r.iter().all(|t| t.amount > 0));
        }
    }
}
