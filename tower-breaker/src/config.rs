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
    /// Failed probes that re-open a half-open breaker (derived in `validate`).
    pub(crate) half_open_reopen_after: u64,
    pub(crate) half_open_timeout: Option<Duration>,
    /// Standard errors a window's rate must clear a threshold by (0: the raw rate).
    pub(crate) rate_confidence: f64,
}

/// Builds a [`Breaker`]; every setting has a default, and [`build`](Self::build) rejects
/// nonsense with a [`ConfigError`].
///
/// Defaults: a count window of the last 100 calls, trip when the window shows a failure rate of
/// at least 50% with confidence (see [`rate_confidence`](Self::rate_confidence)) once 20 calls
/// are in the window, open for 5 s growing ×2 (−20% jitter) on re-opens whose probes all failed,
/// up to 60 s, reset after 60 s closed, an upstream `Retry-After` honoured (up to the max), five
/// half-open probes judged together, a 30 s half-open deadline, `Permanent` ignored.
///
/// Every default is chosen so that random noise is not mistaken for an outage: an upstream that
/// fails 40% of calls at random keeps a default breaker closed, and one that fails every call
/// opens it after 20 calls.
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
                // Several probes, judged together: a single probe is a coin toss under noise
                // (at 25% random faults one probe in four would send a recovered upstream back
                // to open, for longer each time).
                half_open_permits: 5,
                half_open_reopen_after: 1,
                half_open_timeout: Some(Duration::from_secs(30)),
                // About 97.7% one-sided confidence: at 40% random faults a window of 20 calls
                // crosses 50% one time in four by chance, but clears it by two standard errors
                // less than one time in five hundred.
                rate_confidence: 2.0,
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

    /// Trip when the window's failure rate reaches `threshold` (in `(0, 1]`) once
    /// `minimum_calls` are seen — by default with confidence: the rate's lower confidence bound
    /// must reach it (see [`rate_confidence`](Self::rate_confidence)).
    ///
    /// The threshold also judges half-open probes: that share of the
    /// [`half_open_permits`](Self::half_open_permits) failing re-opens the breaker.
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

    /// Trip when the window's share of slow calls reaches `threshold` once `minimum_calls` are
    /// seen (with the same confidence as the failure rate), a call being slow when it took at
    /// least `duration` — even if it succeeded. A slow half-open probe counts as a failed one.
    #[must_use]
    pub fn slow_calls(mut self, duration: Duration, threshold: f64) -> Self {
        self.cfg.slow_call_duration = Some(duration);
        self.cfg.slow_call_rate = Some(threshold);
        self
    }

    /// Trip after a run of at least `n` failures in a row (ignored outcomes do not break the
    /// run) that is a real streak: a run that the failure rate of the other calls in the window
    /// would produce by chance less than once in a million calls (see
    /// [`tower_fault::evidence::required_streak`]). With few failures around it, a run of `n`
    /// trips; at a 25% background failure rate it takes 10, at 40% 16 — runs that long are what
    /// an outage looks like, shorter ones are what noise looks like.
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

    /// How many probes a half-open period admits (default 5). They are judged together: the
    /// breaker re-opens once the failure-rate threshold's share of them failed (rounded up, at
    /// least one; any failure without a failure-rate rule) and closes once so many succeeded that
    /// the rest could not re-open it. With 5 permits and a 50% threshold, 3 failures re-open
    /// and 3 successes close.
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

    /// How many standard errors the window's failure (or slow-call) rate must clear the
    /// threshold by before the breaker trips (default 2; 0 compares the raw rate).
    ///
    /// The rules compare the lower bound of the rate's Wilson score interval (see
    /// [`tower_fault::evidence::wilson_lower_bound`]) with the threshold, so a small sample has
    /// to show a clearly higher rate than a large one: with the default, 20 failures in 20 calls
    /// trip a 50% threshold, 14 in 20 do not, and 60 in 100 do. An upstream that fails every
    /// call still trips the breaker at `minimum_calls`; one that fails 40% of calls at random
    /// practically never does.
    #[must_use]
    pub fn rate_confidence(mut self, standard_errors: f64) -> Self {
        self.cfg.rate_confidence = standard_errors;
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
        cfg.half_open_reopen_after = match cfg.failure_rate {
            // `- 1e-9`: 0.3 × 10 is 3.0000000000000004 in floating point, which must stay 3.
            Some(rate) => ((rate * cfg.half_open_permits as f64 - 1e-9).ceil() as u64)
                .clamp(1, cfg.half_open_permits),
            None => 1,
        };
        if !(cfg.rate_confidence.is_finite() && (0.0..=10.0).contains(&cfg.rate_confidence)) {
            return Err(crate::error::config_error(
                "rate_confidence",
                format!(
                    "must be a number of standard errors between 0 and 10, got {}",
                    cfg.rate_confidence
                ),
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
        crate::metrics::describe();
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
