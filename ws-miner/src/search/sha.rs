//! Scalar SHA-256 pieces the search needs: the round constants, the rounds that are run once
//! per slow step (the precomputation), and the portable kernel that needs no CPU extension.
//!
//! This is not a general SHA-256: it only runs one compression from a saved state, starting at
//! a given round, and reports the first digest word, which is all the target check needs.

use super::layout::Prepared;

/// The SHA-256 round constants.
pub(crate) const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The SHA-256 initial chaining value.
pub(crate) const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Runs round `i` on `s` (the working variables a..h) with message word `w`.
#[inline(always)]
pub(crate) fn round(s: &mut [u32; 8], i: usize, w: u32) {
    let [a, b, c, d, e, f, g, h] = *s;
    let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
    let ch = (e & f) ^ (!e & g);
    let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w);
    let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
    let maj = (a & b) ^ (a & c) ^ (b & c);
    let t2 = s0.wrapping_add(maj);
    *s = [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g];
}

/// Returns the next schedule word from the 16-word ring `w`, at position `i` (16..64).
#[inline(always)]
fn expand(w: &mut [u32; 16], i: usize) -> u32 {
    let w15 = w[(i - 15) & 15];
    let w2 = w[(i - 2) & 15];
    let s0 = w15.rotate_right(7) ^ w15.rotate_right(18) ^ (w15 >> 3);
    let s1 = w2.rotate_right(17) ^ w2.rotate_right(19) ^ (w2 >> 10);
    let next = w[i & 15].wrapping_add(s0).wrapping_add(w[(i - 7) & 15]).wrapping_add(s1);
    w[i & 15] = next;
    next
}

/// Returns the state after the first `rounds` rounds (at most 16) of the block `w`, from `state`.
pub(crate) fn first_rounds(state: &[u32; 8], w: &[u32; 16], rounds: usize) -> [u32; 8] {
    let mut s = *state;
    for (i, &word) in w.iter().enumerate().take(rounds) {
        round(&mut s, i, word);
    }
    s
}

/// Returns the first digest word of the block `w` (whose first `p.start` rounds are already in
/// `p.state`), chained onto `p.mid`.
#[inline(always)]
fn first_word(p: &Prepared<'_>, mut w: [u32; 16]) -> u32 {
    // Named working variables (not an array) so they stay in registers.
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = p.state;
    macro_rules! step {
        ($i:expr, $wi:expr) => {{
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[$i]).wrapping_add($wi);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) | (c & (a | b));
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }};
    }
    for i in p.start..16 {
        step!(i, w[i]);
    }
    // Fixed bounds, so this loop unrolls and the ring indices become constants.
    #[allow(clippy::needless_range_loop)]
    for i in 16..64 {
        let wi = expand(&mut w, i);
        step!(i, wi);
    }
    a.wrapping_add(p.mid[0])
}

/// The portable kernel: returns the first fast value in `lo..hi` whose digest's first word
/// passes `p.mask`, one candidate at a time.
pub(crate) fn scan(p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
    (lo..hi).find(|&f| {
        let mut w = p.w;
        w[p.wf] |= p.table.a[f];
        w[p.wf + 1] |= p.table.b[f];
        first_word(p, w) & p.mask == 0
    })
}
