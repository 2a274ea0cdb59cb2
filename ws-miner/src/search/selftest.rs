//! The start-up self-test of a kernel: before a SIMD kernel is trusted with real work, it must
//! find exactly the proofs the straightforward `sha256(prefix + decimal(proof))` finds on a few
//! known ranges.
//!
//! Why: a kernel is chosen by the CPU's features at run time, and some kernels (AVX-512) run only
//! on CPUs that the project's own machines may lack. A kernel that misses candidates would not
//! produce a wrong proof (every hit is re-checked with the plain hash) but could search forever
//! without finding one. A few thousand hashes at start-up (milliseconds) rule that out; a kernel
//! that fails is skipped for the next one.

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64};

use super::{Job, Kernel, Searcher};
use protocol::Difficulty;

/// Candidates checked per prefix: enough to cover every SIMD lane and several slow steps.
const SPAN: u64 = 2_500;

/// Returns true when `kernel` agrees with the straightforward hash on every test range.
pub(crate) fn passes(kernel: Kernel) -> bool {
    let Ok(searcher) = Searcher::with_kernel(kernel, 1) else {
        return false;
    };
    let difficulty = Difficulty::new(1).expect("1 is a valid difficulty");
    // Tail lengths that exercise each layout: short tails, the last one-block case (55), and
    // the spill cases (56..64) where the digits start in the tail's block.
    [0usize, 7, 45, 50, 55, 56, 60, 63, 64 + 30].into_iter().all(|len| {
        let prefix: Vec<u8> = (0..len).map(|i| b"{\"a\": 1.5, \"b\": [\"x\"]}"[i % 22]).collect();
        let job = Job { prefix, difficulty };
        job.proof_ranges().first().is_some_and(|&(lo, hi)| {
            let hi = hi.min(lo + SPAN);
            found_by(&searcher, &job, lo, hi) == found_plainly(&job, lo, hi)
        })
    })
}

/// Every proof in `lo..=hi` the searcher finds, by repeated first-in-range scans.
fn found_by(searcher: &Searcher, job: &Job, lo: u64, hi: u64) -> Vec<u64> {
    let (stop, attempts) = (AtomicBool::new(false), AtomicU64::new(0));
    let mut found = Vec::new();
    let mut from = lo;
    while from <= hi {
        match searcher.first_in_range(job, from, hi, &stop, &attempts) {
            Some(proof) => {
                found.push(proof);
                from = proof + 1;
            }
            None => break,
        }
    }
    found
}

/// Every proof in `lo..=hi` whose plain SHA-256 meets the job's difficulty.
fn found_plainly(job: &Job, lo: u64, hi: u64) -> Vec<u64> {
    (lo..=hi)
        .filter(|proof| {
            let mut hasher = Sha256::new();
            hasher.update(&job.prefix);
            hasher.update(proof.to_string().as_bytes());
            job.difficulty.is_met_by(&hasher.finalize().into())
        })
        .collect()
}
