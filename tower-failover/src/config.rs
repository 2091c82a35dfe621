//! Configuration values and the policies users choose between.

use std::time::Duration;

use tower_fault::{
    SeededRng,
    backoff::{Backoff, Jitter},
};

/// How traffic is spread over the usable endpoints of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// Power of two choices on in-flight requests (the default).
    #[default]
    P2c,
    /// Round-robin.
    RoundRobin,
}

/// How traffic is spread over priority tiers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum TierPolicy {
    /// The highest tier (lowest index) with a healthy endpoint takes all traffic (the default).
    #[default]
    Strict,
    /// Envoy-style spill: a tier whose healthy fraction `h` times the overprovisioning factor
    /// is below 1 keeps only that share of traffic; the rest spills to the next tiers.
    Spill {
        /// Envoy's default is 1.4 (a tier keeps 100% until fewer than 71.4% of its endpoints
        /// are healthy).
        overprovisioning: f64,
    },
}

/// What happens when no endpoint is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AllDown {
    /// Fail at once with [`NoHealthyEndpoint`](crate::error::NoHealthyEndpoint) (the default).
    #[default]
    FailFast,
    /// Panic mode: ignore health and spread traffic over every endpoint of every tier.
    Panic,
    /// Wait up to this long for an endpoint to recover (woken by the recovery itself, not by
    /// polling), then fail with `NoHealthyEndpoint`.
    Wait(Duration),
}

/// The status an endpoint starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InitialState {
    /// Healthy until probes say otherwise (the default).
    #[default]
    AssumeHealthy,
    /// No traffic until the first probe passes (requires a probe).
    ProbeFirst,
}

#[derive(Debug, Clone)]
pub(crate) struct ProbeConfig {
    pub(crate) interval: Duration,
    pub(crate) jitter: Duration,
    pub(crate) timeout: Duration,
    /// `None`: the same as `interval`.
    pub(crate) unhealthy_interval: Option<Duration>,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) max_concurrency: usize,
}

impl ProbeConfig {
    pub(crate) fn unhealthy_interval(&self) -> Duration {
        self.unhealthy_interval.unwrap_or(self.interval)
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            jitter: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            unhealthy_interval: None,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            max_concurrency: 8,
        }
    }
}

/// How passive ejection decides and how long an ejection lasts.
#[derive(Debug, Clone)]
pub(crate) struct EjectionConfig {
    /// The shortest run of transient failures that ejects; `None`: passive ejection off.
    pub(crate) consecutive_failures: Option<u32>,
    /// The ejection time of the `n`th ejection in a row (nominal).
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    /// Each full period of stable health forgives one ejection of the streak
    /// (`Duration::MAX`: never).
    pub(crate) decay: Duration,
    /// Passive ejection keeps at most this fraction of the endpoints out of rotation (at least
    /// one endpoint); in `(0, 1]`.
    pub(crate) max_ejected_fraction: f64,
}

impl Default for EjectionConfig {
    /// A run of 5 (see `eject_after`); ejections of 10 s doubling up to 5 min, each up to half
    /// shorter at random; one ejection forgiven per minute of stable health; at most half of
    /// the endpoints out (see `max_ejected_fraction`). The reasons are on the builder's setters.
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            backoff: Backoff::exponential(Duration::from_secs(10), 2.0, Duration::from_secs(300)),
            jitter: Jitter::Equal,
            decay: Duration::from_secs(60),
            max_ejected_fraction: 0.5,
        }
    }
}

impl EjectionConfig {
    /// How many of `endpoints` passive ejection may keep out of rotation at once:
    /// `max_ejected_fraction` of them, rounded down, and at least one.
    pub(crate) fn max_ejected(&self, endpoints: usize) -> usize {
        ((endpoints as f64 * self.max_ejected_fraction).floor() as usize).max(1)
    }

    /// The time out of rotation of the `streak`th ejection in a row, given the time of the one
    /// before it (`Duration::ZERO` for the first).
    pub(crate) fn ejection_time(
        &self,
        streak: u32,
        previous: Duration,
        rng: &mut SeededRng,
    ) -> Duration {
        self.backoff.delay(self.jitter, streak, previous, rng)
    }
}

/// The share of traffic each tier takes under Envoy-style spill, given each tier's
/// (healthy, total) counts, normalised like Envoy's "normalized total availability": the
/// shares sum to 1 unless no tier is healthy (then all are 0). The request path computes the
/// same thing without allocating (`Shared::candidates`).
#[cfg(test)]
pub(crate) fn spill_shares(counts: &[(usize, usize)], overprovisioning: f64, out: &mut [f64]) {
    let mut left = 1.0_f64;
    for (i, &(healthy, total)) in counts.iter().enumerate() {
        out[i] = crate::pick::tier_share(healthy, total, overprovisioning, left);
        left -= out[i];
    }
    let sum: f64 = out.iter().sum();
    if sum > 0.0 {
        for share in out.iter_mut() {
            *share /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spill_matches_envoy_examples() {
        let mut out = [0.0; 2];
        spill_shares(&[(10, 10), (10, 10)], 1.4, &mut out);
        assert_eq!(out, [1.0, 0.0]);
        spill_shares(&[(5, 10), (10, 10)], 1.4, &mut out);
        assert!(
            (out[0] - 0.7).abs() < 1e-9 && (out[1] - 0.3).abs() < 1e-9,
            "{out:?}"
        );
        spill_shares(&[(0, 4), (0, 4)], 1.4, &mut out);
        assert_eq!(out, [0.0, 0.0]);
    }

    proptest! {
        #[test]
        fn ejection_time_grows_and_stays_bounded(base_ms in 1u64..10_000, max_ms in 1u64..600_000, n in 1u32..64, seed: u64) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms.max(base_ms));
            let cfg = EjectionConfig {
                backoff: Backoff::exponential(base, 2.0, max),
                ..EjectionConfig::default()
            };
            let mut rng = SeededRng::new(seed);
            let d = cfg.ejection_time(n, Duration::ZERO, &mut rng);
            prop_assert!(d <= max);
            prop_assert!(d >= base.min(max) / 2);
            let ceiling = base.saturating_mul(1 << (n - 1).min(31)).min(max);
            // The curve is computed in floating point: within a microsecond of the exact one.
            let slack = Duration::from_micros(1);
            prop_assert!(d + slack >= ceiling / 2 && d <= ceiling + slack, "{d:?} vs {ceiling:?}");
        }

        #[test]
        fn spill_shares_sum_to_one(counts in proptest::collection::vec((0usize..20, 1usize..20), 1..5), op in 1.0f64..3.0) {
            let counts: Vec<(usize, usize)> = counts.into_iter().map(|(h, t)| (h.min(t), t)).collect();
            let mut out = vec![0.0; counts.len()];
            spill_shares(&counts, op, &mut out);
            let any = counts.iter().any(|&(h, _)| h > 0);
            let sum: f64 = out.iter().sum();
            if any { prop_assert!((sum - 1.0).abs() < 1e-9, "{out:?}"); } else { prop_assert_eq!(sum, 0.0); }
            for (share, &(h, _)) in out.iter().zip(&counts) {
                prop_assert!(*share >= 0.0);
                if h == 0 { prop_assert_eq!(*share, 0.0); }
            }
        }
    }
}
