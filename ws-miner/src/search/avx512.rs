//! The AVX-512 kernel: sixteen candidates at once, one per 32-bit lane of the 512-bit
//! registers. It mirrors the AVX2 kernel line for line, with native rotates (`vprord`) and a
//! mask register for the target test.
//!
//! Not run on the development machine (no `avx512f` there); its test skips, saying so, on
//! CPUs without it.
#![allow(unsafe_code)]

use super::layout::Prepared;
use super::sha::K;
use std::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_and_si512, _mm512_andnot_si512, _mm512_loadu_si512,
    _mm512_or_si512, _mm512_ror_epi32, _mm512_set1_epi32, _mm512_srli_epi32,
    _mm512_testn_epi32_mask, _mm512_xor_si512,
};

/// Lanes per batch.
const LANES: usize = 16;

/// Returns true when this CPU has the features the kernel needs.
pub(crate) fn is_supported() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Returns the first fast value in `lo..hi` whose first digest word passes `p.mask`.
pub(crate) fn scan(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    if !is_supported() {
        return super::sha::scan(p, lo, hi);
    }
    // SAFETY: the CPU feature `scan_avx512` is compiled for was checked just above.
    unsafe { scan_avx512(p, lo, hi) }
}

/// Loads sixteen consecutive table entries from `table[from..]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(table: &[u32], from: usize) -> __m512i {
    let words = &table[from..from + LANES];
    // SAFETY: `words` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f")]
fn scan_avx512(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    let splat = |x: u32| _mm512_set1_epi32(x as i32);
    let fixed: [__m512i; 16] = std::array::from_fn(|i| splat(p.w[i]));
    let start: [__m512i; 8] = std::array::from_fn(|i| splat(p.state[i]));
    let mid0 = splat(p.mid[0]);
    let mask = splat(p.mask);
    let mut f = lo;
    while f < hi {
        // Tables are padded, so a last partial batch reads zeros past `hi`; those lanes are
        // ignored below.
        let mut w = fixed;
        w[p.wf] = _mm512_or_si512(w[p.wf], load16(&p.table.a, f));
        w[p.wf + 1] = _mm512_or_si512(w[p.wf + 1], load16(&p.table.b, f));
        let [mut a, mut b, mut c, mut d, mut e, mut ff, mut g, mut h] = start;
        for i in p.start..64 {
            let wi = if i < 16 {
                w[i]
            } else {
                let w15 = w[(i - 15) & 15];
                let w2 = w[(i - 2) & 15];
                let s0 = _mm512_xor_si512(
                    _mm512_xor_si512(_mm512_ror_epi32::<7>(w15), _mm512_ror_epi32::<18>(w15)),
                    _mm512_srli_epi32::<3>(w15),
                );
                let s1 = _mm512_xor_si512(
                    _mm512_xor_si512(_mm512_ror_epi32::<17>(w2), _mm512_ror_epi32::<19>(w2)),
                    _mm512_srli_epi32::<10>(w2),
                );
                let next = _mm512_add_epi32(
                    _mm512_add_epi32(w[i & 15], s0),
                    _mm512_add_epi32(w[(i - 7) & 15], s1),
                );
                w[i & 15] = next;
                next
            };
            let s1 = _mm512_xor_si512(
                _mm512_xor_si512(_mm512_ror_epi32::<6>(e), _mm512_ror_epi32::<11>(e)),
                _mm512_ror_epi32::<25>(e),
            );
            let ch = _mm512_xor_si512(_mm512_and_si512(e, ff), _mm512_andnot_si512(e, g));
            let t1 = _mm512_add_epi32(
                _mm512_add_epi32(h, s1),
                _mm512_add_epi32(ch, _mm512_add_epi32(splat(K[i]), wi)),
            );
            let s0 = _mm512_xor_si512(
                _mm512_xor_si512(_mm512_ror_epi32::<2>(a), _mm512_ror_epi32::<13>(a)),
                _mm512_ror_epi32::<22>(a),
            );
            let maj =
                _mm512_or_si512(_mm512_and_si512(a, b), _mm512_and_si512(c, _mm512_or_si512(a, b)));
            let t2 = _mm512_add_epi32(s0, maj);
            h = g;
            g = ff;
            ff = e;
            e = _mm512_add_epi32(d, t1);
            d = c;
            c = b;
            b = a;
            a = _mm512_add_epi32(t1, t2);
        }
        let h0 = _mm512_add_epi32(a, mid0);
        let lanes = u32::from(_mm512_testn_epi32_mask(h0, mask));
        let valid = if hi - f >= LANES { u32::MAX } else { (1u32 << (hi - f)) - 1 };
        let lanes = lanes & valid;
        if lanes != 0 {
            return Some(f + lanes.trailing_zeros() as usize);
        }
        f += LANES;
    }
    None
}
