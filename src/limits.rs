//! Per-client token buckets for hosted-image downloads.
//!
//! Buckets live in a bounded cache: a flood of distinct addresses evicts
//! idle buckets instead of growing memory. An evicted bucket comes back
//! full, which is what an idle client would have anyway.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

const MAX_CLIENTS: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Takes one token. `Err(wait)` tells how long until one is available.
pub fn take(bucket: &mut Bucket, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
    bucket.updated = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
    }
}

/// Would [`take`] succeed? Nothing is taken.
pub fn peek(bucket: &Bucket, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
    let mut copy = *bucket;
    take(&mut copy, rate, burst, now)
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    v6_prefix: u8,
    buckets: Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

/// The address a bucket is keyed by. One IPv6 host usually holds a whole
/// /64 and can rotate through it at will, so IPv6 clients are keyed by
/// their network prefix; IPv4 (including IPv4-mapped IPv6) by the address.
pub fn bucket_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let mask = match v6_prefix.min(128) {
                    0 => 0,
                    n => u128::MAX << (128 - u32::from(n)),
                };
                IpAddr::V6(std::net::Ipv6Addr::from(bits & mask))
            }
        },
    }
}

impl RateLimiter {
    pub fn new(cfg: &crate::config::RateConfig) -> RateLimiter {
        RateLimiter::with(cfg.per_sec, cfg.burst, cfg.v6_prefix)
    }

    pub fn with(rate: f64, burst: f64, v6_prefix: u8) -> RateLimiter {
        // A bucket idle long enough to refill completely carries no state.
        let idle = Duration::from_secs_f64((burst / rate).clamp(1.0, 3600.0));
        RateLimiter {
            rate,
            burst,
            v6_prefix,
            buckets: Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// `Err(retry_after_secs)` when the client is over its limit.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        let burst = self.burst;
        let bucket = self
            .buckets
            .get_with(bucket_key(client, self.v6_prefix), || {
                Arc::new(Mutex::new(Bucket {
                    tokens: burst,
                    updated: Instant::now(),
                }))
            });
        let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        take(&mut b, self.rate, self.burst, Instant::now())
            .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// `Err(retry_after_secs)` while the client has no token left, without
    /// taking one: the admin listener refuses a throttled client outright.
    pub fn peek(&self, client: IpAddr) -> Result<(), u64> {
        let Some(bucket) = self.buckets.get(&bucket_key(client, self.v6_prefix)) else {
            return Ok(());
        };
        let b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        peek(&b, self.rate, self.burst, Instant::now())
            .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    pub fn tracked_clients(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 3.0,
            updated: t0,
        };
        for _ in 0..3 {
            assert!(take(&mut b, 1.0, 3.0, t0).is_ok());
        }
        let wait = take(&mut b, 1.0, 3.0, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(take(&mut b, 1.0, 3.0, t0 + Duration::from_millis(1100)).is_ok());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(take(&mut b, 1.0, 3.0, later).is_ok());
        }
        assert!(take(&mut b, 1.0, 3.0, later).is_err());
    }

    #[test]
    fn peeking_takes_nothing() {
        let l = RateLimiter::with(0.001, 2.0, 64);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.peek(ip).is_ok(), "an unknown client is not throttled");
        assert!(l.check(ip).is_ok());
        assert!(l.peek(ip).is_ok());
        assert!(l.peek(ip).is_ok(), "peeking twice took nothing");
        assert!(l.check(ip).is_ok());
        assert!(l.peek(ip).is_err(), "now empty");
    }

    #[test]
    fn ipv6_clients_share_their_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = bucket_key(ip("2001:db8:1:2:aaaa::1"), 64);
        assert_eq!(a, bucket_key(ip("2001:db8:1:2:ffff:1:2:3"), 64));
        assert_ne!(a, bucket_key(ip("2001:db8:1:3::1"), 64));
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(bucket_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(bucket_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(bucket_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(bucket_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));
        // Rotating through one /64 does not escape the limit.
        let l = RateLimiter::with(0.001, 2.0, 64);
        assert!(l.check(ip("2001:db8::1")).is_ok());
        assert!(l.check(ip("2001:db8::2")).is_ok());
        assert!(l.check(ip("2001:db8::3")).is_err());
        assert!(l.check(ip("2001:db8:0:1::1")).is_ok(), "another /64");
    }

    #[test]
    fn memory_is_bounded() {
        let l = RateLimiter::with(1.0, 1.0, 64);
        for i in 0..(MAX_CLIENTS + 5000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i as u32));
            let _ = l.check(ip);
        }
        assert!(l.tracked_clients() <= MAX_CLIENTS);
    }
}
