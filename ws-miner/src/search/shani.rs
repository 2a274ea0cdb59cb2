//! The SHA-NI kernel: one compression per candidate with the x86 SHA extensions, [`WAYS`]
//! candidates interleaved so that while one candidate's `sha256rnds2` waits on the previous
//! one's result (4 cycles on Zen 3), the others' run.
//!
//! The rounds are grouped by four (one message vector); groups wholly before the fast digits
//! are skipped, their result coming from [`Prepared::state4`].
#![allow(unsafe_code)]

use super::layout::Prepared;
use super::sha::K;
use std::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_and_si128, _mm_extract_epi32, _mm_or_si128,
    _mm_set_epi32, _mm_set1_epi32, _mm_setr_epi32, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32,
    _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
};

/// Returns true when this CPU has the features the kernel needs.
pub(crate) fn is_supported() -> bool {
    is_x86_feature_detected!("sha")
        && is_x86_feature_detected!("sse2")
        && is_x86_feature_detected!("ssse3")
        && is_x86_feature_detected!("sse4.1")
}

/// Returns the first fast value in `lo..hi` whose first digest word passes `p.mask`.
pub(crate) fn scan(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    if !is_supported() {
        return super::sha::scan(p, lo, hi);
    }
    // SAFETY: the CPU features `scan_sha` is compiled for were checked just above.
    unsafe { scan_sha(p, lo, hi) }
}

/// Returns message vector `g` (words 4g..4g+4) of `w`, first word in the low lane.
#[inline]
#[target_feature(enable = "sse2")]
fn load(w: &[u32; 16], g: usize) -> __m128i {
    _mm_setr_epi32(w[4 * g] as i32, w[4 * g + 1] as i32, w[4 * g + 2] as i32, w[4 * g + 3] as i32)
}

/// How many candidates one pass of the loop hashes, interleaved. Measured on Zen 3 by one
/// thread alternating 250 ms slices of each width (20 rounds, three runs): 2 ways 27.3, 27.8,
/// 26.2 M/s; 3 ways 32.2, 32.8, 30.3; 4 ways 30.5, 32.0, 28.0; 5 ways 28.0, 30.5, 27.4. Why the
/// wider loops are slower was not examined (register pressure is a guess: 16 XMM registers).
const WAYS: usize = 3;

#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn scan_sha(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    let [a, b, c, d, e, f, g, h] = p.state4.map(|x| x as i32);
    // The SHA instructions keep the state as ABEF and CDGH, A in the top lane.
    let abef0 = _mm_set_epi32(a, b, e, f);
    let cdgh0 = _mm_set_epi32(c, d, g, h);
    let skip = p.start4 / 4;
    let k: [__m128i; 16] = std::array::from_fn(|i| {
        _mm_setr_epi32(
            K[4 * i] as i32,
            K[4 * i + 1] as i32,
            K[4 * i + 2] as i32,
            K[4 * i + 3] as i32,
        )
    });
    let mid0 = p.mid[0];
    let fixed = [load(&p.w, 0), load(&p.w, 1), load(&p.w, 2), load(&p.w, 3)];
    let (ga, gb) = (p.wf / 4, (p.wf + 1) / 4);
    let lane = |i: usize| {
        let mut m = [0i32; 4];
        m[i % 4] = -1;
        _mm_setr_epi32(m[0], m[1], m[2], m[3])
    };
    let (lane_a, lane_b) = (lane(p.wf), lane(p.wf + 1));
    let mut x = lo;
    while x < hi {
        // Candidates past `hi` repeat the last one; only real ones are reported.
        let xs: [usize; WAYS] = std::array::from_fn(|i| (x + i).min(hi - 1));
        let mut abef = [abef0; WAYS];
        let mut cdgh = [cdgh0; WAYS];
        // Only the groups holding words wf and wf + 1 differ from the slow step's vectors.
        // The fast bytes go in through registers: scalar stores read back as a vector would
        // stall store forwarding.
        let mut m = [fixed; WAYS];
        for i in 0..WAYS {
            let fa = _mm_and_si128(_mm_set1_epi32(p.table.a[xs[i]] as i32), lane_a);
            let fb = _mm_and_si128(_mm_set1_epi32(p.table.b[xs[i]] as i32), lane_b);
            m[i][ga] = _mm_or_si128(m[i][ga], fa);
            m[i][gb] = _mm_or_si128(m[i][gb], fb);
        }
        macro_rules! rounds4 {
            ($g:expr) => {{
                let t: [__m128i; WAYS] =
                    std::array::from_fn(|i| _mm_add_epi32(m[i][$g & 3], k[$g]));
                for i in 0..WAYS {
                    cdgh[i] = _mm_sha256rnds2_epu32(cdgh[i], abef[i], t[i]);
                }
                for i in 0..WAYS {
                    abef[i] =
                        _mm_sha256rnds2_epu32(abef[i], cdgh[i], _mm_shuffle_epi32(t[i], 0x0E));
                }
            }};
        }
        macro_rules! group {
            ($g:expr) => {{
                // Words 4g..4g+4 from the vectors of groups g-4 .. g-1 (ring index g & 3).
                for i in 0..WAYS {
                    let v = &mut m[i];
                    let t = _mm_sha256msg1_epu32(v[$g & 3], v[($g + 1) & 3]);
                    let t = _mm_add_epi32(t, _mm_alignr_epi8(v[($g + 3) & 3], v[($g + 2) & 3], 4));
                    v[$g & 3] = _mm_sha256msg2_epu32(t, v[($g + 3) & 3]);
                }
                rounds4!($g);
            }};
        }
        // Groups before the fast digits were run once per slow step (`state4`).
        if skip == 0 {
            rounds4!(0);
        }
        if skip <= 1 {
            rounds4!(1);
        }
        if skip <= 2 {
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
        x += WAYS;
    }
    None
}
