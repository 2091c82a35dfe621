//! The breaker builder and its validation.

use std::{sync::Arc, time::Duration};

use crate::{
    Breaker,
    error::ConfigError,
    guard::FleetGuard,
    telemetry::Series,
    window::{self, Window as WindowImpl},
};

/// Which window the trip rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `size` recorded calls (a true ring).
    Count {
        /// How many calls.
        size: u32,
    },
    /// The calls of the last `duration`, in `buckets` buckets of `duration / buckets`; a call
    /// ages out when its whole bucket has left the window.
    Time {
        /// The window's length.
        duration: Duration,
        /// How many buckets it is cut into (the resolution of ageing out).
        buckets: u32,
    },
}

impl Window {
    /// The last `size` calls.
    #[must_use]
    pub const fn count(size: u32) -> Self {
        Window::Count { size }
    }

    /// The last `duration`, in 10 buckets.
    #[must_use]
    pub const fn time(duration: Duration) -> Self {
        Window::Time {
            duration,
            buckets: 10,
        }
    }

    /// The last `duration`, in `buckets` buckets.
    #[must_use]
    pub const fn time_with_buckets(duration: Duration, buckets: u32) -> Self {
        Window::Time { duration, buckets }
    }
}

/// What a call's class counts as in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A success: lowers the failure rate, resets the consecutive-failure count.
    Success,
    /// A failure: counts towards every trip rule.
    Failure,
    /// Not recorded at all (the default for `Class::Permanent`: a 404 says nothing about the
    /// upstream's health).
    Ignored,
}

/// The validated settings of a breaker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) minimum_calls: u64,
    pub(crate) permanent: Outcome,
    pub(crate) open_base: Duration,
    pub(crate) open_max: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) open_jitter: f64,
    pub(crate) backoff_reset_after: Duration,
    pub(crate) honor_retry_after: bool,
    pub(crate) half_open_permits: u64,
    pub(crate) half_open_timeout: Option<Duration>,
}

/// Builds a [`Breaker`]; every setting has a default, and [`build`](Self::build) rejects
/// nonsense with a [`ConfigError`].
///
/// Defaults: a count window of the last 100 calls, trip at a 50% failure rate once 20 calls are
/// in the window, open for 5 s growing ×2 (−20% jitter) on consecutive re-opens up to 60 s,
/// reset after 60 s closed, an upstream `Retry-After` honoured (up to the max), one half-open
/// probe, a 30 s half-open deadline, `Permanent` ignored.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::{Breaker, Window};
///
/// let breaker = Breaker::builder()
///     .name("payments")
///     .window(Window::time(Duration::from_secs(30)))
///     .failure_rate_threshold(0.25)
///     .minimum_calls(50)
///     .consecutive_failures(10)
///     .slow_calls(Duration::from_secs(2), 0.8)
///     .open_duration(Duration::from_secs(1), Duration::from_secs(60))
///     .half_open_permits(3)
///     .build()?;
/// # let _ = breaker;
/// # Ok::<(), tower_breaker::error::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BreakerBuilder {
    name: String,
    window: Window,
    cfg: Config,
    backoff_reset_set: bool,
    seed: Option<u64>,
    pub(crate) guard: Option<Arc<FleetGuard>>,
    pub(crate) series: Series,
}

impl Default for BreakerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BreakerBuilder {
    /// The defaults (see the type's docs).
    #[must_use]
    pub fn new() -> Self {
        Self {
            name: "default".to_owned(),
            window: Window::count(100),
            cfg: Config {
                failure_rate: Some(0.5),
                slow_call_rate: None,
                slow_call_duration: None,
                consecutive_failures: None,
                minimum_calls: 20,
                permanent: Outcome::Ignored,
                open_base: Duration::from_secs(5),
                open_max: Duration::from_secs(60),
                open_multiplier: 2.0,
                open_jitter: 0.2,
                backoff_reset_after: Duration::from_secs(60),
                honor_retry_after: true,
                half_open_permits: 1,
                half_open_timeout: Some(Duration::from_secs(30)),
            },
            backoff_reset_set: false,
            seed: None,
            guard: None,
            series: Series::Own,
        }
    }

    /// The instance name: the `name` label of every metric, and a field of every log and event.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub(crate) fn name_ref(&self) -> &str {
        &self.name
    }

    /// The window the rates are computed over.
    #[must_use]
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Trip when `failures / calls >= threshold` (in `(0, 1]`) once `minimum_calls` are seen.
    #[must_use]
    pub fn failure_rate_threshold(mut self, threshold: f64) -> Self {
        self.cfg.failure_rate = Some(threshold);
        self
    }

    /// Turns the failure-rate rule off (use consecutive failures or slow calls alone).
    #[must_use]
    pub fn no_failure_rate(mut self) -> Self {
        self.cfg.failure_rate = None;
        self
    }

    /// How many calls the window must hold before a rate rule may trip (default 20).
    #[must_use]
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.cfg.minimum_calls = u64::from(calls);
        self
    }

    /// Trip when `slow / calls >= threshold` once `minimum_calls` are seen, a call being slow
    /// when it took at least `duration` — even if it succeeded.
    #[must_use]
    pub fn slow_calls(mut self, duration: Duration, threshold: f64) -> Self {
        self.cfg.slow_call_duration = Some(duration);
        self.cfg.slow_call_rate = Some(threshold);
        self
    }

    /// Trip after `n` failures in a row (ignored outcomes do not break the run).
    #[must_use]
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.cfg.consecutive_failures = Some(n);
        self
    }

    /// What a `Class::Permanent` outcome counts as (default [`Outcome::Ignored`]).
    #[must_use]
    pub fn permanent_outcome(mut self, outcome: Outcome) -> Self {
        self.cfg.permanent = outcome;
        self
    }

    /// The open duration: `base` on the first trip, then ×2 on every consecutive re-open, capped
    /// at `max`.
    #[must_use]
    pub fn open_duration(mut self, base: Duration, max: Duration) -> Self {
        self.cfg.open_base = base;
        self.cfg.open_max = max;
        self
    }

    /// The growth factor of the open duration between consecutive re-opens (default 2, ≥ 1).
    #[must_use]
    pub fn open_multiplier(mut self, multiplier: f64) -> Self {
        self.cfg.open_multiplier = multiplier;
        self
    }

    /// Random reduction of each open duration, as a fraction in `[0, 1)` (default 0.2: an open
    /// duration `d` becomes a uniform value in `[0.8 d, d]`), so a fleet does not probe in step.
    #[must_use]
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.cfg.open_jitter = fraction;
        self
    }

    /// How long the breaker must stay closed before the open duration falls back to `base`
    /// (default: the max open duration).
    #[must_use]
    pub fn backoff_reset_after(mut self, after: Duration) -> Self {
        self.cfg.backoff_reset_after = after;
        self.backoff_reset_set = true;
        self
    }

    /// Whether a `Retry-After` carried by a failure (429/503) longer than the computed open
    /// duration sets it instead, capped at the max open duration (default `true`).
    #[must_use]
    pub fn honor_retry_after(mut self, honor: bool) -> Self {
        self.cfg.honor_retry_after = honor;
        self
    }

    /// How many probes may be in flight in half-open; that many successes close the breaker,
    /// any failure re-opens it (default 1).
    #[must_use]
    pub fn half_open_permits(mut self, permits: u32) -> Self {
        self.cfg.half_open_permits = u64::from(permits);
        self
    }

    /// Re-open when the breaker has been half-open this long with probes still in flight
    /// (default 30 s); `None` waits for the probes however long they take.
    #[must_use]
    pub fn half_open_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.cfg.half_open_timeout = timeout;
        self
    }

    /// Seeds the jitter of open durations (reproducible tests); entropy by default.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    fn validate(&mut self) -> Result<WindowImpl, ConfigError> {
        let cfg = &mut self.cfg;
        if self.name.is_empty() {
            return Err(crate::error::config_error("name", "must not be empty"));
        }
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if let Some(r) = cfg.failure_rate
            && !rate_ok(r)
        {
            return Err(crate::error::config_error(
                "failure_rate_threshold",
                format!("must be between 0 and 1 (exclusive of 0), got {r}"),
            ));
        }
        if let Some(r) = cfg.slow_call_rate
            && !rate_ok(r)
        {
            return Err(crate::error::config_error(
                "slow_calls",
                format!("threshold must be between 0 and 1 (exclusive of 0), got {r}"),
            ));
        }
        if cfg.slow_call_duration == Some(Duration::ZERO) {
            return Err(crate::error::config_error(
                "slow_calls",
                "duration must be greater than zero",
            ));
        }
        if cfg.consecutive_failures == Some(0) {
            return Err(crate::error::config_error(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        if cfg.failure_rate.is_none()
            && cfg.slow_call_rate.is_none()
            && cfg.consecutive_failures.is_none()
        {
            return Err(crate::error::config_error(
                "failure_rate_threshold",
                "is off and no other trip rule (slow_calls, consecutive_failures) is set: the breaker could never open",
            ));
        }
        if cfg.minimum_calls == 0 {
            return Err(crate::error::config_error(
                "minimum_calls",
                "must be at least 1",
            ));
        }
        if cfg.open_base.is_zero() {
            return Err(crate::error::config_error(
                "open_duration",
                "base must be greater than zero",
            ));
        }
        if cfg.open_max < cfg.open_base {
            return Err(crate::error::config_error(
                "open_duration",
                format!(
                    "max ({:?}) is shorter than base ({:?})",
                    cfg.open_max, cfg.open_base
                ),
            ));
        }
        if !(cfg.open_multiplier >= 1.0 && cfg.open_multiplier.is_finite()) {
            return Err(crate::error::config_error(
                "open_multiplier",
                format!(
                    "must be a finite number of at least 1, got {}",
                    cfg.open_multiplier
                ),
            ));
        }
        if !(0.0..1.0).contains(&cfg.open_jitter) {
            return Err(crate::error::config_error(
                "open_jitter",
                format!("must be in [0, 1), got {}", cfg.open_jitter),
            ));
        }
        if !self.backoff_reset_set {
            cfg.backoff_reset_after = cfg.open_max;
        }
        if cfg.half_open_permits == 0 || cfg.half_open_permits > 10_000 {
            return Err(crate::error::config_error(
                "half_open_permits",
                format!("must be between 1 and 10000, got {}", cfg.half_open_permits),
            ));
        }
        if cfg.half_open_timeout == Some(Duration::ZERO) {
            return Err(crate::error::config_error(
                "half_open_timeout",
                "must be greater than zero (or None)",
            ));
        }
        match self.window {
            Window::Count { size } => {
                if size == 0 || size > window::MAX_COUNT {
                    return Err(crate::error::config_error(
                        "window",
                        format!(
                            "count window size must be between 1 and {}, got {size}",
                            window::MAX_COUNT
                        ),
                    ));
                }
                if cfg.minimum_calls > u64::from(size) {
                    return Err(crate::error::config_error(
                        "minimum_calls",
                        format!(
                            "({}) exceeds the count window size ({size}): the rate rules could never trip",
                            cfg.minimum_calls
                        ),
                    ));
                }
                Ok(WindowImpl::Count(window::CountWindow::new(size)))
            }
            Window::Time { duration, buckets } => {
                if buckets == 0 || buckets > window::MAX_BUCKETS {
                    return Err(crate::error::config_error(
                        "window",
                        format!(
                            "time window buckets must be between 1 and {}, got {buckets}",
                            window::MAX_BUCKETS
                        ),
                    ));
                }
                let width = duration.as_nanos() / u128::from(buckets);
                if width < 1_000_000 {
                    return Err(crate::error::config_error(
                        "window",
                        format!(
                            "time window buckets must be at least 1ms wide, got {duration:?} / {buckets}"
                        ),
                    ));
                }
                let width = u64::try_from(width)
                    .map_err(|_| crate::error::config_error("window", "time window is too long"))?;
                Ok(WindowImpl::Time(window::TimeWindow::new(width, buckets)))
            }
        }
    }

    /// Validates the settings without building a breaker.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        self.clone().validate().map(drop)
    }

    /// Validates the settings and builds the breaker.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting that makes no sense: a rate outside `(0, 1]`, an
    /// empty window, `minimum_calls` larger than a count window, no trip rule at all, a max open
    /// duration shorter than the base, zero half-open permits…
    pub fn build(mut self) -> Result<Breaker, ConfigError> {
        let window = self.validate()?;
        let seed = self
            .seed
            .unwrap_or_else(|| tower_fault::SeededRng::from_entropy().next_u64());
        Ok(Breaker::from_parts(
            self.name,
            self.cfg,
            window,
            seed,
            self.guard,
            &self.series,
        ))
    }
}
