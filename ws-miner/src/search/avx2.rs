//! The AVX2 kernel: eight candidates at once, one per 32-bit lane of the 256-bit registers,
//! each lane running the plain SHA-256 rounds. For CPUs with AVX2 but no SHA extensions.
//!
//! Lane `j` of a batch tries fast value `f + j`; its two varying message words are loaded
//! straight from the per-layout tables (eight consecutive entries per load).
#![allow(unsafe_code)]

use super::layout::Prepared;
use super::sha::K;
use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_andnot_si256, _mm256_castsi256_ps,
    _mm256_cmpeq_epi32, _mm256_loadu_si256, _mm256_movemask_ps, _mm256_or_si256, _mm256_set1_epi32,
    _mm256_setzero_si256, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_xor_si256,
};

/// Lanes per batch.
const LANES: usize = 8;

/// Returns true when this CPU has the features the kernel needs.
pub(crate) fn is_supported() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Returns the first fast value in `lo..hi` whose first digest word passes `p.mask`.
pub(crate) fn scan(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    if !is_supported() {
        return super::sha::scan(p, lo, hi);
    }
    // SAFETY: the CPU feature `scan_avx2` is compiled for was checked just above.
    unsafe { scan_avx2(p, lo, hi) }
}

macro_rules! ror {
    ($x:expr, $n:literal) => {
        _mm256_or_si256(_mm256_srli_epi32::<$n>($x), _mm256_slli_epi32::<{ 32 - $n }>($x))
    };
}

/// Loads eight consecutive table entries from `table[from..]`.
#[inline]
#[target_feature(enable = "avx2")]
fn load8(table: &[u32], from: usize) -> __m256i {
    let words = &table[from..from + LANES];
    // SAFETY: `words` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
fn scan_avx2(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    let splat = |x: u32| _mm256_set1_epi32(x as i32);
    let fixed: [__m256i; 16] = std::array::from_fn(|i| splat(p.w[i]));
    let start: [__m256i; 8] = std::array::from_fn(|i| splat(p.state[i]));
    let mid0 = splat(p.mid[0]);
    let mask = splat(p.mask);
    let zero = _mm256_setzero_si256();
    let mut f = lo;
    while f < hi {
        // Tables are padded, so a last partial batch reads zeros past `hi`; those lanes are
        // ignored below.
        let mut w = fixed;
        w[p.wf] = _mm256_or_si256(w[p.wf], load8(&p.table.a, f));
        w[p.wf + 1] = _mm256_or_si256(w[p.wf + 1], load8(&p.table.b, f));
        let [mut a, mut b, mut c, mut d, mut e, mut ff, mut g, mut h] = start;
        for i in p.start..64 {
            let wi = if i < 16 {
                w[i]
            } else {
                let w15 = w[(i - 15) & 15];
                let w2 = w[(i - 2) & 15];
                let s0 = _mm256_xor_si256(
                    _mm256_xor_si256(ror!(w15, 7), ror!(w15, 18)),
                    _mm256_srli_epi32::<3>(w15),
                );
                let s1 = _mm256_xor_si256(
                    _mm256_xor_si256(ror!(w2, 17), ror!(w2, 19)),
                    _mm256_srli_epi32::<10>(w2),
                );
                let next = _mm256_add_epi32(
                    _mm256_add_epi32(w[i & 15], s0),
                    _mm256_add_epi32(w[(i - 7) & 15], s1),
                );
                w[i & 15] = next;
                next
            };
            let s1 = _mm256_xor_si256(_mm256_xor_si256(ror!(e, 6), ror!(e, 11)), ror!(e, 25));
            let ch = _mm256_xor_si256(_mm256_and_si256(e, ff), _mm256_andnot_si256(e, g));
            let t1 = _mm256_add_epi32(
                _mm256_add_epi32(h, s1),
                _mm256_add_epi32(ch, _mm256_add_epi32(splat(K[i]), wi)),
            );
            let s0 = _mm256_xor_si256(_mm256_xor_si256(ror!(a, 2), ror!(a, 13)), ror!(a, 22));
            let maj =
                _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(c, _mm256_or_si256(a, b)));
            let t2 = _mm256_add_epi32(s0, maj);
            h = g;
            g = ff;
            ff = e;
            e = _mm256_add_epi32(d, t1);
            d = c;
            c = b;
            b = a;
            a = _mm256_add_epi32(t1, t2);
        }
        let h0 = _mm256_add_epi32(a, mid0);
        let hit = _mm256_cmpeq_epi32(_mm256_and_si256(h0, mask), zero);
        let lanes = _mm256_movemask_ps(_mm256_castsi256_ps(hit)) as u32;
        let valid = if hi - f >= LANES { u32::MAX } else { (1u32 << (hi - f)) - 1 };
        let lanes = lanes & valid;
        if lanes != 0 {
            return Some(f + lanes.trailing_zeros() as usize);
        }
        f += LANES;
    }
    None
}
