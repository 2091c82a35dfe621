//! When a queued request is tried again: tiers of fixed intervals, jitter, and a horizon after
//! which the entry is dead-lettered.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tower_fault::SeededRng;

use crate::ConfigError;

/// One tier: try every `every` until the entry is `until` old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// The interval between attempts in this tier.
    pub every: Duration,
    /// The tier ends when the entry (counted from when it was queued) is this old.
    pub until: Duration,
}

/// The re-delivery schedule.
///
/// The default follows a well-known production design: every 10 minutes for the first hour, then
/// 5 attempts a day, evenly spaced (every 4 h 48 min), for 5 days; after that the entry is
/// dead-lettered with its last error. Each interval is jittered by ±10 % so that entries queued
/// together do not fire together, and a server's `Retry-After` longer than the interval is
/// honoured.
///
/// ```
/// use std::time::Duration;
/// use tower_redrive::Schedule;
///
/// let schedule = Schedule::builder()
///     .tier(Duration::from_secs(60), Duration::from_secs(600)) // every minute for 10 minutes
///     .tier(Duration::from_secs(3600), Duration::from_secs(86_400)) // then hourly until a day old
///     .jitter(0.2)
///     .build()
///     .unwrap();
/// assert_eq!(schedule.horizon(), Duration::from_secs(86_400));
/// assert!(Schedule::builder().build().is_err()); // no tiers
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    tiers: Vec<Tier>,
    jitter: f64,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// The longest horizon [`ScheduleBuilder::build`] accepts; it keeps `age + interval` and the
/// jittered interval far from `Duration`'s overflow.
const MAX_HORIZON: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Default for Schedule {
    fn default() -> Self {
        Self {
            tiers: vec![
                Tier {
                    every: 10 * MINUTE,
                    until: HOUR,
                },
                Tier {
                    every: DAY / 5,
                    until: HOUR + 5 * DAY,
                },
            ],
            jitter: 0.1,
        }
    }
}

impl Schedule {
    /// A builder with no tiers and ±10 % jitter.
    #[must_use]
    pub fn builder() -> ScheduleBuilder {
        ScheduleBuilder {
            tiers: Vec::new(),
            jitter: 0.1,
        }
    }

    /// The tiers, in order.
    #[must_use]
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The age after which an entry is dead-lettered.
    #[must_use]
    pub fn horizon(&self) -> Duration {
        self.tiers.last().map_or(Duration::ZERO, |t| t.until)
    }

    /// The un-jittered delay before the next attempt of an entry `age` old, or `None` when the
    /// next attempt would fall past the horizon (dead-letter now).
    #[must_use]
    pub fn base_delay(&self, age: Duration) -> Option<Duration> {
        let tier = self.tiers.iter().find(|t| age < t.until)?;
        (age + tier.every <= self.horizon()).then_some(tier.every)
    }

    /// The delay before the next attempt: the tier's interval, jittered, and at least the
    /// server's `Retry-After` (capped by [`tower_fault::retry_after::CAP`]). `None` means the
    /// schedule is exhausted.
    #[must_use]
    pub fn next_delay(
        &self,
        age: Duration,
        retry_after: Option<Duration>,
        rng: &mut SeededRng,
    ) -> Option<Duration> {
        let base = self.base_delay(age)?;
        let delay = self.jittered(base, rng);
        let hint = retry_after.map_or(Duration::ZERO, |h| h.min(tower_fault::retry_after::CAP));
        Some(delay.max(hint))
    }

    /// `base` ± the jitter fraction.
    #[must_use]
    pub fn jittered(&self, base: Duration, rng: &mut SeededRng) -> Duration {
        if self.jitter == 0.0 {
            return base;
        }
        let spread = base.mul_f64(self.jitter);
        rng.duration_between(base.saturating_sub(spread), base + spread)
    }

    /// The jitter fraction.
    #[must_use]
    pub const fn jitter(&self) -> f64 {
        self.jitter
    }
}

/// Builds a [`Schedule`].
#[derive(Debug, Clone)]
pub struct ScheduleBuilder {
    tiers: Vec<Tier>,
    jitter: f64,
}

impl ScheduleBuilder {
    /// Adds a tier: every `every` until the entry is `until` old (counted from enqueue, not from
    /// the previous tier).
    #[must_use]
    pub fn tier(mut self, every: Duration, until: Duration) -> Self {
        self.tiers.push(Tier { every, until });
        self
    }

    /// The jitter fraction in `[0, 1)`: each interval is drawn uniformly from
    /// `every × (1 ± jitter)`.
    #[must_use]
    pub const fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Validates the schedule.
    ///
    /// # Errors
    /// No tiers, an interval under 1 ms (the queue's resolution), a tier that ends before its first attempt, tiers out of order,
    /// a tier ending more than 100 years after enqueue, or jitter outside `[0, 1)`.
    pub fn build(self) -> Result<Schedule, ConfigError> {
        if self.tiers.is_empty() {
            return Err(crate::error::config_error(
                "a schedule needs at least one tier",
            ));
        }
        let mut previous_end = Duration::ZERO;
        for (i, tier) in self.tiers.iter().enumerate() {
            // Queue times are whole milliseconds: a shorter interval would reschedule to "now"
            // and re-drive the entry on every poll.
            if tier.every < Duration::from_millis(1) {
                return Err(crate::error::config_error(format!(
                    "tier {i} has an interval of {:?}, below the queue's 1 ms resolution",
                    tier.every
                )));
            }
            if tier.until <= previous_end {
                return Err(crate::error::config_error(format!(
                    "tier {i} ends at {:?}, not after the previous tier's end {previous_end:?}",
                    tier.until
                )));
            }
            if tier.until > MAX_HORIZON {
                return Err(crate::error::config_error(format!(
                    "tier {i} ends at {:?}, past the longest supported horizon of 100 years",
                    tier.until
                )));
            }
            if previous_end + tier.every > tier.until {
                return Err(crate::error::config_error(format!(
                    "tier {i} interval {:?} is longer than the tier ({:?} to {:?}), so it never fires",
                    tier.every, previous_end, tier.until
                )));
            }
            previous_end = tier.until;
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(crate::error::config_error(format!(
                "jitter must be in [0, 1), got {}",
                self.jitter
            )));
        }
        Ok(Schedule {
            tiers: self.tiers,
            jitter: self.jitter,
        })
    }
}

/// A schedule and the random stream its jitter draws from: the layer's or the worker's.
#[derive(Debug)]
pub(crate) struct Scheduler {
    schedule: Schedule,
    /// Behind a lock: one draw per deferred request or delivery, each beside a queue write
    /// that dwarfs the uncontended lock.
    rng: Mutex<SeededRng>,
}

impl Scheduler {
    pub(crate) const fn new(schedule: Schedule, rng: SeededRng) -> Self {
        Self {
            schedule,
            rng: Mutex::new(rng),
        }
    }

    /// The jittered delay before the next delivery of an entry `age` old (at least the
    /// server's `retry_after`), or `None` once the schedule is over.
    pub(crate) fn next_delay(
        &self,
        age: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        self.schedule.next_delay(age, retry_after, &mut rng)
    }

    /// 64 random bits from this stream.
    pub(crate) fn next_u64(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_matches_the_documented_design() {
        let s = Schedule::default();
        // Simulate un-jittered attempts from enqueue until the horizon.
        let mut age = Duration::ZERO;
        let mut attempts = Vec::new();
        while let Some(d) = s.base_delay(age) {
            age += d;
            attempts.push(age);
        }
        let first_hour = attempts.iter().filter(|a| **a <= HOUR).count();
        assert_eq!(first_hour, 6, "every 10 minutes for the first hour");
        let per_day = attempts
            .iter()
            .filter(|a| **a > HOUR && **a <= HOUR + DAY)
            .count();
        assert_eq!(per_day, 5, "5 attempts a day");
        assert_eq!(attempts.len(), 6 + 25);
        assert!(*attempts.last().unwrap() <= HOUR + 5 * DAY);
        assert_eq!(s.base_delay(HOUR + 5 * DAY), None);
    }

    #[test]
    fn nonsense_is_rejected() {
        let m = |b: ScheduleBuilder| b.build().unwrap_err().to_string();
        assert!(m(Schedule::builder()).contains("at least one tier"));
        assert!(
            m(Schedule::builder().tier(Duration::ZERO, HOUR))
                .contains("below the queue's 1 ms resolution")
        );
        assert!(m(Schedule::builder().tier(HOUR, MINUTE)).contains("never fires"));
        assert!(m(Schedule::builder().tier(MINUTE, HOUR).tier(MINUTE, HOUR)).contains("not after"));
        assert!(m(Schedule::builder().tier(MINUTE, HOUR).jitter(1.0)).contains("jitter"));
        assert!(m(Schedule::builder().tier(Duration::MAX, Duration::MAX)).contains("100 years"));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let s = Schedule::builder()
            .tier(MINUTE, DAY)
            .jitter(0.0)
            .build()
            .unwrap();
        let mut rng = SeededRng::new(1);
        assert_eq!(
            s.next_delay(Duration::ZERO, Some(HOUR), &mut rng),
            Some(HOUR)
        );
        assert_eq!(
            s.next_delay(Duration::ZERO, Some(Duration::from_secs(1)), &mut rng),
            Some(MINUTE)
        );
        let capped = s
            .next_delay(Duration::ZERO, Some(100 * DAY), &mut rng)
            .unwrap();
        assert_eq!(capped, tower_fault::retry_after::CAP.max(MINUTE));
    }

    proptest! {
        #[test]
        fn jitter_stays_in_bounds(seed: u64, jitter in 0.0f64..0.99, secs in 1u64..100_000) {
            let s = Schedule::builder().tier(Duration::from_secs(secs), Duration::from_secs(secs * 10)).jitter(jitter).build().unwrap();
            let mut rng = SeededRng::new(seed);
            let base = Duration::from_secs(secs);
            let d = s.next_delay(Duration::ZERO, None, &mut rng).unwrap();
            prop_assert!(d >= base.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
            prop_assert!(d <= base.mul_f64(1.0 + jitter) + Duration::from_nanos(1));
        }

        #[test]
        fn never_schedules_past_the_horizon(age_secs in 0u64..1_000_000) {
            let s = Schedule::default();
            let age = Duration::from_secs(age_secs);
            if let Some(d) = s.base_delay(age) {
                prop_assert!(age + d <= s.horizon());
            }
        }
    }
}
