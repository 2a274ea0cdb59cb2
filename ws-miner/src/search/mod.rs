//! The proof search: finds a `proof` such that `sha256(prefix + decimal(proof))` meets a
//! difficulty. This is the miner's hot loop, kept behind one small interface ([`Searcher`]) so the
//! network side never sees how proofs are chosen or hashed.
//!
//! One attempt costs one SHA-256 compression: the prefix's full blocks are hashed once per job,
//! proofs get a digit count that puts their changing digits and the padding in one final block,
//! and the rounds before the changing digits run once per thousand attempts (see `layout`).
//! The compressions run in the [`Kernel`] (AVX-512, SHA-NI at one of three widths, AVX2 or plain
//! Rust) that measures fastest on this CPU, chosen at run time ([`Calibration`]). Workers scan
//! disjoint proof ranges and look at the stop flag every [`CHECK_EVERY`] attempts.
//!
//! Targets are counted in leading zero bits of the digest (a hex zero is 4), so a pool's share
//! target can step by ×2: [`Searcher::search_shares`] hands every proof that meets a share
//! target below the block's to a callback and goes on, and stops at a block as
//! [`Searcher::search`] does. The kernels only see the target's first 32 bits as a mask.
//!
//! # Layout
//! - `layout`: where the digits go, the per-slow-step precomputation, range scans.
//! - `kernel`: [`Kernel`]; `calibrate`: its run-time choice by a few milliseconds of timing,
//!   gated by `selftest` (a kernel must find exactly what the plain hash finds on known ranges
//!   before it is used); `sha`: the scalar rounds and the portable kernel; `shani`, `avx2`,
//!   `avx512`: the SIMD kernels (the only `unsafe` code, with the thread clock in `calibrate`).
//! - [`bench`]: the attempts/s measurement behind `--bench`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod bench;
mod calibrate;
mod kernel;
mod layout;
pub mod priority;
mod selftest;
mod sha;
#[cfg(target_arch = "x86_64")]
mod shani;
#[cfg(test)]
mod tests;

pub use calibrate::Calibration;
pub use kernel::Kernel;
pub use layout::MAX_PROOF;

use layout::{Prefix, Progress, Scan};
use protocol::Difficulty;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The most attempts a worker makes between looks at the stop flag (and between updates of the
/// shared attempt counter, which it makes every this many attempts or a few hundred more).
/// About 10 µs of one core with SHA-NI: a worker stops within that much work of the flag, and
/// an attempt count read at any moment lags by less than twice this much per worker. A multiple
/// of every kernel's width ([`Kernel::width`]: 2, 3 or 4 SHA-NI candidates, 8 and 16 SIMD
/// lanes), so that a kernel call of this many attempts fills every lane it hashes.
pub const CHECK_EVERY: u64 = 240;
const _: () =
    assert!(CHECK_EVERY.is_multiple_of(48), "CHECK_EVERY must be a multiple of 3 and of 16");

/// What to search: the bytes hashed before the decimal proof, and the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The block string (or its dialect's rendering), hashed before the proof's digits.
    pub prefix: Vec<u8>,
    /// Leading hex zeroes the digest needs.
    pub difficulty: Difficulty,
}

impl Job {
    /// Returns the proof ranges (inclusive) a search of this job tries, in order: the digit
    /// counts for which one attempt is one compression. Every proof is at most [`MAX_PROOF`].
    pub fn proof_ranges(&self) -> Vec<(u64, u64)> {
        layout::plan(self.prefix.len() % 64)
    }

    /// Returns the leading zero bits a proof of this job needs: 4 per hex zero.
    pub fn bits(&self) -> u32 {
        4 * u32::from(self.difficulty.zeros())
    }
}

/// A kernel this CPU cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} kernel needs CPU features this machine lacks")]
pub struct KernelUnavailableError(pub Kernel);

/// Runs proof searches on a fixed number of worker threads.
#[derive(Debug, Clone)]
pub struct Searcher {
    threads: usize,
    kernel: Kernel,
    nice: i32,
}

impl Searcher {
    /// Returns a searcher that uses `threads` worker threads (at least one) and the fastest
    /// kernel this CPU has.
    pub fn new(threads: usize) -> Self {
        Searcher { threads: threads.max(1), kernel: Kernel::detect(), nice: 0 }
    }

    /// Returns a searcher that uses `kernel` on `threads` worker threads (at least one).
    ///
    /// # Errors
    /// When this CPU cannot run `kernel`.
    pub fn with_kernel(kernel: Kernel, threads: usize) -> Result<Self, KernelUnavailableError> {
        if !kernel.is_available() {
            return Err(KernelUnavailableError(kernel));
        }
        Ok(Searcher { threads: threads.max(1), kernel, nice: 0 })
    }

    /// Returns this searcher with workers that run `nice` steps below the thread that starts
    /// the search (0 to [`priority::MAX_NICE`]; 0, the default, leaves them at its priority).
    /// Linux only; elsewhere workers keep the starting thread's priority.
    pub fn with_nice(self, nice: u8) -> Self {
        Searcher { nice: i32::from(nice).min(priority::MAX_NICE), ..self }
    }

    /// Returns how many nice steps below the starting thread the workers run.
    pub fn nice(&self) -> i32 {
        self.nice
    }

    /// Returns the number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Returns the kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Returns the name of the kernel in use.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }

    /// Searches `job` for a valid proof, starting near `seed`, until one is found or `stop` is
    /// set. Blocks the calling thread; adds the number of attempts made to `attempts` as it goes.
    ///
    /// The proofs tried are [`Job::proof_ranges`], read as one cyclic sequence that starts at
    /// index `seed % len`; each worker takes a disjoint slice of it.
    ///
    /// Returns `Some(proof)` with a proof that meets the job's difficulty, or `None` when stopped
    /// (or, in theory, when every proof in the ranges was tried).
    pub fn search(
        &self,
        job: &Job,
        seed: u64,
        stop: &AtomicBool,
        attempts: &AtomicU64,
    ) -> Option<u64> {
        self.search_shares(job, None, seed, stop, attempts, &|_| {})
    }

    /// As [`Searcher::search`], and with `share_bits` (a pool's share target, in leading zero
    /// bits) also hands every proof whose digest has at least that many leading zero bits, but
    /// not the job's difficulty, to `on_share` (from the worker that found it, in increasing
    /// order within each worker's slice) and goes on searching. A target at or above the job's
    /// difficulty ([`Job::bits`]) finds blocks only.
    pub fn search_shares(
        &self,
        job: &Job,
        share_bits: Option<u8>,
        seed: u64,
        stop: &AtomicBool,
        attempts: &AtomicU64,
        on_share: &(dyn Fn(u64) + Sync),
    ) -> Option<u64> {
        let prefix = Prefix::new(&job.prefix);
        let ranges = job.proof_ranges();
        let total: u64 = ranges.iter().map(|(lo, hi)| hi - lo + 1).sum();
        let threads = self.threads as u64;
        let share = total / threads;
        let first = seed % total;
        let found = AtomicBool::new(false);
        let result = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for worker in 0..threads {
                let start = (first + worker * share) % total;
                let len = if worker + 1 == threads { total - share * worker } else { share };
                let (prefix, ranges, found, result) = (&prefix, &ranges, &found, &result);
                scope.spawn(move || {
                    // Failing to lower it leaves the worker at the miner's priority: slower to
                    // make way for the thread that reads a new block, nothing worse.
                    if self.nice > 0 {
                        priority::lower_this_thread(self.nice);
                    }
                    let mut progress = Progress::new(attempts, stop, found);
                    for (lo, hi) in slices(ranges, total, start, len) {
                        match self.scan_slice(
                            job,
                            prefix,
                            share_bits,
                            lo,
                            hi,
                            &mut progress,
                            on_share,
                        ) {
                            Scan::Found(proof) => {
                                if !found.swap(true, Ordering::AcqRel) {
                                    result.store(proof, Ordering::Release);
                                }
                                break;
                            }
                            Scan::Stopped => break,
                            Scan::Exhausted => {}
                        }
                    }
                    progress.flush();
                });
            }
        });
        found.load(Ordering::Acquire).then(|| result.load(Ordering::Acquire))
    }

    /// Scans `lo..=hi` in increasing order for the job's difficulty; with a share target below
    /// it, each share found on the way goes to `on_share` and the scan resumes after it.
    #[allow(clippy::too_many_arguments)]
    fn scan_slice(
        &self,
        job: &Job,
        prefix: &Prefix<'_>,
        share_bits: Option<u8>,
        mut lo: u64,
        hi: u64,
        progress: &mut Progress<'_>,
        on_share: &(dyn Fn(u64) + Sync),
    ) -> Scan {
        let block = job.bits();
        let target = share_bits.map_or(block, |bits| u32::from(bits).min(block));
        loop {
            match layout::scan_range(self.kernel, prefix, target, lo, hi, progress) {
                Scan::Found(proof) if target < block && prefix.zero_bits(proof) < block => {
                    on_share(proof);
                    if proof >= hi {
                        return Scan::Exhausted;
                    }
                    lo = proof + 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Returns the first proof in `lo..=hi` (in increasing order) that meets the job's
    /// difficulty, on the calling thread, or `None` when there is none or `stop` was set.
    /// Any range works; proofs whose digits cannot share one final block with the padding are
    /// hashed the straightforward way.
    pub fn first_in_range(
        &self,
        job: &Job,
        lo: u64,
        hi: u64,
        stop: &AtomicBool,
        attempts: &AtomicU64,
    ) -> Option<u64> {
        self.shares_in_range(job, None, lo, hi, stop, attempts, &|_| {})
    }

    /// As [`Searcher::first_in_range`], handing every share of `share_bits` found before the
    /// first proof (or in the whole range, when none) to `on_share`, in increasing order (see
    /// [`Searcher::search_shares`]).
    #[allow(clippy::too_many_arguments)]
    pub fn shares_in_range(
        &self,
        job: &Job,
        share_bits: Option<u8>,
        lo: u64,
        hi: u64,
        stop: &AtomicBool,
        attempts: &AtomicU64,
        on_share: &(dyn Fn(u64) + Sync),
    ) -> Option<u64> {
        let prefix = Prefix::new(&job.prefix);
        let found = AtomicBool::new(false);
        let mut progress = Progress::new(attempts, stop, &found);
        let outcome = self.scan_slice(job, &prefix, share_bits, lo, hi, &mut progress, on_share);
        progress.flush();
        match outcome {
            Scan::Found(proof) => Some(proof),
            Scan::Exhausted | Scan::Stopped => None,
        }
    }
}

/// Returns the proof ranges for `len` consecutive indices from `start` of the cyclic sequence
/// made of `ranges` (whose lengths add up to `total`).
fn slices(ranges: &[(u64, u64)], total: u64, start: u64, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut index, mut left) = (start, len);
    while left > 0 {
        let mut offset = index;
        for &(lo, hi) in ranges {
            let size = hi - lo + 1;
            if offset < size {
                let take = left.min(size - offset);
                out.push((lo + offset, lo + offset + take - 1));
                left -= take;
                index = (index + take) % total;
                break;
            }
            offset -= size;
        }
    }
    out
}
