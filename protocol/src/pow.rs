//! Proof of work: a proof is valid when `sha256(block_string + decimal(proof))` starts with
//! D zero hex digits.

use sha2::{Digest, Sha256};
use std::fmt;

/// The number of leading zero hex digits a proof's digest needs (1 to 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Difficulty(u8);

/// A difficulty outside 1..=64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("difficulty must be between 1 and 64 leading hex zeroes, got {0}")]
pub struct DifficultyError(pub u64);

impl Difficulty {
    /// The course's difficulty: six leading hex zeroes.
    pub const DEFAULT: Difficulty = Difficulty(6);
    /// The most leading zeroes a SHA-256 hex digest can have.
    pub const MAX: u8 = 64;

    /// Returns the difficulty of `zeros` leading hex zeroes.
    ///
    /// # Errors
    /// When `zeros` is 0 or more than 64.
    pub fn new(zeros: u64) -> Result<Self, DifficultyError> {
        match u8::try_from(zeros) {
            Ok(z) if (1..=Self::MAX).contains(&z) => Ok(Difficulty(z)),
            _ => Err(DifficultyError(zeros)),
        }
    }

    /// Returns the number of leading hex zeroes.
    pub fn zeros(self) -> u8 {
        self.0
    }

    /// Returns true when `digest` starts with at least this many zero hex digits.
    pub fn is_met_by(self, digest: &[u8; 32]) -> bool {
        let zeros = usize::from(self.0);
        let full = zeros / 2;
        digest[..full].iter().all(|b| *b == 0) && (zeros % 2 == 0 || digest[full] >> 4 == 0)
    }

    /// Returns the expected number of attempts to find a proof: 16^zeros.
    pub fn expected_attempts(self) -> f64 {
        16f64.powi(i32::from(self.0))
    }

    /// Returns true when `proof` is valid for the block whose block string is `block_string`.
    pub fn is_valid_proof(self, block_string: &str, proof: u64) -> bool {
        self.is_met_by(&proof_digest(block_string, proof))
    }
}

impl Default for Difficulty {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Difficulty {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Difficulty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let zeros = u64::deserialize(d)?;
        Difficulty::new(zeros).map_err(serde::de::Error::custom)
    }
}

/// Returns `sha256(block_string + decimal(proof))`, the digest a proof is judged by.
pub fn proof_digest(block_string: &str, proof: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(block_string.as_bytes());
    hasher.update(proof.to_string().as_bytes());
    hasher.finalize().into()
}

/// A block string absorbed into SHA-256 once, so that checking a proof against it costs only the
/// string's last partial 64-byte chunk and the proof's digits, however long the block is.
#[derive(Clone)]
pub struct ProofChecker {
    absorbed: Sha256,
}

impl ProofChecker {
    /// Absorbs `block_string`.
    pub fn new(block_string: &str) -> Self {
        let mut absorbed = Sha256::new();
        absorbed.update(block_string.as_bytes());
        ProofChecker { absorbed }
    }

    /// Returns `sha256(block_string + decimal(proof))`, as [`proof_digest`] does.
    pub fn digest(&self, proof: u64) -> [u8; 32] {
        let mut hasher = self.absorbed.clone();
        let mut digits = [0u8; 20];
        hasher.update(decimal(proof, &mut digits));
        hasher.finalize().into()
    }

    /// Returns true when `proof` meets `difficulty` for this block.
    pub fn is_valid_proof(&self, difficulty: Difficulty, proof: u64) -> bool {
        difficulty.is_met_by(&self.digest(proof))
    }
}

impl fmt::Debug for ProofChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProofChecker")
    }
}

/// Writes `n` in decimal into the end of `buf` and returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_agrees_with_proof_digest() {
        let long = format!("{{\"x\": \"{}\"}}", "y".repeat(1000));
        for s in ["", "a", &"z".repeat(63), &"z".repeat(64), &long] {
            let checker = ProofChecker::new(s);
            for proof in [0, 1, 9, 10, 99, 12345, u64::MAX / 3, u64::MAX] {
                assert_eq!(checker.digest(proof), proof_digest(s, proof), "{s:?} {proof}");
            }
        }
    }

    #[test]
    fn difficulty_bounds() {
        assert!(Difficulty::new(0).is_err());
        assert!(Difficulty::new(65).is_err());
        assert_eq!(Difficulty::new(64).map(Difficulty::zeros), Ok(64));
        assert_eq!(Difficulty::default().zeros(), 6);
    }

    #[test]
    fn leading_zero_nibbles() {
        let mut d = [0xffu8; 32];
        d[0] = 0x00;
        d[1] = 0x0f;
        assert!(Difficulty::new(3).is_ok_and(|t| t.is_met_by(&d)));
        assert!(Difficulty::new(4).is_ok_and(|t| !t.is_met_by(&d)));
        assert!(Difficulty::new(64).is_ok_and(|t| t.is_met_by(&[0; 32])));
    }

    #[test]
    fn agrees_with_hex_prefix_check() {
        // The course's check: hashlib.sha256(f"{block_string}{proof}".encode()).hexdigest()[:D] == "0"*D
        let s = r#"{"index": 1, "previous_hash": "1", "proof": 100, "timestamp": 1.5, "transactions": []}"#;
        for proof in 0..20_000u64 {
            let digest = proof_digest(s, proof);
            let hex = hex::encode(digest);
            for zeros in 1..=4u64 {
                let t = Difficulty::new(zeros).expect("in range");
                assert_eq!(t.is_met_by(&digest), hex.starts_with(&"0".repeat(zeros as usize)));
            }
        }
    }
}
