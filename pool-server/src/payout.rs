//! How a block's reward is paid: `--payout solo` (the course's rule: one coin to the proof's
//! sender) or `--payout pplns` (pay-per-last-N-shares).
//!
//! PPLNS: a block mints [`PPLNS_REWARD`] units. The finder gets 1 unit; the rest is split over
//! the pool's last accepted shares whose work adds up to N blocks' work (`--pplns-window N`:
//! N × 2^(4 × difficulty) hashes), newest first, the block's own proof first of all as a share
//! of the finder's target. Each share weighs the work it stands for (2^bits); the oldest one
//! counts only for the part of it inside the window. So the window is a quantity of work, not a
//! number of shares: cheap shares count for what they cost, and a miner that sends a thousand
//! 8-bit shares just before its block pushes out only the work those shares did (counted by
//! shares, it pushed out every honest share and took the whole reward). The weights are split
//! among the [`MAX_PAYEES`] ids with the most weight (ties by id), in proportion and exactly: each
//! gets the floor of its part, and the units left over go one each to the largest remainders
//! (ties by id), so the amounts always add up to the reward. The rewards are ordinary reward transactions
//! (`sender` "0") at the end of the block, the finder's last, so the chain stays the record:
//! `/balances` and any course client's chain agree with it exactly.

use std::collections::BTreeMap;

use protocol::block::REWARD_SENDER;
use protocol::share::block_bits;
use protocol::{Difficulty, Transaction};

/// The units a block mints under PPLNS: fine enough that a share of a millionth of the window
/// still earns a unit, and small enough that balances stay exact far beyond any classroom.
pub const PPLNS_REWARD: u64 = 1_000_000;
/// The default N of PPLNS: the shares of the last this many blocks' work are paid.
pub const DEFAULT_PPLNS_WINDOW: u32 = 2;
/// The most N may be.
pub const MAX_PPLNS_WINDOW: u32 = 1000;
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
    /// [`PPLNS_REWARD`] units over the last `window` blocks' work of shares.
    Pplns {
        /// N.
        window: u32,
    },
}

impl std::fmt::Display for Payout {
    /// `solo`, or `pplns over the last N blocks' work of shares`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payout::Solo => f.write_str("solo"),
            Payout::Pplns { window: 1 } => {
                f.write_str("pplns over the last block's work of shares")
            }
            Payout::Pplns { window } => {
                write!(f, "pplns over the last {window} blocks' work of shares")
            }
        }
    }
}

impl Payout {
    /// The scheme as stored in a shared database: a code that stays the same when the display
    /// text is reworded (`solo`, `pplns-work:N`).
    pub fn code(self) -> String {
        match self {
            Payout::Solo => "solo".to_owned(),
            Payout::Pplns { window } => format!("pplns-work:{window}"),
        }
    }

    /// Reads a [`Payout::code`].
    pub fn from_code(code: &str) -> Option<Payout> {
        match code.split_once(':') {
            None if code == "solo" => Some(Payout::Solo),
            Some(("pplns-work", n)) => n.parse().ok().map(|window| Payout::Pplns { window }),
            _ => None,
        }
    }

    /// The work of the shares a forge must read at `difficulty`, in hashes (0 for solo).
    pub fn window(self, difficulty: Difficulty) -> u128 {
        match self {
            Payout::Solo => 0,
            Payout::Pplns { window } => u128::from(window) << block_bits(difficulty).min(100),
        }
    }

    /// The bytes the rewards may take in a block string, beyond the one reward every block has.
    pub fn extra_reward_bytes(self) -> usize {
        match self {
            Payout::Solo => 0,
            Payout::Pplns { .. } => (MAX_PAYEES - 1) * MAX_REWARD_BYTES,
        }
    }

    /// Returns the reward transactions of a block found by `finder` at `finder_bits` at
    /// `difficulty`, with `shares` the pool's last accepted shares (newest first, `(id, bits)`;
    /// at least the window's work, when the pool has that much).
    pub fn rewards(
        self,
        finder: &str,
        finder_bits: u8,
        shares: &[(String, u8)],
        difficulty: Difficulty,
    ) -> Vec<Transaction> {
        match self {
            Payout::Solo => vec![Transaction::reward(finder)],
            Payout::Pplns { .. } => {
                // The window's work, taken newest first: the block's own proof, then the
                // shares, the last one only in part.
                let mut left = self.window(difficulty);
                let found = std::iter::once((finder, finder_bits));
                let weights = found
                    .chain(shares.iter().map(|(id, bits)| (id.as_str(), *bits)))
                    .map_while(|(id, bits)| {
                        let weight = (1u128 << bits.min(100)).min(left);
                        left -= weight;
                        (weight > 0).then_some((id, weight))
                    });
                pplns(finder, weights, PPLNS_REWARD)
            }
        }
    }
}

fn reward(id: &str, amount: u64) -> Transaction {
    Transaction { sender: REWARD_SENDER.to_owned(), recipient: id.to_owned(), amount }
}

/// Splits `total` as the module says: 1 to `finder`, the rest by the shares' weights.
fn pplns<'a>(
    finder: &str,
    shares: impl Iterator<Item = (&'a str, u128)>,
    total: u64,
) -> Vec<Transaction> {
    let mut weight: BTreeMap<&str, u128> = BTreeMap::new();
    for (id, w) in shares {
        *weight.entry(id).or_default() += w;
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

    fn d(zeros: u64) -> Difficulty {
        Difficulty::new(zeros).expect("difficulty")
    }

    fn total(rewards: &[Transaction]) -> u64 {
        rewards.iter().map(|t| t.amount).sum()
    }

    #[test]
    fn solo_pays_one_coin_to_the_finder() {
        let r = Payout::Solo.rewards("alice", 20, &[("bob".to_owned(), 20)], d(6));
        assert_eq!(r, vec![Transaction::reward("alice")]);
    }

    #[test]
    fn pplns_splits_by_work_exactly_and_pays_the_finder_last() {
        // bob: 2 shares of 2^10; carol: 1 share of 2^11 — equal work; alice found at 2^10.
        let shares = [("bob".to_owned(), 10), ("carol".to_owned(), 11), ("bob".to_owned(), 10)];
        let r = Payout::Pplns { window: 8 }.rewards("alice", 10, &shares, d(3));
        assert_eq!(total(&r), PPLNS_REWARD);
        assert_eq!(r.last().map(|t| t.recipient.as_str()), Some("alice"));
        let of = |id: &str| r.iter().find(|t| t.recipient == id).map_or(0, |t| t.amount);
        // Work 2048 : 2048 : 1024 of 999,999, the finder's extra unit aside.
        assert!(of("bob").abs_diff(of("carol")) <= 1, "{r:?}");
        assert!((of("bob") as f64 / 999_999.0 - 0.4).abs() < 1e-5, "{r:?}");
        assert!(r.iter().all(|t| t.sender == "0"));
    }

    #[test]
    fn only_the_window_s_work_counts_and_payees_are_capped() {
        // One block of 8 bits: the finder's 2^7 and "new"'s 2^7 fill it; "old" is outside.
        let old = [("new".to_owned(), 7), ("old".to_owned(), 7)];
        let r = Payout::Pplns { window: 1 }.rewards("finder", 7, &old, d(2));
        assert!(r.iter().all(|t| t.recipient != "old"), "{r:?}");
        // The oldest share counts only for its part inside the window: "edge" has 2^9 of work
        // but only 2^8 of the window (2 × 2^8) is left for it after the finder's 2^8.
        let edge = [("edge".to_owned(), 9), ("beyond".to_owned(), 9)];
        let r = Payout::Pplns { window: 2 }.rewards("finder", 8, &edge, d(2));
        let of = |id: &str| r.iter().find(|t| t.recipient == id).map_or(0, |t| t.amount);
        assert_eq!(of("beyond"), 0, "{r:?}");
        assert!(of("edge").abs_diff(of("finder")) <= 1, "{r:?}");
        let many: Vec<(String, u8)> = (0..200).map(|i| (format!("m{i:03}"), 8)).collect();
        let r = Payout::Pplns { window: 1000 }.rewards("finder", 8, &many, d(6));
        assert_eq!(r.len(), MAX_PAYEES);
        assert_eq!(total(&r), PPLNS_REWARD);
    }

    #[test]
    fn cheap_shares_before_a_block_push_out_only_their_work() {
        // Honest miners filled a 2-block window at 20 bits (block: 5 zeroes = 20 bits) with
        // shares of 16 bits; then the finder sends 999 shares of 8 bits and its block, found at
        // 8 bits. Counted by shares it would take everything; by work, about 2^18 / 2^21.
        let mut shares: Vec<(String, u8)> = vec![("cheap".to_owned(), 8); 999];
        shares.extend((0..64).map(|i| (format!("honest{}", i % 4), 16)));
        let r = Payout::Pplns { window: 2 }.rewards("cheap", 8, &shares, d(5));
        let cheap = r.iter().find(|t| t.recipient == "cheap").map_or(0, |t| t.amount);
        let fair = PPLNS_REWARD as f64 * 1000.0 * 256.0 / 2f64.powi(21);
        assert!((cheap as f64 - fair).abs() < 2.0, "cheap got {cheap}, its work is {fair}");
        assert_eq!(total(&r), PPLNS_REWARD);
    }

    #[test]
    fn codes_are_stable() {
        for p in [Payout::Solo, Payout::Pplns { window: 2 }, Payout::Pplns { window: 1000 }] {
            assert_eq!(Payout::from_code(&p.code()), Some(p));
        }
        assert_eq!(Payout::Pplns { window: 3 }.code(), "pplns-work:3");
        assert_eq!(Payout::from_code("pplns over the last 1000 shares"), None);
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
            let r = Payout::Pplns { window: 1 + round % 3 }.rewards("f", 5, &shares, d(2));
            assert_eq!(total(&r), PPLNS_REWARD, "round {round}: {r:?}");
            assert!(r.iter().all(|t| t.amount > 0));
        }
    }
}
