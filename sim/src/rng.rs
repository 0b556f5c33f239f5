//! The simulation's one source of randomness: a seeded SplitMix64 stream.
//!
//! Our own generator rather than `rand`'s so that a seed means the same run
//! across dependency upgrades, and so that every draw is integer arithmetic
//! (the workspace forbids float arithmetic). Each part of a run (the fault
//! plan, the store's latencies, each client) takes its own [`SimRng::fork`],
//! so adding a draw in one part does not shift the others.

use std::time::Duration;

/// A deterministic pseudo-random stream.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed ^ 0x5DEE_CE66_D1CE_4E5B }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An independent stream named `stream`, derived without disturbing this one's position.
    pub fn fork(&self, stream: u64) -> SimRng {
        let mut mixer = SimRng { state: self.state ^ stream.wrapping_mul(0xA24B_AED4_963E_E407) };
        SimRng::new(mixer.next_u64())
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        // Lemire's multiply-shift: the high half of a 128-bit product.
        let wide = u128::from(self.next_u64()) * u128::from(n);
        u64::try_from(wide >> 64).expect("the high half fits")
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.below(high - low + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).expect("an index fits in usize")
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// Uniform whole milliseconds in `low..=high` (milliseconds).
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.range(low, high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_forks_differ() {
        let (mut a, mut b) = (SimRng::new(7), SimRng::new(7));
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let second: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(first, second);
        assert_ne!(SimRng::new(7).fork(1).next_u64(), SimRng::new(7).fork(2).next_u64());
    }

    #[test]
    fn bounded_draws_stay_in_bounds() {
        let mut rng = SimRng::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(3) < 3);
            let x = rng.range(5, 9);
            assert!((5..=9).contains(&x));
        }
        assert!(!rng.chance(0));
        assert!(rng.chance(1000));
    }
}
