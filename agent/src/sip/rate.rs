//! Per-source request rate limit, in the spirit of Kamailio's pike module:
//! a token bucket per source IP, refilled at `per_sec` up to `burst`. Pure:
//! time is passed in. The table of sources is bounded; when full, the
//! source idle longest is forgotten (a flood of spoofed addresses costs a
//! bounded table, not memory).

use std::collections::HashMap;
use std::net::IpAddr;

pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl RateLimit {
    pub fn new(per_sec: u32, burst: u32, max_sources: usize) -> RateLimit {
        RateLimit {
            per_sec: per_sec as f64,
            burst: burst.max(1) as f64,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// May a request from `ip` be served at `now_ms`?
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_sources {
            // Forget the source idle longest.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last_ms)
                .map(|(ip, _)| *ip)
            {
                self.buckets.remove(&oldest);
            }
        }
        let burst = self.burst;
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.per_sec).min(burst);
        b.last_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_flood_from_one_source_is_cut_while_others_are_served() {
        let mut r = RateLimit::new(20, 40, 100);
        let (flood, phone) = (ip("203.0.113.9"), ip("192.0.2.10"));
        let mut allowed = 0;
        // 200 requests a second for 5 s from the flooder.
        for i in 0..1_000u64 {
            if r.allow(flood, i * 5) {
                allowed += 1;
            }
            if i % 100 == 0 {
                assert!(r.allow(phone, i * 5), "the phone was refused at {i}");
            }
        }
        // The burst, then 20 a second.
        assert!((130..=150).contains(&allowed), "{allowed}");
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let mut r = RateLimit::new(10, 10, 50);
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(r.allow(a, i as u64));
        }
        assert_eq!(r.sources(), 50);
    }

    #[test]
    fn a_quiet_source_gets_its_burst_back() {
        let mut r = RateLimit::new(1, 5, 10);
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            assert!(r.allow(a, 0));
        }
        assert!(!r.allow(a, 0));
        assert!(r.allow(a, 1_000));
        for _ in 0..5 {
            r.allow(a, 60_000);
        }
        assert!(!r.allow(a, 60_000));
    }
}
