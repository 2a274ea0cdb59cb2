//! Where the proof's digits go, so that one attempt costs one SHA-256 compression.
//!
//! The prefix's full 64-byte blocks are hashed once per job (the midstate). A proof of `n`
//! decimal digits then ends the message; this module picks digit counts for which the digits
//! that change fastest, the `0x80` padding byte and the length all fall in one final block:
//!
//! - *tail case*: the prefix's tail (its last `len % 64` bytes), all `n` digits and the padding
//!   fit in one block (`tail + n <= 55`);
//! - *spill case*: the tail is too long, so the proof's high digits complete the tail's block
//!   (hashed once per value of those digits) and its low digits start the final block.
//!
//! Within the final block the last [`FAST_DIGITS`] digits are the *fast* ones: for each value of
//! the digits above them (a *slow step*) the block is rebuilt, the rounds that only read words
//! before the fast digits are run once ([`Prepared`]), and a kernel tries the fast values, whose
//! bytes it ORs in from a per-layout table. Proofs stay below 2^63 so that every consumer
//! (JSON, Python, SQLite's signed integers) reads them exactly.

use super::CHECK_EVERY;
use super::kernel::Kernel;
use super::sha::{IV, first_rounds};
use protocol::share::leading_zero_bits;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The largest proof the search produces: `i64::MAX`, so signed 64-bit consumers accept it.
pub const MAX_PROOF: u64 = i64::MAX as u64;
/// How many low digits a kernel varies per slow step (fewer when the layout has fewer).
pub(crate) const FAST_DIGITS: u32 = 3;
/// Zero entries after each table, so a 16-lane kernel may load past the last fast value.
pub(crate) const TABLE_PAD: usize = 16;

/// The bytes that fast values contribute to block words `wf` and `wf + 1` (big-endian words,
/// zero elsewhere), indexed by the fast value.
#[derive(Debug)]
pub(crate) struct FastTable {
    /// Contribution to word `wf`.
    pub a: Vec<u32>,
    /// Contribution to word `wf + 1` (zero when the fast digits sit in one word).
    pub b: Vec<u32>,
}

/// One slow step, ready for a kernel: everything that does not depend on the fast digits.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    /// The chaining value the final block is compressed onto.
    pub mid: [u32; 8],
    /// The working variables after the first `start` rounds.
    pub state: [u32; 8],
    /// Rounds already run: those before word `wf`.
    pub start: usize,
    /// The working variables after the first `start4` rounds (for 4-round-grouped kernels).
    pub state4: [u32; 8],
    /// `start` rounded down to a multiple of 4.
    pub start4: usize,
    /// The final block's words with the fast digits' bytes zero.
    pub w: [u32; 16],
    /// The first word holding a fast digit (at most 13, so `wf + 1` is a valid index).
    pub wf: usize,
    /// The fast values' bytes for words `wf` and `wf + 1`.
    pub table: &'a FastTable,
    /// Bits of the first digest word that must be zero (the target's first 32 bits).
    pub mask: u32,
}

/// The prefix of a job, hashed once.
pub(crate) struct Prefix<'a> {
    len: u64,
    tail: &'a [u8],
    mid0: [u32; 8],
    hasher: Sha256,
}

impl<'a> Prefix<'a> {
    /// Hashes the full blocks of `bytes` once.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        let full = bytes.len() / 64 * 64;
        let mut mid0 = IV;
        let blocks: Vec<_> =
            bytes[..full].chunks_exact(64).map(GenericArray::clone_from_slice).collect();
        sha2::compress256(&mut mid0, &blocks);
        Prefix {
            len: bytes.len() as u64,
            tail: &bytes[full..],
            mid0,
            hasher: Sha256::new_with_prefix(bytes),
        }
    }

    /// Returns the prefix length mod 64.
    pub(crate) fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Returns the leading zero bits of `proof`'s digest (the straightforward hash).
    pub(crate) fn zero_bits(&self, proof: u64) -> u32 {
        let mut buf = [0; 20];
        let digest: [u8; 32] =
            self.hasher.clone().chain_update(decimal(proof, &mut buf)).finalize().into();
        leading_zero_bits(&digest)
    }
}

/// Returns the proof ranges a search covers, in order, for a prefix whose length mod 64 is
/// `tail`: the widest tail-case range, then (for long tails) the 19-digit spill range.
pub(crate) fn plan(tail: usize) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    if tail <= 54 {
        let n = (55 - tail).min(19) as u32;
        ranges.push((digits_start(n), digits_end(n)));
    }
    if tail >= 46 {
        ranges.push((digits_start(19), digits_end(19)));
    }
    ranges.dedup();
    ranges
}

/// The smallest number with `n` decimal digits (0 for one digit).
fn digits_start(n: u32) -> u64 {
    if n <= 1 { 0 } else { 10u64.pow(n - 1) }
}

/// The largest number with `n` decimal digits, capped at [`MAX_PROOF`].
fn digits_end(n: u32) -> u64 {
    10u64.checked_pow(n).map_or(MAX_PROOF, |p| (p - 1).min(MAX_PROOF))
}

/// Returns the number of decimal digits of `x`.
fn digit_count(x: u64) -> u32 {
    x.checked_ilog10().map_or(1, |l| l + 1)
}

/// Writes `n` in decimal into the end of `buf` and returns the digits.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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

/// Returns the first-word mask for a target of `bits` leading zero bits: its first
/// min(bits, 32) bits (a difficulty of D hex zeroes is 4·D bits).
pub(crate) fn first_word_mask(bits: u32) -> u32 {
    if bits >= 32 { u32::MAX } else { !(u32::MAX >> bits) }
}

/// Where `n`-digit proofs go for a given tail.
struct Layout {
    n: usize,
    /// Digits that complete the tail's block (spill case), 0 in the tail case.
    pre: usize,
    /// End of the digits in the final block.
    end: usize,
    /// Fast digits.
    fast: usize,
    wf: usize,
    table: FastTable,
}

impl Layout {
    /// Returns the layout of `n`-digit proofs after a `tail`-byte tail, or `None` when the
    /// varying digits cannot share the final block with the padding.
    fn new(tail: usize, n: usize) -> Option<Self> {
        let (pre, end) = if tail + n + 9 <= 64 {
            (0, tail + n)
        } else if 64 - tail < n {
            (64 - tail, n - (64 - tail))
        } else {
            return None;
        };
        let fast = (n - pre).min(FAST_DIGITS as usize);
        let first = end - fast;
        let wf = first / 4;
        let count = 10usize.pow(fast as u32);
        let mut table = FastTable { a: vec![0; count + TABLE_PAD], b: vec![0; count + TABLE_PAD] };
        for f in 0..count {
            let mut window = [0u8; 8];
            let mut x = f;
            for k in (0..fast).rev() {
                window[first - 4 * wf + k] = b'0' + (x % 10) as u8;
                x /= 10;
            }
            table.a[f] = u32::from_be_bytes([window[0], window[1], window[2], window[3]]);
            table.b[f] = u32::from_be_bytes([window[4], window[5], window[6], window[7]]);
        }
        Some(Layout { n, pre, end, fast, wf, table })
    }
}

/// Counts attempts and watches the stop flags for one worker.
pub(crate) struct Progress<'a> {
    /// Attempts not yet added to `attempts`.
    local: u64,
    /// The caller's attempt counter.
    pub attempts: &'a AtomicU64,
    /// The caller's stop flag.
    pub stop: &'a AtomicBool,
    /// Set when another worker found a proof.
    pub found: &'a AtomicBool,
}

impl<'a> Progress<'a> {
    /// Returns a progress counter over the caller's flags.
    pub(crate) fn new(
        attempts: &'a AtomicU64,
        stop: &'a AtomicBool,
        found: &'a AtomicBool,
    ) -> Self {
        Progress { local: 0, attempts, stop, found }
    }

    /// Records `n` attempts; returns false when the worker should stop. Scans call it after
    /// every kernel call of at most [`CHECK_EVERY`] attempts, so a worker looks at the flags at
    /// least that often; the shared counter is updated every [`CHECK_EVERY`] attempts or more.
    fn add(&mut self, n: u64) -> bool {
        self.local += n;
        if self.local >= CHECK_EVERY {
            self.flush();
        }
        !(self.stop.load(Ordering::Relaxed) || self.found.load(Ordering::Relaxed))
    }

    /// Adds the attempts not yet counted to the caller's counter.
    pub(crate) fn flush(&mut self) {
        self.attempts.fetch_add(self.local, Ordering::Relaxed);
        self.local = 0;
    }
}

/// Why a range scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// A valid proof.
    Found(u64),
    /// The whole range was tried without success.
    Exhausted,
    /// The stop flag (or another worker's success) ended the scan.
    Stopped,
}

/// Tries the proofs `lo..=hi` in increasing order with `kernel` and returns the first whose
/// digest has at least `bits` leading zero bits.
pub(crate) fn scan_range(
    kernel: Kernel,
    prefix: &Prefix<'_>,
    bits: u32,
    lo: u64,
    hi: u64,
    progress: &mut Progress<'_>,
) -> Scan {
    if lo > hi {
        return Scan::Exhausted;
    }
    for n in digit_count(lo)..=digit_count(hi) {
        let (a, b) = (lo.max(digits_start(n)), hi.min(digits_end_uncapped(n)));
        let outcome = match Layout::new(prefix.tail_len(), n as usize) {
            Some(layout) => scan_layout(kernel, prefix, bits, &layout, a, b, progress),
            None => scan_slow(prefix, bits, a, b, progress),
        };
        if outcome != Scan::Exhausted {
            return outcome;
        }
    }
    Scan::Exhausted
}

/// The largest number with `n` decimal digits, or u64::MAX for 20.
fn digits_end_uncapped(n: u32) -> u64 {
    10u64.checked_pow(n).map_or(u64::MAX, |p| p - 1)
}

/// Tries `lo..=hi` (proofs of one digit count) the straightforward way: used only for digit
/// counts whose layout needs two compressions per attempt, which no plan contains.
fn scan_slow(
    prefix: &Prefix<'_>,
    bits: u32,
    lo: u64,
    hi: u64,
    progress: &mut Progress<'_>,
) -> Scan {
    let mut proof = lo;
    loop {
        if prefix.zero_bits(proof) >= bits {
            progress.add(1);
            return Scan::Found(proof);
        }
        if !progress.add(1) {
            return Scan::Stopped;
        }
        if proof == hi {
            return Scan::Exhausted;
        }
        proof += 1;
    }
}

/// Tries `lo..=hi` (proofs of `layout.n` digits) with a kernel, one slow step at a time.
fn scan_layout(
    kernel: Kernel,
    prefix: &Prefix<'_>,
    bits: u32,
    layout: &Layout,
    lo: u64,
    hi: u64,
    progress: &mut Progress<'_>,
) -> Scan {
    let step = 10u64.pow(layout.fast as u32);
    let mask = first_word_mask(bits);
    let bit_len = (prefix.len + layout.n as u64) * 8;
    // The chaining value for the spill case depends on the digits in the tail's block.
    let pre_div = 10u64.checked_pow((layout.n - layout.pre) as u32).unwrap_or(u64::MAX);
    let mut cached_mid: Option<(u64, [u32; 8])> = None;
    let mut proof = lo;
    loop {
        let base = proof - proof % step;
        let last = hi.min(base + (step - 1).min(u64::MAX - base));
        let mut buf = [0u8; 20];
        let digits = decimal(base, &mut buf);
        let mut block = [0u8; 64];
        let mid = if layout.pre == 0 {
            block[..prefix.tail.len()].copy_from_slice(prefix.tail);
            block[prefix.tail.len()..layout.end - layout.fast]
                .copy_from_slice(&digits[..layout.n - layout.fast]);
            prefix.mid0
        } else {
            block[..layout.end - layout.fast]
                .copy_from_slice(&digits[layout.pre..layout.n - layout.fast]);
            let key = base / pre_div;
            match cached_mid {
                Some((k, mid)) if k == key => mid,
                _ => {
                    let mut first = [0u8; 64];
                    first[..prefix.tail.len()].copy_from_slice(prefix.tail);
                    first[prefix.tail.len()..].copy_from_slice(&digits[..layout.pre]);
                    let mut mid = prefix.mid0;
                    sha2::compress256(&mut mid, &[GenericArray::clone_from_slice(&first)]);
                    cached_mid = Some((key, mid));
                    mid
                }
            }
        };
        block[layout.end] = 0x80;
        block[56..].copy_from_slice(&bit_len.to_be_bytes());
        let mut w = [0u32; 16];
        for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        // Running the first rounds twice (for 1-round and 4-round kernels) costs a few dozen
        // rounds per slow step of up to 1000 attempts: not worth sharing.
        let start4 = layout.wf & !3;
        let state4 = first_rounds(&mid, &w, start4);
        let prepared = Prepared {
            mid,
            state: first_rounds(&mid, &w, layout.wf),
            start: layout.wf,
            state4,
            start4,
            w,
            wf: layout.wf,
            table: &layout.table,
            mask,
        };
        let (f_lo, f_hi) = ((proof - base) as usize, (last - base) as usize + 1);
        // The kernel runs over chunks of at most CHECK_EVERY fast values, so the stop flag is
        // seen within that many attempts of being set.
        let mut f = f_lo;
        proof = loop {
            let end = f_hi.min(f + CHECK_EVERY as usize);
            if let Some(hit) = kernel.scan(&prepared, f, end) {
                let candidate = base + hit as u64;
                let keep_going = progress.add((hit - f + 1) as u64);
                if prefix.zero_bits(candidate) >= bits {
                    return Scan::Found(candidate);
                }
                // Up to 32 bits the mask is the whole target: a candidate that fails the full
                // check means a broken kernel or layout, which the tests must see.
                debug_assert!(bits > 32, "{} kernel false positive {candidate}", kernel);
                if candidate == hi {
                    return Scan::Exhausted;
                }
                if !keep_going {
                    return Scan::Stopped;
                }
                break candidate + 1;
            }
            let keep_going = progress.add((end - f) as u64);
            if end == f_hi && last == hi {
                return Scan::Exhausted;
            }
            if !keep_going {
                return Scan::Stopped;
            }
            if end == f_hi {
                break last + 1;
            }
            f = end;
        };
    }
}
