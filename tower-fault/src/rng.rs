//! A tiny seedable random number generator for jitter.

use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

/// A small, fast, seedable generator (SplitMix64) for jitter and sampling.
///
/// Not cryptographic. Seed it in tests for reproducible delays; [`SeededRng::from_entropy`] seeds
/// it from the process's random hasher keys otherwise.
///
/// ```
/// use std::time::Duration;
/// use tower_fault::SeededRng;
///
/// let mut a = SeededRng::new(42);
/// let mut b = SeededRng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let d = a.duration_between(Duration::ZERO, Duration::from_secs(1));
/// assert!(d <= Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator with a fixed seed.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the OS-seeded keys of `std`'s `RandomState`.
    #[must_use]
    pub fn from_entropy() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Self::new(hasher.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // 53 random bits make every representable value in [0, 1) equally likely.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `[0, bound)`; `0` when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Lemire's multiply-shift: unbiased enough for load spreading and jitter.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A uniform duration in `[low, high]` (returns `low` if `high <= low`).
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        if high <= low {
            return low;
        }
        let span = (high - low).as_nanos().min(u128::from(u64::MAX)) as u64;
        low + Duration::from_nanos(self.below(span.saturating_add(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold() {
        let mut rng = SeededRng::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(10) < 10);
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            let d = rng.duration_between(Duration::from_millis(5), Duration::from_millis(10));
            assert!((Duration::from_millis(5)..=Duration::from_millis(10)).contains(&d));
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn roughly_uniform() {
        let mut rng = SeededRng::new(7);
        let mut buckets = [0u32; 4];
        for _ in 0..40_000 {
            buckets[rng.below(4) as usize] += 1;
        }
        for b in buckets {
            assert!((9_000..11_000).contains(&b), "{buckets:?}");
        }
    }
}
