//! Shares: proofs at a lower, per-connection difficulty, counted in leading zero **bits** of the
//! digest (so a target can step by ×2; the block difficulty's hex zeroes are 4 bits each).
//!
//! A WebSocket client opts in with `{"type":"shares"}`; the server then sends
//! `{"type":"share_target","bits":B}` and again whenever it changes. A proof (the usual `proof`
//! message) whose digest meets the block difficulty is a block, as before; one that meets only the
//! connection's target is a share, answered `{"type":"share",...}`. Clients that never opt in see
//! none of this.

use serde::Serialize;

use crate::pow::Difficulty;

/// The fewest bits a share target may ask for.
pub const MIN_SHARE_BITS: u8 = 1;
/// The most bits a share target may ask for (a block needs at most 64).
pub const MAX_SHARE_BITS: u8 = 64;

/// Returns how many leading zero bits `digest` has (0..=256).
pub fn leading_zero_bits(digest: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Returns the leading zero bits a block at `difficulty` needs (4 per hex zero).
pub fn block_bits(difficulty: Difficulty) -> u8 {
    difficulty.zeros().saturating_mul(4)
}

/// Returns the hashes a share of `bits` stands for on average: 2^bits.
pub fn share_work(bits: u8) -> f64 {
    2f64.powi(i32::from(bits))
}

/// Why a share was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ShareReject {
    /// Valid for a block already won.
    Stale,
    /// Below the connection's share target (and not a block).
    Invalid,
    /// The same proof for the same block was already counted.
    Duplicate,
}

impl ShareReject {
    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareReject::Stale => "stale",
            ShareReject::Invalid => "invalid",
            ShareReject::Duplicate => "duplicate",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stale" => Some(ShareReject::Stale),
            "invalid" => Some(ShareReject::Invalid),
            "duplicate" => Some(ShareReject::Duplicate),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leading_zero_bits() {
        let mut d = [0xffu8; 32];
        assert_eq!(leading_zero_bits(&d), 0);
        d[0] = 0x01;
        assert_eq!(leading_zero_bits(&d), 7);
        d[0] = 0;
        d[1] = 0x10;
        assert_eq!(leading_zero_bits(&d), 11);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }

    #[test]
    fn hex_zeroes_are_four_bits() {
        let six = Difficulty::new(6).expect("6");
        assert_eq!(block_bits(six), 24);
        assert!(six.is_met_by(&[
            0, 0, 0, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0
        ]));
    }
}
