//! Helpers the workspace's tests share, written once: a small seeded random generator, proofs
//! found by brute force, the checks any client can make of a served chain, and the check of a
//! race that exactly one proof won. A dev-dependency of `protocol`, `pool-server` and
//! `ws-miner` only; it does no I/O but saying, on stderr, that a test is skipped.

use protocol::{Block, Difficulty, to_python_json};
use serde_json::Value;

/// A small deterministic generator (xorshift64*), so that a failing run can be replayed from
/// its seed. Not for anything but tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Returns the generator for `seed` (0, which xorshift cannot leave, counts as 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Returns a generator seeded from the environment variable `var` when it holds a number,
    /// else from a fresh random seed; prints `var=seed` on stderr, so that a failure can be
    /// replayed with that setting.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            h.finish()
        });
        eprintln!("{var}={seed}");
        Rng::new(seed)
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Returns a number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Returns the first proof from `start` on that solves `block` at `difficulty` (the course's
/// rule: the block string, as Python prints it, then the proof's digits).
///
/// # Panics
/// If no proof up to `u64::MAX` does (none of the test difficulties gets there).
pub fn mine(block: &Value, difficulty: Difficulty, start: u64) -> u64 {
    let s = to_python_json(block);
    (start..).find(|p| difficulty.is_valid_proof(&s, *p)).expect("a proof exists")
}

/// Returns the hash a block's successor names as `previous_hash`.
///
/// # Panics
/// If `block` is not a block.
pub fn block_hash(block: &Value) -> String {
    let parsed: Block = serde_json::from_value(block.clone())
        .unwrap_or_else(|e| panic!("not a block ({e}): {block}"));
    parsed.hash().to_hex()
}

/// Returns the id a block rewards: the recipient of its only transaction from sender "0".
///
/// # Panics
/// If the block has no such transaction or more than one (every mined block has exactly one).
pub fn rewarded(block: &Value) -> &str {
    let rewards: Vec<&Value> = block["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transaction list in {block}"))
        .iter()
        .filter(|t| t["sender"] == "0")
        .collect();
    assert_eq!(rewards.len(), 1, "one reward per block: {block}");
    rewards[0]["recipient"].as_str().unwrap_or_else(|| panic!("no recipient in {block}"))
}

/// Checks what a client can check of a chain as `GET /chain` serves it: it starts at block 1,
/// indexes count up by one, each block links to the hash of the one before, and each proof
/// solves the block before at `difficulty`.
///
/// # Panics
/// At the first block that breaks a rule, naming it.
#[track_caller]
pub fn assert_valid_chain(chain: &[Value], difficulty: Difficulty) {
    assert!(!chain.is_empty(), "empty chain");
    assert_eq!(chain[0]["index"], 1, "the chain starts at block 1");
    for (i, pair) in chain.windows(2).enumerate() {
        let (prev, block) = (&pair[0], &pair[1]);
        assert_eq!(block["index"], i as u64 + 2, "{block}");
        assert_eq!(block["previous_hash"], block_hash(prev), "broken link at {block}");
        let proof = block["proof"].as_u64().unwrap_or_else(|| panic!("no integer proof: {block}"));
        assert!(difficulty.is_valid_proof(&to_python_json(prev), proof), "bad proof in {block}");
    }
}

/// Checks the answers to many valid proofs for one block sent at once: exactly one won and
/// every other one is stale. An answer is a WebSocket `result` frame (`accepted`, `reason`) or
/// a `POST /mine` body (`message` "New Block Forged", else `reason`).
///
/// # Panics
/// Unless exactly one answer is a win and all the others say stale.
#[track_caller]
pub fn assert_one_winner<'a>(answers: impl IntoIterator<Item = &'a Value>) {
    let mut winners = 0;
    let mut answered = 0;
    for answer in answers {
        answered += 1;
        if answer["accepted"] == true || answer["message"] == "New Block Forged" {
            winners += 1;
        } else {
            assert_eq!(answer["reason"], "stale", "a loser is stale: {answer}");
        }
    }
    assert_eq!(winners, 1, "exactly one of {answered} concurrent valid proofs wins");
}

/// Says on the test process's own stderr that a test is skipped and why, in one line starting
/// `SKIPPED`, which `scripts/test` shows and counts. (libtest captures `eprintln!` of a passing
/// test, so a skip said that way never shows.)
///
/// # Panics
/// When the environment variable `require` is set (CI sets each `REQUIRE_*`): what is missing
/// there is a failure, not a skip.
pub fn skip(require: &str, why: &str) {
    use std::io::Write;
    assert!(std::env::var_os(require).is_none(), "{require} is set, but {why}");
    // One write of one line, so that tests running beside it cannot split it.
    let line = format!("\nSKIPPED {why} (set {require}=1 to make this fail)\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rng_replays_its_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert!(first.windows(2).all(|w| w[0] != w[1]));
        assert!((0..100).all(|_| a.below(3) < 3));
    }

    #[test]
    fn one_winner_over_both_transports() {
        let won = json!({"type": "result", "accepted": true, "reason": null});
        let stale_ws = json!({"type": "result", "accepted": false, "reason": "stale"});
        let stale_http = json!({"message": "too late", "reason": "stale"});
        assert_one_winner([&won, &stale_ws, &stale_http]);
        let forged = json!({"message": "New Block Forged"});
        let two = std::panic::catch_unwind(|| assert_one_winner([&won, &forged]));
        assert!(two.is_err());
    }
}
