//! The proof search: finds a `proof` such that `sha256(prefix + decimal(proof))` meets a
//! difficulty. This is the miner's hot loop, kept behind one small interface ([`Searcher`]) so the
//! network side never sees how proofs are chosen or hashed.
//!
//! This first version is portable and straightforward: the prefix is hashed once per job (the
//! SHA-256 state after it is cloned for each attempt), digits are written into a stack buffer,
//! threads scan disjoint proof ranges, and a shared stop flag is checked every
//! [`CHECK_EVERY`] attempts.

use protocol::Difficulty;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How many attempts a worker makes between looks at the stop flag and progress updates.
pub const CHECK_EVERY: u64 = 4096;

/// What to search: the bytes hashed before the decimal proof, and the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The block string (or its dialect's rendering), hashed before the proof's digits.
    pub prefix: Vec<u8>,
    /// Leading hex zeroes the digest needs.
    pub difficulty: Difficulty,
}

/// Runs proof searches on a fixed number of worker threads.
#[derive(Debug, Clone)]
pub struct Searcher {
    threads: usize,
}

impl Searcher {
    /// Returns a searcher that uses `threads` worker threads (at least one).
    pub fn new(threads: usize) -> Self {
        Searcher { threads: threads.max(1) }
    }

    /// Returns the number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Returns the name of the kernel in use.
    pub fn kernel_name(&self) -> &'static str {
        "portable"
    }

    /// Searches `job` for a valid proof, starting near `seed`, until one is found or `stop` is
    /// set. Blocks the calling thread; adds the number of attempts made to `attempts` as it goes.
    ///
    /// Returns `Some(proof)` with a proof that meets the job's difficulty, or `None` when stopped
    /// (or, in theory, when the whole u64 range was searched).
    pub fn search(
        &self,
        job: &Job,
        seed: u64,
        stop: &AtomicBool,
        attempts: &AtomicU64,
    ) -> Option<u64> {
        let found = AtomicBool::new(false);
        let result = AtomicU64::new(0);
        let mut base = Sha256::new();
        base.update(&job.prefix);
        let stride = u64::MAX / self.threads as u64;
        std::thread::scope(|scope| {
            for worker in 0..self.threads as u64 {
                let start = seed.wrapping_add(worker.wrapping_mul(stride));
                let (base, found, result) = (&base, &found, &result);
                scope.spawn(move || {
                    if let Some(proof) =
                        scan(base, job.difficulty, start, stride, stop, found, attempts)
                    {
                        if !found.swap(true, Ordering::AcqRel) {
                            result.store(proof, Ordering::Release);
                        }
                    }
                });
            }
        });
        found.load(Ordering::Acquire).then(|| result.load(Ordering::Acquire))
    }
}

fn scan(
    base: &Sha256,
    difficulty: Difficulty,
    start: u64,
    count: u64,
    stop: &AtomicBool,
    found: &AtomicBool,
    attempts: &AtomicU64,
) -> Option<u64> {
    let mut digits = [0u8; 20];
    let mut done = 0u64;
    let mut proof = start;
    while done < count {
        let chunk = CHECK_EVERY.min(count - done);
        for _ in 0..chunk {
            let text = decimal(proof, &mut digits);
            let mut hasher = base.clone();
            hasher.update(text);
            let digest: [u8; 32] = hasher.finalize().into();
            if difficulty.is_met_by(&digest) {
                attempts.fetch_add(proof.wrapping_sub(start) - done + 1, Ordering::Relaxed);
                return Some(proof);
            }
            proof = proof.wrapping_add(1);
        }
        done += chunk;
        attempts.fetch_add(chunk, Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) || found.load(Ordering::Relaxed) {
            return None;
        }
    }
    None
}

/// Writes `n` in decimal into the end of `buf` and returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_valid_proof() {
        let job =
            Job { prefix: b"{\"index\": 1}".to_vec(), difficulty: Difficulty::new(3).expect("ok") };
        let stop = AtomicBool::new(false);
        let attempts = AtomicU64::new(0);
        let proof = Searcher::new(2).search(&job, 12345, &stop, &attempts).expect("found");
        let s = std::str::from_utf8(&job.prefix).expect("ascii");
        assert!(job.difficulty.is_valid_proof(s, proof));
        assert!(attempts.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn decimal_digits() {
        let mut buf = [0; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
