//! [`RateLimiter`]: per-address token buckets for the requests that write (proofs over HTTP and
//! WebSocket alike, transactions), so that one client cannot flood the judge or the database.
//!
//! Each address may send `per_second` requests a second on average and up to `burst` at once.
//! IPv6 addresses are grouped by their /64 prefix, which one host usually holds whole. The table
//! of addresses is bounded: once it holds [`MAX_TRACKED_ADDRESSES`], the addresses whose bucket
//! has refilled are forgotten, and a new address is refused while it is still full.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The most addresses whose recent writes are remembered at once.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// A refusal: how long until one more request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    /// The wait until the next token.
    pub retry_after: Duration,
}

/// Token buckets keyed by client address.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Allows `per_second` requests a second per address on average, `burst` at once
    /// (both at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the average rate allowed per address, per second.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Returns how many requests an address may send at once.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Takes one token for `ip`.
    ///
    /// # Errors
    /// When `ip` has none left (or the table of addresses is full): nothing is taken.
    pub fn check(&self, ip: IpAddr) -> Result<(), Limited> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        let key = key_of(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED_ADDRESSES {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.refilled(now, per_second) < burst);
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                return Err(Limited { retry_after: Duration::from_secs_f64(burst / per_second) });
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let tokens = bucket.refilled(now, self.per_second).min(self.burst);
        if tokens < 1.0 {
            let wait = (1.0 - tokens) / self.per_second;
            return Err(Limited { retry_after: Duration::from_secs_f64(wait) });
        }
        *bucket = Bucket { tokens: tokens - 1.0, at: now };
        Ok(())
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, per_second: f64) -> f64 {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_second
    }
}

/// One token bucket, for a limit kept by its owner (a connection) rather than per address.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    bucket: Bucket,
}

impl TokenBucket {
    /// Allows `per_second` takes a second on average and `burst` at once (both at least 1),
    /// starting full at `now`.
    pub fn new(per_second: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            per_second: per_second.max(1.0),
            burst,
            bucket: Bucket { tokens: burst, at: now },
        }
    }

    /// Returns the average rate allowed, per second.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Takes one token at `now`.
    ///
    /// # Errors
    /// When none is left: nothing is taken.
    pub fn take(&mut self, now: Instant) -> Result<(), Limited> {
        let tokens = self.bucket.refilled(now, self.per_second).min(self.burst);
        if tokens < 1.0 {
            let wait = (1.0 - tokens) / self.per_second;
            return Err(Limited { retry_after: Duration::from_secs_f64(wait) });
        }
        self.bucket = Bucket { tokens: tokens - 1.0, at: now };
        Ok(())
    }
}

/// The address a limit is kept for: IPv4 as is (and IPv4-mapped IPv6 as IPv4), IPv6 by /64
/// (the /64's first address), which one host usually holds whole. The rate limits and the
/// per-address connection cap (`serve`) group addresses alike.
pub fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert!(limiter.check_at(a, t0).is_ok());
        }
        let refused = limiter.check_at(a, t0).expect_err("the burst is spent");
        assert!((refused.retry_after.as_secs_f64() - 0.1).abs() < 1e-9);
        // Another address has its own bucket.
        assert!(limiter.check_at(ip("10.0.0.2"), t0).is_ok());
        // 100 ms later, one token is back; never more than the burst.
        assert!(limiter.check_at(a, t0 + Duration::from_millis(100)).is_ok());
        assert!(limiter.check_at(a, t0 + Duration::from_millis(100)).is_err());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check_at(a, later).is_ok());
        }
        assert!(limiter.check_at(a, later).is_err());
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(4.0, 2.0, t0);
        assert!(bucket.take(t0).is_ok());
        assert!(bucket.take(t0).is_ok());
        let refused = bucket.take(t0).expect_err("the burst is spent");
        assert!((refused.retry_after.as_secs_f64() - 0.25).abs() < 1e-9);
        assert!(bucket.take(t0 + Duration::from_millis(250)).is_ok());
        assert!(bucket.take(t0 + Duration::from_millis(250)).is_err());
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.take(later).is_ok() && bucket.take(later).is_ok());
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert!(limiter.check_at(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(limiter.check_at(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert!(limiter.check_at(ip("2001:db8:1:3::1"), t0).is_ok());
        assert!(limiter.check_at(ip("192.0.2.7"), t0).is_ok());
        assert!(limiter.check_at(ip("::ffff:192.0.2.7"), t0).is_err());
    }

    #[test]
    fn the_table_of_addresses_is_bounded() {
        let limiter = RateLimiter::new(1, 2);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(limiter.check_at(IpAddr::from(i.to_be_bytes()), t0).is_ok());
        }
        // Every bucket is still short of a refill: a new address is refused, a known one is not.
        assert!(limiter.check_at(ip("255.255.255.255"), t0).is_err());
        assert!(limiter.check_at(IpAddr::from(7u32.to_be_bytes()), t0).is_ok());
        // Once they have refilled, they are forgotten to make room.
        let later = t0 + Duration::from_secs(5);
        assert!(limiter.check_at(ip("255.255.255.255"), later).is_ok());
        assert!(limiter.buckets.lock().expect("not poisoned").len() < 10);
    }
}
