//! Where and how fast the easy side probes the hard side's ports
//! (sans-IO): the predicted ports first when the hard side's NAT
//! allocates sequentially, then ports drawn at random without repeats;
//! at most [`Bounds::max_probes`], at most [`Bounds::rate`] a second.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::hint::Hint;
use crate::stun::allocation::PortAllocation;

/// The lowest port a NAT hands out (below are the well-known ones).
const LOWEST: u16 = 1024;

/// The punch's limits, in one place (tests shrink them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Sockets the hard side opens when its NAT allocates at random.
    pub hard_sockets: usize,
    /// Sockets the hard side opens when its NAT allocates sequentially.
    pub hard_sockets_sequential: usize,
    /// Most probes the easy side sends.
    pub max_probes: usize,
    /// Most probes a second (both sides).
    pub rate: u32,
    /// How long a punch may take in all.
    pub budget: Duration,
    /// How many predicted ports the sweep covers.
    pub sweep: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            hard_sockets: 256,
            hard_sockets_sequential: 64,
            max_probes: 2048,
            rate: 500,
            budget: Duration::from_secs(5),
            sweep: 1024,
        }
    }
}

/// The hard side's ports in the order the easy side probes them: for a
/// sequential allocator the ports after the last one seen, step by
/// step; then (or for any other) random ports without repeats; at most
/// `max` in all.
pub fn probe_order(peer: &Hint, bounds: &Bounds, rng: &mut impl Rng) -> Vec<u16> {
    let max = bounds.max_probes;
    let mut order = Vec::with_capacity(max);
    let mut taken = std::collections::HashSet::new();
    if let PortAllocation::Sequential { step } = peer.allocation {
        let mut port = i32::from(peer.port);
        for _ in 0..bounds.sweep.min(max) {
            port += step;
            if !(i32::from(LOWEST)..=i32::from(u16::MAX)).contains(&port) {
                break;
            }
            let p = port as u16;
            if taken.insert(p) {
                order.push(p);
            }
        }
    }
    let span = usize::from(u16::MAX - LOWEST) + 1;
    let want = (max - order.len()).min(span - taken.len());
    // draw from the whole range; skip what the sweep already has
    for i in rand::seq::index::sample(rng, span, (want + taken.len()).min(span)) {
        if order.len() >= max {
            break;
        }
        let p = LOWEST + i as u16;
        if taken.insert(p) {
            order.push(p);
        }
    }
    order
}

/// A token bucket: how many probes may go now.
#[derive(Debug, Clone)]
pub struct Pacer {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// `rate` a second, bursts of a twentieth of a second's worth.
    pub fn new(rate: u32, now: Instant) -> Pacer {
        let per_sec = f64::from(rate.max(1));
        let burst = (per_sec / 20.0).max(1.0);
        Pacer {
            per_sec,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// How many may go at `now` (and takes them).
    pub fn take(&mut self, now: Instant) -> usize {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        let n = self.tokens.floor();
        self.tokens -= n;
        n as usize
    }

    /// When the next one may go.
    pub fn next_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_secs_f64(missing / self.per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::ice::hardnat::hint::Mapping;
    use rand::{rngs::StdRng, SeedableRng};

    fn hint(allocation: PortAllocation, port: u16) -> Hint {
        Hint {
            mapping: Mapping::Dependent,
            public: "198.18.0.12".parse().unwrap(),
            port,
            allocation,
        }
    }

    #[test]
    fn sequential_sweeps_first_then_random_without_repeats() {
        let b = Bounds::default();
        let mut rng = StdRng::seed_from_u64(7);
        let o = probe_order(
            &hint(PortAllocation::Sequential { step: 1 }, 20004),
            &b,
            &mut rng,
        );
        assert_eq!(o.len(), b.max_probes);
        assert_eq!(&o[..3], &[20005, 20006, 20007]);
        assert_eq!(o[b.sweep - 1], 20004 + b.sweep as u16);
        let set: std::collections::HashSet<_> = o.iter().collect();
        assert_eq!(set.len(), o.len(), "no port twice");
        assert!(o.iter().all(|&p| p >= LOWEST));
        // a downward allocator near the bottom stops at 1024
        let o = probe_order(
            &hint(PortAllocation::Sequential { step: -2 }, 1030),
            &b,
            &mut rng,
        );
        assert_eq!(&o[..3], &[1028, 1026, 1024]);
        assert!(o[3..].iter().all(|&p| p >= LOWEST));
    }

    #[test]
    fn random_is_capped_spread_and_seeded() {
        let b = Bounds::default();
        let a = probe_order(
            &hint(PortAllocation::Random, 4000),
            &b,
            &mut StdRng::seed_from_u64(1),
        );
        let c = probe_order(
            &hint(PortAllocation::Random, 4000),
            &b,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(a, c);
        assert_eq!(a.len(), b.max_probes);
        let set: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), a.len());
        // spread over the range: some in each quarter
        for q in 0..4u32 {
            let lo = 1024 + q * 16128;
            assert!(a.iter().any(|&p| (lo..lo + 16128).contains(&u32::from(p))));
        }
        // more probes than ports: every port once
        let all = Bounds {
            max_probes: 70_000,
            ..b
        };
        let o = probe_order(
            &hint(PortAllocation::Random, 0),
            &all,
            &mut StdRng::seed_from_u64(2),
        );
        assert_eq!(o.len(), 64512);
    }

    #[test]
    fn pacer_keeps_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(500, t0);
        let mut sent = p.take(t0);
        assert!(sent <= 25, "a burst of at most 1/20 s: {sent}");
        for ms in 1..=1000u64 {
            sent += p.take(t0 + Duration::from_millis(ms));
        }
        assert!((490..=526).contains(&sent), "{sent} in one second");
        assert!(p.next_at() <= t0 + Duration::from_millis(1003));
    }
}
