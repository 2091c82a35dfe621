//! Backoff curves and jitter.

use std::time::Duration;

use tower_fault::SeededRng;

use crate::error::ConfigError;

/// The curve of nominal delays between attempts; a [`Jitter`] randomises them.
///
/// The curve gives a *nominal* delay for each retry; the jitter turns it into the delay actually
/// slept. Full jitter (the default) sends the fewest calls under contention; see the AWS
/// "Exponential Backoff And Jitter" analysis. AWS's *decorrelated jitter* algorithm is
/// [`Backoff::decorrelated`] with [`Jitter::Decorrelated`].
///
/// ```
/// use std::time::Duration;
/// use tower_fault::SeededRng;
/// use tower_retry_plus::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1));
/// assert_eq!(backoff.nominal(3, Duration::ZERO), Duration::from_millis(400));
/// assert_eq!(backoff.nominal(10, Duration::ZERO), Duration::from_secs(1));
///
/// let mut rng = SeededRng::new(7);
/// let d = backoff.delay(Jitter::Full, 3, Duration::ZERO, &mut rng);
/// assert!(d <= Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// `base * multiplier^(retry - 1)`, capped at `max`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The growth factor (at least 1).
        multiplier: f64,
        /// The largest delay.
        max: Duration,
    },
    /// The same delay before every retry.
    Constant {
        /// The delay.
        delay: Duration,
    },
    /// Three times the previous delay actually slept (starting from `base`), capped at `max`.
    ///
    /// Combined with [`Jitter::Decorrelated`] this is AWS's decorrelated jitter:
    /// `sleep = min(max, uniform(base, previous_sleep * 3))`.
    Decorrelated {
        /// The smallest delay, and the first nominal one.
        base: Duration,
        /// The largest delay.
        max: Duration,
    },
}

impl Default for Backoff {
    /// Exponential from 100 ms, doubling, capped at 10 s.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10))
    }
}

/// How a nominal delay is randomised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Jitter {
    /// The nominal delay, exactly. Clients that failed together retry together.
    None,
    /// Uniform in `[0, nominal]`. The default: the fewest calls under contention.
    #[default]
    Full,
    /// Uniform in `[nominal / 2, nominal]`.
    Equal,
    /// Uniform in `[base, nominal]` (where `base` is the curve's smallest delay).
    Decorrelated,
}

impl Backoff {
    /// An exponential curve: `base`, `base * multiplier`, … up to `max`.
    #[must_use]
    pub const fn exponential(base: Duration, multiplier: f64, max: Duration) -> Self {
        Backoff::Exponential {
            base,
            multiplier,
            max,
        }
    }

    /// A constant delay.
    #[must_use]
    pub const fn constant(delay: Duration) -> Self {
        Backoff::Constant { delay }
    }

    /// A decorrelated curve: three times the previous delay, from `base` up to `max`.
    #[must_use]
    pub const fn decorrelated(base: Duration, max: Duration) -> Self {
        Backoff::Decorrelated { base, max }
    }

    /// The smallest nominal delay of the curve.
    #[must_use]
    pub const fn base(&self) -> Duration {
        match *self {
            Backoff::Exponential { base, .. } | Backoff::Decorrelated { base, .. } => base,
            Backoff::Constant { delay } => delay,
        }
    }

    /// The largest delay the curve (and any jitter over it) produces.
    #[must_use]
    pub const fn max(&self) -> Duration {
        match *self {
            Backoff::Exponential { max, .. } | Backoff::Decorrelated { max, .. } => max,
            Backoff::Constant { delay } => delay,
        }
    }

    /// The nominal delay before retry number `retry` (1 for the first retry), given the delay
    /// actually slept before the previous one (`Duration::ZERO` before the first retry).
    #[must_use]
    pub fn nominal(&self, retry: u32, previous: Duration) -> Duration {
        match *self {
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                let secs = base.as_secs_f64() * multiplier.powi(exponent);
                if secs.is_finite() && secs < max.as_secs_f64() {
                    Duration::from_secs_f64(secs).min(max)
                } else {
                    max
                }
            }
            Backoff::Constant { delay } => delay,
            Backoff::Decorrelated { base, max } => {
                let previous = previous.max(base);
                previous.saturating_mul(3).min(max).max(base.min(max))
            }
        }
    }

    /// The delay to sleep before retry number `retry`: the nominal delay with `jitter` applied.
    ///
    /// Always within `[0, max]`; with [`Jitter::None`] it is the nominal delay.
    pub fn delay(
        &self,
        jitter: Jitter,
        retry: u32,
        previous: Duration,
        rng: &mut SeededRng,
    ) -> Duration {
        let nominal = self.nominal(retry, previous);
        match jitter {
            Jitter::None => nominal,
            Jitter::Full => rng.duration_between(Duration::ZERO, nominal),
            Jitter::Equal => rng.duration_between(nominal / 2, nominal),
            Jitter::Decorrelated => rng.duration_between(self.base().min(nominal), nominal),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                if multiplier.is_nan() || multiplier < 1.0 || multiplier.is_infinite() {
                    return Err(crate::error::config_error(format!(
                        "backoff multiplier must be a finite number >= 1, got {multiplier}"
                    )));
                }
                if base > max {
                    return Err(crate::error::config_error(format!(
                        "backoff base delay ({base:?}) is larger than its max delay ({max:?})"
                    )));
                }
            }
            Backoff::Decorrelated { base, max } => {
                if base > max {
                    return Err(crate::error::config_error(format!(
                        "backoff base delay ({base:?}) is larger than its max delay ({max:?})"
                    )));
                }
            }
            Backoff::Constant { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_grows_and_caps() {
        let b = Backoff::exponential(10 * MS, 2.0, 100 * MS);
        let got: Vec<_> = (1..=6).map(|n| b.nominal(n, Duration::ZERO)).collect();
        assert_eq!(
            got,
            [10 * MS, 20 * MS, 40 * MS, 80 * MS, 100 * MS, 100 * MS]
        );
        assert_eq!(b.nominal(u32::MAX, Duration::ZERO), 100 * MS);
    }

    #[test]
    fn decorrelated_triples_previous() {
        let b = Backoff::decorrelated(10 * MS, 100 * MS);
        assert_eq!(b.nominal(1, Duration::ZERO), 30 * MS);
        assert_eq!(b.nominal(2, 20 * MS), 60 * MS);
        assert_eq!(b.nominal(3, 60 * MS), 100 * MS);
    }

    #[test]
    fn no_jitter_is_nominal_and_constant_is_constant() {
        let mut rng = SeededRng::new(1);
        let b = Backoff::constant(7 * MS);
        assert_eq!(b.delay(Jitter::None, 5, Duration::ZERO, &mut rng), 7 * MS);
        let mut seen_below_nominal = false;
        for _ in 0..100 {
            let d = b.delay(Jitter::Equal, 5, Duration::ZERO, &mut rng);
            assert!((7 * MS / 2..=7 * MS).contains(&d), "{d:?}");
            seen_below_nominal |= d < 7 * MS;
        }
        assert!(seen_below_nominal, "equal jitter never randomised");
    }

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
        ]
    }

    fn any_backoff() -> impl Strategy<Value = Backoff> {
        (0u64..5_000, 0u64..60_000, 1.0f64..10.0, 0u8..3).prop_map(|(a, b, multiplier, kind)| {
            let (base, max) = (
                Duration::from_millis(a.min(b)),
                Duration::from_millis(a.max(b)),
            );
            match kind {
                0 => Backoff::exponential(base, multiplier, max),
                1 => Backoff::constant(base),
                _ => Backoff::decorrelated(base, max),
            }
        })
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_bounds(
            backoff in any_backoff(),
            jitter in any_jitter(),
            retry in 1u32..200,
            previous_ms in 0u64..120_000,
            seed: u64,
        ) {
            prop_assert!(backoff.validate().is_ok());
            let previous = Duration::from_millis(previous_ms);
            let nominal = backoff.nominal(retry, previous);
            prop_assert!(nominal <= backoff.max());
            let mut rng = SeededRng::new(seed);
            let d = backoff.delay(jitter, retry, previous, &mut rng);
            let low = match jitter {
                Jitter::None => nominal,
                Jitter::Full => Duration::ZERO,
                Jitter::Equal => nominal / 2,
                Jitter::Decorrelated => backoff.base().min(nominal),
            };
            prop_assert!(low <= d && d <= nominal, "{d:?} outside [{low:?}, {nominal:?}]");
        }

        #[test]
        fn exponential_never_shrinks(base_ms in 1u64..1_000, multiplier in 1.0f64..4.0, retry in 1u32..100) {
            let b = Backoff::exponential(Duration::from_millis(base_ms), multiplier, Duration::from_secs(30));
            prop_assert!(b.nominal(retry, Duration::ZERO) <= b.nominal(retry + 1, Duration::ZERO));
        }
    }

    #[test]
    fn validation_messages() {
        let err = Backoff::exponential(2 * MS, 2.0, MS)
            .validate()
            .unwrap_err();
        assert!(err.message().contains("larger than its max"), "{err}");
        let err = Backoff::exponential(MS, f64::NAN, 2 * MS)
            .validate()
            .unwrap_err();
        assert!(err.message().contains("multiplier"), "{err}");
        assert!(Backoff::exponential(MS, 0.5, 2 * MS).validate().is_err());
        assert!(Backoff::decorrelated(2 * MS, MS).validate().is_err());
        assert!(Backoff::default().validate().is_ok());
    }
}
