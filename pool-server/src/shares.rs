//! Shares on the server's side: each opted-in WebSocket connection's share target and its
//! variable difficulty ([`Vardiff`]), its proof rate and the cut-off for connections whose
//! shares are mostly invalid ([`ShareConn`]), and the settings ([`ShareSettings`]).
//!
//! An opted-in connection's proofs are limited per connection, not per address: it gets an
//! allowance of `--proof-rate` of its own, so a classroom behind one NAT address does not spend
//! the address's allowance on shares, and the course's miners there keep all of it. Vardiff
//! keeps an honest miner at one to two shares per interval, far below it.
//!
//! Pure and synchronous (callers pass the time), so the rules are tested without a clock.

use std::time::{Duration, Instant};

use protocol::Difficulty;
use protocol::share::block_bits;

use crate::chain::ShareTarget;
use crate::rate::TokenBucket;

/// The default share rate each connection is steered toward: one share per this interval.
///
/// A hashrate estimated from N shares is off by about 1/√N, and vardiff leaves a miner between
/// one and two times this rate: at 500 ms that is 240 to 480 shares in the 120 s hashrate window,
/// about ±5 %, so the `/workers` figure is within ±15 % of the miner's own rate with room to
/// spare. At one share a second it was at the edge (about ±7 %).
pub const DEFAULT_SHARE_INTERVAL: Duration = Duration::from_millis(500);
/// The share target a connection starts at, in leading zero bits (capped below the block's).
pub const DEFAULT_START_BITS: u8 = 16;
/// The easiest share target vardiff goes down to.
pub const DEFAULT_MIN_BITS: u8 = 8;
/// Vardiff looks again after this many shares...
pub const RETARGET_SHARES: u32 = 8;
/// ...or after this many intervals, whichever comes first.
pub const RETARGET_INTERVALS: u32 = 4;
/// How far one retarget may move the target, in bits (×2 per bit).
pub const MAX_STEP_BITS: u8 = 8;
/// A connection is judged for the invalid-share cut-off once it sent this many share proofs...
pub const CUTOFF_MIN_JUDGED: u32 = 20;
/// ...and is cut off when more than this share of them were invalid or duplicates.
pub const CUTOFF_INVALID_RATIO: f64 = 0.5;
/// After vardiff raises a connection's target, shares that meet the one before are still
/// accepted (and counted at it) for this long: the miner found them before the new target
/// reached it, and they are honest work, not invalid shares.
pub const TARGET_GRACE: Duration = Duration::from_secs(2);

/// Share settings for every connection.
#[derive(Debug, Clone, Copy)]
pub struct ShareSettings {
    /// The share rate vardiff steers toward: one share per `interval`.
    pub interval: Duration,
    /// The target a connection starts at.
    pub start_bits: u8,
    /// The easiest target.
    pub min_bits: u8,
}

impl Default for ShareSettings {
    fn default() -> Self {
        ShareSettings {
            interval: DEFAULT_SHARE_INTERVAL,
            start_bits: DEFAULT_START_BITS,
            min_bits: DEFAULT_MIN_BITS,
        }
    }
}

/// One connection's share target, retargeted toward one share per `interval`.
///
/// Every [`RETARGET_SHARES`] shares, or every [`RETARGET_INTERVALS`] intervals when shares are
/// rarer, it compares the shares seen with the shares wanted over that time and moves the target
/// by the base-2 logarithm of the ratio (rounded toward zero, at most [`MAX_STEP_BITS`]): a miner
/// twice as fast as wanted gets one bit more. So a fast miner is not let flood the server for
/// long, and a slow one is brought down to shares it can find. The target stays within
/// `min_bits..block_bits` (a share is always easier than a block).
///
/// Each connection starts at `start_bits`, even one from an id seen before: several machines
/// often mine under one id (one `my_id.txt`), so the id's hashrate says little about this
/// connection's. The climb is short: a fast miner's first 8 shares move it up to 8 bits at once.
#[derive(Debug, Clone)]
pub struct Vardiff {
    bits: u8,
    min: u8,
    max: u8,
    interval: Duration,
    since: Instant,
    shares: u32,
}

impl Vardiff {
    /// Starts at `settings.start_bits`, below the block's bits at `difficulty`.
    pub fn new(settings: &ShareSettings, difficulty: Difficulty, now: Instant) -> Self {
        let max = block_bits(difficulty).saturating_sub(1).max(1);
        let min = settings.min_bits.clamp(1, max);
        Vardiff {
            bits: settings.start_bits.clamp(min, max),
            min,
            max,
            interval: settings.interval,
            since: now,
            shares: 0,
        }
    }

    /// The current target.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Counts a share; returns the new target when it changed.
    pub fn on_share(&mut self, now: Instant) -> Option<u8> {
        self.shares += 1;
        self.retarget(now)
    }

    /// Looks at the rate without a share (a slow miner); returns the new target when it changed.
    pub fn on_tick(&mut self, now: Instant) -> Option<u8> {
        self.retarget(now)
    }

    fn retarget(&mut self, now: Instant) -> Option<u8> {
        let elapsed = now.saturating_duration_since(self.since);
        let window = self.interval * RETARGET_INTERVALS;
        if self.shares < RETARGET_SHARES && elapsed < window {
            return None;
        }
        // Shares seen over shares wanted; a window without shares counts as half of one.
        let wanted = elapsed.as_secs_f64() / self.interval.as_secs_f64();
        let seen = f64::from(self.shares).max(0.5);
        let ratio = seen / wanted.max(f64::MIN_POSITIVE);
        let step = ratio.log2().trunc().clamp(-f64::from(MAX_STEP_BITS), f64::from(MAX_STEP_BITS));
        self.since = now;
        self.shares = 0;
        // `step` is a whole number within ±MAX_STEP_BITS.
        let bits =
            (i32::from(self.bits) + step as i32).clamp(i32::from(self.min), i32::from(self.max));
        let bits = u8::try_from(bits).unwrap_or(self.max);
        (bits != self.bits).then(|| {
            self.bits = bits;
            bits
        })
    }
}

/// What the reader of an opted-in connection keeps: its vardiff, its proof allowance and its
/// share verdicts.
#[derive(Debug, Clone)]
pub struct ShareConn {
    /// The connection's target.
    pub vardiff: Vardiff,
    rate: TokenBucket,
    judged: u32,
    invalid: u32,
    /// The easiest target raised from within [`TARGET_GRACE`], and until when it holds.
    grace: Option<(u8, Instant)>,
}

impl ShareConn {
    /// Opts a connection in; its proofs are allowed `proofs_per_second` on average and
    /// `burst` at once.
    pub fn new(
        settings: &ShareSettings,
        difficulty: Difficulty,
        (proofs_per_second, burst): (f64, f64),
        now: Instant,
    ) -> Self {
        ShareConn {
            vardiff: Vardiff::new(settings, difficulty, now),
            rate: TokenBucket::new(proofs_per_second, burst, now),
            judged: 0,
            invalid: 0,
            grace: None,
        }
    }

    /// The target shares are judged at now: the current one, and the one before a recent
    /// raise (see [`TARGET_GRACE`]).
    pub fn target(&self, now: Instant) -> ShareTarget {
        let grace = self.grace.filter(|(_, until)| now < *until).map(|(bits, _)| bits);
        ShareTarget { bits: self.vardiff.bits(), grace: grace.filter(|g| *g < self.vardiff.bits()) }
    }

    /// Counts an accepted share for vardiff; returns the new target when it changed.
    pub fn on_share(&mut self, now: Instant) -> Option<u8> {
        let before = self.vardiff.bits();
        let changed = self.vardiff.on_share(now);
        self.note_retarget(before, changed, now)
    }

    /// Lets vardiff look at the rate without a share; returns the new target when it changed.
    pub fn on_tick(&mut self, now: Instant) -> Option<u8> {
        let before = self.vardiff.bits();
        let changed = self.vardiff.on_tick(now);
        self.note_retarget(before, changed, now)
    }

    fn note_retarget(&mut self, before: u8, changed: Option<u8>, now: Instant) -> Option<u8> {
        if let Some(after) = changed
            && after > before
        {
            // Shares in flight met `before` (or an easier target still in its grace).
            let easiest = self.target(now).grace.map_or(before, |g| g.min(before));
            self.grace = Some((easiest, now + TARGET_GRACE));
        }
        changed
    }

    /// Takes one proof from the connection's allowance.
    ///
    /// # Errors
    /// Why the proof is refused: too many, and how long to wait.
    pub fn allow(&mut self, now: Instant) -> Result<(), String> {
        self.rate.take(now).map_err(|limited| {
            format!(
                "too many proofs on this connection: at most {:.0} a second (twice that at \
                 once) while vardiff aims at one share per {} ms; try again in {} ms",
                self.rate.per_second(),
                self.vardiff.interval.as_millis(),
                limited.retry_after.as_millis().max(1)
            )
        })
    }

    /// Counts a judged share proof; `invalid` when it met no target or was a duplicate.
    pub fn judged(&mut self, invalid: bool) {
        self.judged = self.judged.saturating_add(1);
        self.invalid = self.invalid.saturating_add(u32::from(invalid));
    }

    /// Returns why the connection should be cut off: mostly invalid shares.
    pub fn cut_off(&self) -> Option<String> {
        (self.judged >= CUTOFF_MIN_JUDGED
            && f64::from(self.invalid) > CUTOFF_INVALID_RATIO * f64::from(self.judged))
        .then(|| {
            format!(
                "{} of the {} share proofs from this connection were invalid (below the share \
                 target and not a block) or duplicates; closing it",
                self.invalid, self.judged
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn six() -> Difficulty {
        Difficulty::new(6).expect("6")
    }

    /// Feeds shares at `per_second` for `seconds`, ticking every interval; returns the target.
    fn converge(per_second: f64, seconds: u32) -> u8 {
        let start = Instant::now();
        let settings = ShareSettings::default();
        let mut v = Vardiff::new(&settings, six(), start);
        // A miner of `per_second × 2^16` hashes/s: its share rate halves with each bit added.
        let hashrate = per_second * 65536.0;
        let mut t = 0.0;
        let mut next_tick = 1.0;
        while t < f64::from(seconds) {
            let rate = hashrate / 2f64.powi(i32::from(v.bits()));
            let gap = 1.0 / rate;
            if t + gap > next_tick {
                t = next_tick;
                next_tick += 1.0;
                v.on_tick(start + Duration::from_secs_f64(t));
            } else {
                t += gap;
                v.on_share(start + Duration::from_secs_f64(t));
            }
        }
        v.bits()
    }

    #[test]
    fn a_fast_miner_is_raised_and_a_slow_one_lowered_to_about_one_share_a_second() {
        // 2^20 hashes/s wants 20 bits for one share a second; within a factor of 2.
        let fast = converge(16.0, 120);
        assert!((19..=21).contains(&fast), "fast miner settled at {fast} bits");
        // 2^11 hashes/s wants 11 bits.
        let slow = converge(1.0 / 32.0, 600);
        assert!((10..=12).contains(&slow), "slow miner settled at {slow} bits");
    }

    #[test]
    fn the_target_stays_below_the_block_and_above_the_floor() {
        let start = Instant::now();
        let settings = ShareSettings { min_bits: 10, ..ShareSettings::default() };
        let mut v = Vardiff::new(&settings, Difficulty::new(4).expect("4"), start);
        for i in 0..10_000u64 {
            v.on_share(start + Duration::from_micros(i));
        }
        assert_eq!(v.bits(), 15, "never a share as hard as a 16-bit block");
        let mut later = start;
        for _ in 0..100 {
            later += Duration::from_secs(10);
            v.on_tick(later);
        }
        assert_eq!(v.bits(), 10, "never below --share-min-bits");
    }

    #[test]
    fn the_target_before_a_raise_holds_for_the_grace() {
        let start = Instant::now();
        let mut c = ShareConn::new(&ShareSettings::default(), six(), (100.0, 200.0), start);
        assert_eq!(c.target(start), ShareTarget { bits: 16, grace: None });
        // Eight shares at once: vardiff raises the target by 8 bits.
        let mut raised = None;
        for _ in 0..RETARGET_SHARES {
            raised = raised.or(c.on_share(start + Duration::from_millis(10)));
        }
        assert_eq!(raised, Some(23), "capped one below the block's 24 bits");
        let soon = start + Duration::from_millis(500);
        assert_eq!(c.target(soon), ShareTarget { bits: 23, grace: Some(16) });
        let later = start + Duration::from_millis(10) + TARGET_GRACE;
        assert_eq!(c.target(later), ShareTarget { bits: 23, grace: None });
        // Lowering gives no grace: shares at the new, easier target meet it anyway.
        let mut slow = later;
        let mut lowered = None;
        while lowered.is_none() {
            slow += Duration::from_secs(10);
            lowered = c.on_tick(slow);
        }
        assert_eq!(c.target(slow).grace, None);
    }

    #[test]
    fn mostly_invalid_connections_are_cut_off() {
        let mut c =
            ShareConn::new(&ShareSettings::default(), six(), (100.0, 200.0), Instant::now());
        for _ in 0..19 {
            c.judged(true);
        }
        assert_eq!(c.cut_off(), None, "not before 20 verdicts");
        c.judged(true);
        assert!(c.cut_off().is_some());
        let mut ok =
            ShareConn::new(&ShareSettings::default(), six(), (100.0, 200.0), Instant::now());
        for i in 0..40 {
            ok.judged(i % 3 == 0);
        }
        assert_eq!(ok.cut_off(), None, "a third invalid is tolerated");
    }
}
