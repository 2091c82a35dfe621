//! Exponential backoff with jitter: the one vocabulary of the suite for "wait longer each time".
//!
//! A [`Backoff`] is a curve of *nominal* delays, one per step; a [`Jitter`] turns a nominal
//! delay into the delay actually used, with randomness from a [`SeededRng`] (seed it in tests
//! for reproducible delays). Every layer that waits longer on each failure in a row takes the
//! same pair:
//!
//! * retry's delay before retry `n` (1 for the first retry);
//! * a breaker's `n`-th open period in a row;
//! * failover's `n`-th ejection of one endpoint in a row.
//!
//! [`Backoff::delay`] is that delay, always within `[0, max]`.
//!
//! ```
//! use std::time::Duration;
//! use tower_fault::{SeededRng, backoff::{Backoff, Jitter}};
//!
//! // Open periods of 5 s, 10 s, 20 s … up to 5 min, each up to 20 % shorter at random.
//! let open = Backoff::exponential(Duration::from_secs(5), 2.0, Duration::from_secs(300));
//! let jitter = Jitter::Proportional(0.2);
//! open.validate("breaker", "open_backoff")?;
//! jitter.validate("breaker", "open_jitter")?;
//!
//! let mut rng = SeededRng::new(7);
//! let third = open.delay(jitter, 3, Duration::ZERO, &mut rng);
//! assert!(Duration::from_secs(16) <= third && third <= Duration::from_secs(20));
//! assert_eq!(open.delay(jitter, 100, Duration::ZERO, &mut rng).max(open.max()), open.max());
//! # Ok::<(), tower_fault::ConfigError>(())
//! ```

use std::time::Duration;

use crate::{ConfigError, SeededRng};

/// The curve of nominal delays between attempts; a [`Jitter`] randomises them.
///
/// The curve gives a *nominal* delay for each step; the jitter turns it into the delay actually
/// slept. Full jitter (the default) sends the fewest calls under contention; see the AWS
/// "Exponential Backoff And Jitter" analysis. AWS's *decorrelated jitter* algorithm is
/// [`Backoff::decorrelated`] with [`Jitter::Decorrelated`].
///
/// ```
/// use std::time::Duration;
/// use tower_fault::{SeededRng, backoff::{Backoff, Jitter}};
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
    /// `base * multiplier^(step - 1)`, capped at `max`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The growth factor (at least 1).
        multiplier: f64,
        /// The largest delay.
        max: Duration,
    },
    /// The same delay at every step.
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
    /// Exponential from 100 ms, doubling, capped at 10 s: a retry of a call that takes tens of
    /// milliseconds waits about as long as the call at first, and a caller never sleeps more
    /// than 10 s between two attempts.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10))
    }
}

/// How a nominal delay is randomised.
///
/// Clients that failed together and wait the same time come back together; jitter spreads
/// them out. Each variant draws uniformly from a range ending at the nominal delay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
    /// Uniform in `[nominal × (1 − fraction), nominal]`, for a fraction in `[0, 1]`: up to that
    /// share shorter. `Proportional(0.5)` is [`Jitter::Equal`], `Proportional(1.0)` is
    /// [`Jitter::Full`]; a small fraction keeps a wait close to its nominal length (a breaker's
    /// open period) while still spreading the instances that started it together.
    Proportional(f64),
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

    /// The nominal delay of step `step` (1 for the first), given the delay actually used at the
    /// previous step (`Duration::ZERO` before the first; only [`Backoff::Decorrelated`] reads
    /// it). Step 0 is read as step 1.
    #[must_use]
    pub fn nominal(&self, step: u32, previous: Duration) -> Duration {
        match *self {
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                let exponent = i32::try_from(step.saturating_sub(1)).unwrap_or(i32::MAX);
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

    /// The delay of step `step`: the nominal delay with `jitter` applied.
    ///
    /// Always within `[0, max]`; with [`Jitter::None`] it is the nominal delay. A
    /// [`Jitter::Proportional`] fraction outside `[0, 1]` is read as the nearest bound (NaN as
    /// 0); [`Jitter::validate`] refuses one in a builder.
    pub fn delay(
        &self,
        jitter: Jitter,
        step: u32,
        previous: Duration,
        rng: &mut SeededRng,
    ) -> Duration {
        let nominal = self.nominal(step, previous);
        match jitter {
            Jitter::None => nominal,
            Jitter::Full => rng.duration_between(Duration::ZERO, nominal),
            Jitter::Equal => rng.duration_between(nominal / 2, nominal),
            Jitter::Decorrelated => rng.duration_between(self.base().min(nominal), nominal),
            Jitter::Proportional(fraction) => {
                rng.duration_between(shortened(nominal, fraction), nominal)
            }
        }
    }

    /// Checks the curve: a multiplier that is finite and at least 1, a base no larger than the
    /// max. `layer` and `field` name the builder and setting in the error (`"breaker"`,
    /// `"open_backoff"`).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `field` and what is wrong.
    pub fn validate(&self, layer: &'static str, field: &'static str) -> Result<(), ConfigError> {
        let (base, max) = match *self {
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                if multiplier.is_nan() || multiplier < 1.0 || multiplier.is_infinite() {
                    return Err(ConfigError::for_field(
                        layer,
                        field,
                        format!("multiplier must be a finite number >= 1, got {multiplier}"),
                    ));
                }
                (base, max)
            }
            Backoff::Decorrelated { base, max } => (base, max),
            Backoff::Constant { .. } => return Ok(()),
        };
        if base > max {
            return Err(ConfigError::for_field(
                layer,
                field,
                format!("base delay ({base:?}) is larger than its max delay ({max:?})"),
            ));
        }
        Ok(())
    }
}

impl Jitter {
    /// Checks the jitter: a [`Jitter::Proportional`] fraction must be in `[0, 1]`. `layer` and
    /// `field` name the builder and setting in the error.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `field` when the fraction is outside `[0, 1]` or NaN.
    pub fn validate(&self, layer: &'static str, field: &'static str) -> Result<(), ConfigError> {
        match *self {
            Jitter::Proportional(fraction) if !(0.0..=1.0).contains(&fraction) => {
                Err(ConfigError::for_field(
                    layer,
                    field,
                    format!("proportional jitter must be in [0, 1], got {fraction}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// `nominal` shortened by `fraction` of itself (clamped to `[0, 1]`, NaN read as 0), without
/// overflow for a nominal delay as long as `Duration::MAX`.
fn shortened(nominal: Duration, fraction: f64) -> Duration {
    let fraction = if fraction >= 1.0 {
        1.0
    } else if fraction > 0.0 {
        fraction
    } else {
        0.0
    };
    let cut = Duration::try_from_secs_f64(nominal.as_secs_f64() * fraction)
        .map_or(nominal, |cut| cut.min(nominal));
    nominal - cut
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
        assert_eq!(b.nominal(0, Duration::ZERO), 10 * MS);
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

    #[test]
    fn proportional_jitter_shortens_by_at_most_its_fraction() {
        let mut rng = SeededRng::new(3);
        let b = Backoff::constant(Duration::from_secs(10));
        let (mut lowest, mut highest) = (Duration::MAX, Duration::ZERO);
        for _ in 0..1_000 {
            let d = b.delay(Jitter::Proportional(0.2), 1, Duration::ZERO, &mut rng);
            lowest = lowest.min(d);
            highest = highest.max(d);
        }
        assert!(lowest >= Duration::from_secs(8), "{lowest:?}");
        assert!(lowest < Duration::from_millis(8_100), "{lowest:?}");
        assert!(highest > Duration::from_millis(9_900), "{highest:?}");
        assert!(highest <= Duration::from_secs(10), "{highest:?}");
    }

    #[test]
    fn proportional_jitter_out_of_range_is_clamped() {
        let mut rng = SeededRng::new(3);
        let b = Backoff::constant(Duration::from_secs(1));
        assert_eq!(
            b.delay(Jitter::Proportional(f64::NAN), 1, Duration::ZERO, &mut rng),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.delay(Jitter::Proportional(-3.0), 1, Duration::ZERO, &mut rng),
            Duration::from_secs(1)
        );
        let full = b.delay(Jitter::Proportional(7.0), 1, Duration::ZERO, &mut rng);
        assert!(full <= Duration::from_secs(1));
    }

    #[test]
    fn forever_does_not_overflow() {
        let mut rng = SeededRng::new(9);
        let b = Backoff::exponential(Duration::from_secs(1), 2.0, Duration::MAX);
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Proportional(0.2),
            Jitter::Proportional(1.0),
        ] {
            for step in [1, 63, 64, 65, 1_000, u32::MAX] {
                let d = b.delay(jitter, step, Duration::MAX, &mut rng);
                assert!(d <= Duration::MAX, "{jitter:?} {step}");
            }
        }
        assert_eq!(b.nominal(u32::MAX, Duration::ZERO), Duration::MAX);
        let d = Backoff::decorrelated(Duration::from_secs(1), Duration::MAX).delay(
            Jitter::Proportional(0.5),
            2,
            Duration::MAX,
            &mut rng,
        );
        assert!(d >= Duration::MAX / 2 - Duration::from_secs(1), "{d:?}");
    }

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            (0.0f64..=1.0).prop_map(Jitter::Proportional),
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
            step in 1u32..200,
            previous_ms in 0u64..120_000,
            seed: u64,
        ) {
            prop_assert!(backoff.validate("test", "backoff").is_ok());
            prop_assert!(jitter.validate("test", "jitter").is_ok());
            let previous = Duration::from_millis(previous_ms);
            let nominal = backoff.nominal(step, previous);
            prop_assert!(nominal <= backoff.max());
            let mut rng = SeededRng::new(seed);
            let d = backoff.delay(jitter, step, previous, &mut rng);
            let low = match jitter {
                Jitter::None => nominal,
                Jitter::Full => Duration::ZERO,
                Jitter::Equal => nominal / 2,
                Jitter::Decorrelated => backoff.base().min(nominal),
                Jitter::Proportional(fraction) => nominal.mul_f64(1.0 - fraction),
            };
            // `mul_f64` rounds: allow the last nanosecond either way.
            let low = low.saturating_sub(Duration::from_nanos(1));
            prop_assert!(low <= d && d <= nominal, "{d:?} outside [{low:?}, {nominal:?}]");
        }

        #[test]
        fn exponential_never_shrinks(base_ms in 1u64..1_000, multiplier in 1.0f64..4.0, step in 1u32..100) {
            let b = Backoff::exponential(Duration::from_millis(base_ms), multiplier, Duration::from_secs(30));
            prop_assert!(b.nominal(step, Duration::ZERO) <= b.nominal(step + 1, Duration::ZERO));
        }

        #[test]
        fn same_seed_same_delays(backoff in any_backoff(), jitter in any_jitter(), seed: u64) {
            let (mut a, mut b) = (SeededRng::new(seed), SeededRng::new(seed));
            for step in 1..20 {
                prop_assert_eq!(
                    backoff.delay(jitter, step, Duration::ZERO, &mut a),
                    backoff.delay(jitter, step, Duration::ZERO, &mut b)
                );
            }
        }
    }

    #[test]
    fn validation_names_the_setting() {
        let err = Backoff::exponential(2 * MS, 2.0, MS)
            .validate("retry", "backoff")
            .unwrap_err();
        assert_eq!(err.layer(), "retry");
        assert_eq!(err.field(), Some("backoff"));
        assert!(err.message().contains("larger than its max"), "{err}");
        let err = Backoff::exponential(MS, f64::NAN, 2 * MS)
            .validate("breaker", "open_backoff")
            .unwrap_err();
        assert!(err.message().contains("multiplier"), "{err}");
        assert_eq!(err.field(), Some("open_backoff"));
        assert!(
            Backoff::exponential(MS, 0.5, 2 * MS)
                .validate("retry", "backoff")
                .is_err()
        );
        assert!(
            Backoff::exponential(MS, f64::INFINITY, 2 * MS)
                .validate("retry", "backoff")
                .is_err()
        );
        assert!(
            Backoff::decorrelated(2 * MS, MS)
                .validate("retry", "backoff")
                .is_err()
        );
        assert!(Backoff::default().validate("retry", "backoff").is_ok());
        assert!(
            Backoff::constant(Duration::MAX)
                .validate("retry", "backoff")
                .is_ok()
        );

        for bad in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            let err = Jitter::Proportional(bad)
                .validate("failover", "ejection_jitter")
                .unwrap_err();
            assert_eq!(err.field(), Some("ejection_jitter"), "{bad}");
            assert!(err.message().contains("[0, 1]"), "{err}");
        }
        for good in [
            Jitter::Proportional(0.0),
            Jitter::Proportional(1.0),
            Jitter::Full,
            Jitter::None,
        ] {
            assert!(good.validate("failover", "ejection_jitter").is_ok());
        }
    }
}
