//! The SHA-NI kernel: one compression per candidate with the x86 SHA extensions, two
//! candidates interleaved so that one's `sha256rnds2` runs while the other's waits on latency.
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
        let y = if x + 1 < hi { x + 1 } else { x };
        let (mut ax, mut cx, mut ay, mut cy) = (abef0, cdgh0, abef0, cdgh0);
        // Only the groups holding words wf and wf + 1 differ from the slow step's vectors.
        // The fast bytes go in through registers: scalar stores read back as a vector would
        // stall store forwarding.
        let (mut mx, mut my) = (fixed, fixed);
        mx[ga] = _mm_or_si128(mx[ga], _mm_and_si128(_mm_set1_epi32(p.table.a[x] as i32), lane_a));
        my[ga] = _mm_or_si128(my[ga], _mm_and_si128(_mm_set1_epi32(p.table.a[y] as i32), lane_a));
        mx[gb] = _mm_or_si128(mx[gb], _mm_and_si128(_mm_set1_epi32(p.table.b[x] as i32), lane_b));
        my[gb] = _mm_or_si128(my[gb], _mm_and_si128(_mm_set1_epi32(p.table.b[y] as i32), lane_b));
        macro_rules! rounds4 {
            ($g:expr) => {{
                let tx = _mm_add_epi32(mx[$g & 3], k[$g]);
                let ty = _mm_add_epi32(my[$g & 3], k[$g]);
                cx = _mm_sha256rnds2_epu32(cx, ax, tx);
                cy = _mm_sha256rnds2_epu32(cy, ay, ty);
                let tx = _mm_shuffle_epi32(tx, 0x0E);
                let ty = _mm_shuffle_epi32(ty, 0x0E);
                ax = _mm_sha256rnds2_epu32(ax, cx, tx);
                ay = _mm_sha256rnds2_epu32(ay, cy, ty);
            }};
        }
        macro_rules! schedule {
            ($m:ident, $g:expr) => {{
                // Words 4g..4g+4 from the vectors of groups g-4 .. g-1 (ring index g & 3).
                let t = _mm_sha256msg1_epu32($m[$g & 3], $m[($g + 1) & 3]);
                let t = _mm_add_epi32(t, _mm_alignr_epi8($m[($g + 3) & 3], $m[($g + 2) & 3], 4));
                $m[$g & 3] = _mm_sha256msg2_epu32(t, $m[($g + 3) & 3]);
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
        macro_rules! group {
            ($g:expr) => {{
                schedule!(mx, $g);
                schedule!(my, $g);
                rounds4!($g);
            }};
        }
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
        let hx = (_mm_extract_epi32(ax, 3) as u32).wrapping_add(mid0);
        if hx & p.mask == 0 {
            return Some(x);
        }
        let hy = (_mm_extract_epi32(ay, 3) as u32).wrapping_add(mid0);
        if y != x && hy & p.mask == 0 {
            return Some(y);
        }
        x += 2;
    }
    None
}
