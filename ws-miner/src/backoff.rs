//! Reconnect back-off: exponential, capped, with jitter so that a crowd of miners that lost the
//! same server does not hammer it in lock-step when it comes back.

use std::time::Duration;

/// The delays between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The delay before the first retry (before jitter).
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy { base: Duration::from_millis(250), cap: Duration::from_secs(10) }
    }
}

/// The state of one run of failures: each [`Backoff::next_delay`] doubles the delay up to the
/// cap; [`Backoff::reset`] starts over once a connection works again.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    /// Returns a back-off that has seen no failure yet.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, failures: 0 }
    }

    /// Returns the delay before the next attempt: `base * 2^failures`, capped, then scaled by a
    /// random factor in `[0.5, 1.0]` ("equal jitter": never less than half the nominal delay).
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.failures = self.failures.saturating_add(1);
        nominal.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Returns the delay before jitter for the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(30));
        self.policy.base.saturating_mul(factor).min(self.policy.cap)
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter() {
        let policy =
            BackoffPolicy { base: Duration::from_millis(100), cap: Duration::from_millis(1000) };
        let mut backoff = Backoff::new(policy);
        let nominal = [100, 200, 400, 800, 1000, 1000, 1000];
        for expected in nominal {
            assert_eq!(backoff.nominal(), Duration::from_millis(expected));
            let delay = backoff.next_delay();
            assert!(delay >= Duration::from_millis(expected / 2), "{delay:?} < half of {expected}");
            assert!(delay <= Duration::from_millis(expected), "{delay:?} > {expected}");
        }
        for _ in 0..100 {
            assert!(backoff.next_delay() <= policy.cap);
        }
        backoff.reset();
        assert_eq!(backoff.nominal(), policy.base);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut delays = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut backoff = Backoff::new(BackoffPolicy::default());
            delays.insert(backoff.next_delay());
        }
        assert!(delays.len() > 1, "20 first delays were all equal: no jitter");
    }
}
