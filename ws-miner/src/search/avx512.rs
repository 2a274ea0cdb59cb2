//! The AVX-512 kernel: sixteen candidates at once, one per 32-bit lane of the 512-bit
//! registers, with native rotates (`vprord`), three-input logic (`vpternlogd`, which the
//! compiler forms from the and/or/xor below) and a mask register for the target test.
//!
//! The 64 rounds are written out one by one (`round!`), and the round the fast digits start at
//! is a const parameter (one copy of the loop per possible start, chosen by [`scan`]), so the
//! working variables and the message ring stay in registers and every index is a constant. A
//! rolled loop over a run-time start kept the ring in memory and moved the eight working
//! variables every round: 0.84 of the plain C kernel's speed, against above 1 unrolled (see
//! `docs/benchmarks.md`). Everything that depends only on the slow step (the words before the
//! fast digits, the schedule terms built from them alone) is the same in every batch, and the
//! compiler computes it once per call, outside the loop.
#![allow(unsafe_code)]

use super::layout::Prepared;
use super::sha::K;
use std::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_and_si512, _mm512_andnot_si512, _mm512_loadu_si512,
    _mm512_or_si512, _mm512_ror_epi32, _mm512_set1_epi32, _mm512_srli_epi32,
    _mm512_testn_epi32_mask, _mm512_xor_si512,
};

/// Lanes per batch.
pub(crate) const LANES: usize = 16;

/// Returns true when this CPU has the features the kernel needs.
pub(crate) fn is_supported() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Returns the first fast value in `lo..hi` whose first digest word passes `p.mask`.
pub(crate) fn scan(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    if !is_supported() {
        return super::sha::scan(p, lo, hi);
    }
    macro_rules! dispatch {
        ($($s:literal)*) => {
            match p.start {
                // SAFETY: the CPU feature `scan_from` is compiled for was checked just above.
                $($s => unsafe { scan_from::<$s>(p, lo, hi) },)*
                // No layout puts the fast digits past word 13; the portable kernel is right
                // for any start.
                _ => super::sha::scan(p, lo, hi),
            }
        };
    }
    dispatch!(0 1 2 3 4 5 6 7 8 9 10 11 12 13)
}

/// Loads sixteen consecutive table entries from `table[from..]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(table: &[u32], from: usize) -> __m512i {
    let words = &table[from..from + LANES];
    // SAFETY: `words` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

/// The kernel for slow steps whose first fast word is `S` (`p.start == p.wf == S`).
#[target_feature(enable = "avx512f")]
#[allow(unused_assignments)]
fn scan_from<const S: usize>(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    debug_assert!(p.start == S && p.wf == S);
    let splat = |x: u32| _mm512_set1_epi32(x as i32);
    let mid0 = splat(p.mid[0]);
    let mask = splat(p.mask);
    let [s0, s1, s2, s3, s4, s5, s6, s7] = p.state;
    let w0 = p.w;
    let mut f = lo;
    while f < hi {
        // The fast bytes are zero in `p.w`, so OR-ing them in is adding them. Tables are
        // padded, so a last partial batch reads zeros past `hi`; those lanes are ignored below.
        let mut w: [__m512i; 16] = [splat(0); 16];
        for (i, word) in w.iter_mut().enumerate() {
            *word = splat(w0[i]);
        }
        w[S] = _mm512_or_si512(w[S], load16(&p.table.a, f));
        w[S + 1] = _mm512_or_si512(w[S + 1], load16(&p.table.b, f));
        let (mut a, mut b, mut c, mut d) = (splat(s0), splat(s1), splat(s2), splat(s3));
        let (mut e, mut ff, mut g, mut h) = (splat(s4), splat(s5), splat(s6), splat(s7));
        macro_rules! round {
            ($i:literal) => {
                if $i >= S {
                    let wi = if $i < 16 {
                        w[$i & 15]
                    } else {
                        let w15 = w[($i + 1) & 15];
                        let w2 = w[($i + 14) & 15];
                        let s0 = _mm512_xor_si512(
                            _mm512_xor_si512(
                                _mm512_ror_epi32::<7>(w15),
                                _mm512_ror_epi32::<18>(w15),
                            ),
                            _mm512_srli_epi32::<3>(w15),
                        );
                        let s1 = _mm512_xor_si512(
                            _mm512_xor_si512(
                                _mm512_ror_epi32::<17>(w2),
                                _mm512_ror_epi32::<19>(w2),
                            ),
                            _mm512_srli_epi32::<10>(w2),
                        );
                        // Terms from slow-step words first, so their sum is loop-invariant
                        // for the early schedule words.
                        let next = _mm512_add_epi32(
                            _mm512_add_epi32(_mm512_add_epi32(w[$i & 15], s0), w[($i + 9) & 15]),
                            s1,
                        );
                        w[$i & 15] = next;
                        next
                    };
                    let s1 = _mm512_xor_si512(
                        _mm512_xor_si512(_mm512_ror_epi32::<6>(e), _mm512_ror_epi32::<11>(e)),
                        _mm512_ror_epi32::<25>(e),
                    );
                    let ch = _mm512_xor_si512(_mm512_and_si512(e, ff), _mm512_andnot_si512(e, g));
                    // The message word last: in the first round everything before it is the
                    // same for every batch.
                    let t1 = _mm512_add_epi32(
                        _mm512_add_epi32(
                            _mm512_add_epi32(h, s1),
                            _mm512_add_epi32(ch, splat(K[$i])),
                        ),
                        wi,
                    );
                    let s0 = _mm512_xor_si512(
                        _mm512_xor_si512(_mm512_ror_epi32::<2>(a), _mm512_ror_epi32::<13>(a)),
                        _mm512_ror_epi32::<22>(a),
                    );
                    let maj = _mm512_or_si512(
                        _mm512_and_si512(a, b),
                        _mm512_and_si512(c, _mm512_or_si512(a, b)),
                    );
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
            };
        }
        macro_rules! rounds {
            ($($i:literal)*) => { $(round!($i);)* };
        }
        rounds!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        rounds!(16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
        rounds!(32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47);
        rounds!(48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);
        let _ = (b, c, d, ff, g, h);
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
