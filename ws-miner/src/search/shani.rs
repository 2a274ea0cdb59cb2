//! The SHA-NI kernels: one compression per candidate with the x86 SHA extensions, `W`
//! candidates interleaved so that while one candidate's `sha256rnds2` waits on the previous
//! one's result, the others' run. How many candidates hide that latency depends on the CPU
//! (the instruction's latency over its issue interval), so each width (2, 3 and 4) is a kernel
//! of its own and the start-up calibration picks the fastest (see `kernel`).
//!
//! The rounds are grouped by four (one message vector); groups wholly before the fast digits
//! are skipped, their result coming from [`Prepared::state4`]. The group holding the first fast
//! word and whether the fast bytes spill into the next group are const parameters (one copy of
//! the loop per case, chosen by [`scan`]), so every message vector has a constant index and stays
//! in a register. With a run-time group index the vectors lived on the stack and were reloaded
//! in every group.
#![allow(unsafe_code)]

use super::layout::Prepared;
use super::sha::K;
use std::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_and_si128, _mm_extract_epi32, _mm_or_si128,
    _mm_set_epi32, _mm_set1_epi32, _mm_setr_epi32, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32,
    _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
};

/// Returns true when this CPU has the features the kernels need.
pub(crate) fn is_supported() -> bool {
    is_x86_feature_detected!("sha")
        && is_x86_feature_detected!("sse2")
        && is_x86_feature_detected!("ssse3")
        && is_x86_feature_detected!("sse4.1")
}

/// Returns the first fast value in `lo..hi` whose first digest word passes `p.mask`, hashing
/// `ways` candidates interleaved (2, 3 or 4; other values use the portable kernel).
pub(crate) fn scan(p: &Prepared<'_>, lo: usize, hi: usize, ways: usize) -> Option<usize> {
    if !is_supported() || p.wf > 13 {
        // No layout puts the fast digits past word 13.
        return super::sha::scan(p, lo, hi);
    }
    let (group, split) = (p.wf / 4, p.wf % 4 == 3);
    macro_rules! dispatch {
        ($($w:literal)*) => {
            match (ways, group, split) {
                $(
                    // SAFETY (every arm): the CPU features `scan_sha` is compiled for were
                    // checked just above.
                    ($w, 0, false) => unsafe { scan_sha::<$w, 0, false>(p, lo, hi) },
                    ($w, 0, true) => unsafe { scan_sha::<$w, 0, true>(p, lo, hi) },
                    ($w, 1, false) => unsafe { scan_sha::<$w, 1, false>(p, lo, hi) },
                    ($w, 1, true) => unsafe { scan_sha::<$w, 1, true>(p, lo, hi) },
                    ($w, 2, false) => unsafe { scan_sha::<$w, 2, false>(p, lo, hi) },
                    ($w, 2, true) => unsafe { scan_sha::<$w, 2, true>(p, lo, hi) },
                    ($w, _, _) => unsafe { scan_sha::<$w, 3, false>(p, lo, hi) },
                )*
                _ => super::sha::scan(p, lo, hi),
            }
        };
    }
    dispatch!(2 3 4)
}

/// Returns the round constants of group `g` (rounds 4g..4g+4), first in the low lane.
#[inline]
#[target_feature(enable = "sse2")]
fn k4(g: usize) -> __m128i {
    _mm_setr_epi32(K[4 * g] as i32, K[4 * g + 1] as i32, K[4 * g + 2] as i32, K[4 * g + 3] as i32)
}

/// Returns message vector `g` (words 4g..4g+4) of `w`, first word in the low lane.
#[inline]
#[target_feature(enable = "sse2")]
fn load(w: &[u32; 16], g: usize) -> __m128i {
    _mm_setr_epi32(w[4 * g] as i32, w[4 * g + 1] as i32, w[4 * g + 2] as i32, w[4 * g + 3] as i32)
}

/// Returns a vector with all ones in lane `i % 4`, zeros elsewhere.
#[inline]
#[target_feature(enable = "sse2")]
fn lane(i: usize) -> __m128i {
    let mut m = [0i32; 4];
    m[i % 4] = -1;
    _mm_setr_epi32(m[0], m[1], m[2], m[3])
}

/// The kernel for `W` candidates at a time, the first fast word in group `G` (`p.wf / 4`), and
/// the second fast word in group `G + 1` when `SPLIT` (`p.wf % 4 == 3`).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn scan_sha<const W: usize, const G: usize, const SPLIT: bool>(
    p: &Prepared<'_>,
    lo: usize,
    hi: usize,
) -> Option<usize> {
    debug_assert!(p.wf / 4 == G && (p.wf % 4 == 3) == SPLIT && p.start4 == 4 * G);
    let gb = if SPLIT { G + 1 } else { G };
    let [a, b, c, d, e, f, g, h] = p.state4.map(|x| x as i32);
    // The SHA instructions keep the state as ABEF and CDGH, A in the top lane.
    let abef0 = _mm_set_epi32(a, b, e, f);
    let cdgh0 = _mm_set_epi32(c, d, g, h);
    let mid0 = p.mid[0];
    let fixed = [load(&p.w, 0), load(&p.w, 1), load(&p.w, 2), load(&p.w, 3)];
    let (lane_a, lane_b) = (lane(p.wf), lane(p.wf + 1));
    let (table_a, table_b) = (&p.table.a, &p.table.b);
    let mut x = lo;
    while x < hi {
        let mut abef = [abef0; W];
        let mut cdgh = [cdgh0; W];
        // Only the groups holding words wf and wf + 1 differ from the slow step's vectors.
        // The fast bytes go in through registers: scalar stores read back as a vector would
        // stall store forwarding. Candidates past `hi` repeat the last one; only real ones
        // are reported.
        let mut m = [fixed; W];
        for (i, v) in m.iter_mut().enumerate() {
            let xi = (x + i).min(hi - 1);
            let fa = _mm_and_si128(_mm_set1_epi32(table_a[xi] as i32), lane_a);
            let fb = _mm_and_si128(_mm_set1_epi32(table_b[xi] as i32), lane_b);
            v[G] = _mm_or_si128(v[G], fa);
            v[gb] = _mm_or_si128(v[gb], fb);
        }
        macro_rules! rounds4 {
            ($g:expr) => {{
                let mut t = [abef0; W];
                for i in 0..W {
                    t[i] = _mm_add_epi32(m[i][$g & 3], k4($g));
                }
                for i in 0..W {
                    cdgh[i] = _mm_sha256rnds2_epu32(cdgh[i], abef[i], t[i]);
                }
                for i in 0..W {
                    abef[i] =
                        _mm_sha256rnds2_epu32(abef[i], cdgh[i], _mm_shuffle_epi32(t[i], 0x0E));
                }
            }};
        }
        macro_rules! group {
            ($g:expr) => {{
                // Words 4g..4g+4 from the vectors of groups g-4 .. g-1 (ring index g & 3).
                for v in m.iter_mut() {
                    let t = _mm_sha256msg1_epu32(v[$g & 3], v[($g + 1) & 3]);
                    let t = _mm_add_epi32(t, _mm_alignr_epi8(v[($g + 3) & 3], v[($g + 2) & 3], 4));
                    v[$g & 3] = _mm_sha256msg2_epu32(t, v[($g + 3) & 3]);
                }
                rounds4!($g);
            }};
        }
        // Groups before the fast digits were run once per slow step (`state4`).
        if G == 0 {
            rounds4!(0);
        }
        if G <= 1 {
            rounds4!(1);
        }
        if G <= 2 {
            rounds4!(2);
        }
        rounds4!(3);
        group!(4);
        group!(5);
        group!(6);
        group!(7);
        group!(8);
        group!(9);
        group!(10);
        group!(11);
        group!(12);
        group!(13);
        group!(14);
        group!(15);
        for (i, state) in abef.iter().enumerate() {
            let h0 = (_mm_extract_epi32(*state, 3) as u32).wrapping_add(mid0);
            if h0 & p.mask == 0 && x + i < hi {
                return Some(x + i);
            }
        }
        x += W;
    }
    None
}
