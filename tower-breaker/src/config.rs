//! The breaker builder and its validation.

use std::{sync::Arc, time::Duration};

use tower_fault::backoff::{Backoff, Jitter};

use crate::{
    Breaker,
    clock::Clock,
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

/// The default of [`BreakerBuilder::open_backoff`]: open for 5 s, twice as long on each re-open
/// whose probes all failed, up to 60 s.
///
/// 5 s is long enough for an upstream that shed its load to recover before probes arrive, and
/// short enough that callers of a briefly failing upstream do not wait long; an upstream still
/// down after several probes is left alone for up to a minute, never longer, so a recovered one
/// is found within a minute.
pub const DEFAULT_OPEN_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(5), 2.0, Duration::from_secs(60));

/// The default of [`BreakerBuilder::open_jitter`]: each open period up to 20% shorter, at random.
///
/// Breakers of many clients that opened together would otherwise probe the upstream together;
/// 20% spreads them while keeping each open period close to its nominal length (full jitter
/// would make some periods too short to give the upstream any rest).
pub const DEFAULT_OPEN_JITTER: Jitter = Jitter::Proportional(0.2);

/// The validated settings of a breaker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) minimum_calls: u64,
    pub(crate) permanent: Outcome,
    pub(crate) open_backoff: Backoff,
    pub(crate) open_jitter: Jitter,
    pub(crate) backoff_reset_after: Duration,
    pub(crate) honor_retry_after: bool,
    pub(crate) half_open_permits: u64,
    /// Failed probes that re-open a half-open breaker (derived in `validate`).
    pub(crate) half_open_reopen_after: u64,
    pub(crate) half_open_timeout: Option<Duration>,
    /// Standard errors a window's rate must clear a threshold by (0: the raw rate).
    pub(crate) rate_confidence: f64,
    /// Where the breaker reads the time.
    pub(crate) clock: Clock,
}

/// The shortest [`slow_calls`](BreakerBuilder::slow_calls) duration the default
/// [`Clock::Coarse`] takes: it measures a call to one tick (up to 4 ms on Linux, 16 ms on
/// Windows), so a 50 ms threshold is judged to within 8 % on Linux and a third on Windows;
/// anything shorter needs [`Clock::Tokio`].
pub const MIN_COARSE_SLOW_CALL: Duration = Duration::from_millis(50);

/// Builds a [`Breaker`]; every setting has a default, and [`build`](Self::build) rejects
/// nonsense with a [`ConfigError`].
///
/// Defaults: a count window of the last 100 calls, trip when the window shows a failure rate of
/// at least 50% with confidence (see [`rate_confidence`](Self::rate_confidence)) once 20 calls
/// are in the window, open for 5 s growing ×2 (up to 20% shorter at random) on re-opens whose
/// probes all failed, up to 60 s ([`DEFAULT_OPEN_BACKOFF`], [`DEFAULT_OPEN_JITTER`]), reset
/// after 60 s closed, an upstream `Retry-After` honoured (up to the max), five
/// half-open probes judged together, a 30 s half-open deadline, `Permanent` ignored, time read
/// from the OS's coarse monotonic clock ([`Clock::Coarse`]: tests that pause tokio's clock set
/// [`clock(Clock::Tokio)`](Self::clock)).
///
/// Every default is chosen so that random noise is not mistaken for an outage: an upstream that
/// fails 40% of calls at random keeps a default breaker closed, and one that fails every call
/// opens it after 20 calls.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::{Backoff, Breaker, Window};
///
/// let breaker = Breaker::builder()
///     .name("payments")
///     .window(Window::time(Duration::from_secs(30)))
///     .failure_rate_threshold(0.25)
///     .minimum_calls(50)
///     .consecutive_failures(10)
///     .slow_calls(Duration::from_secs(2), 0.8)
///     .open_backoff(Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(60)))
///     .half_open_permits(3)
///     .build()?;
/// # let _ = breaker;
/// # Ok::<(), tower_breaker::error::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BreakerBuilder {
    name: Arc<str>,
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
            // Every layer of the suite is `"default"` unless named, so an unnamed instance is
            // labelled alike in every crate.
            name: Arc::from("default"),
            window: Window::count(100),
            cfg: Config {
                failure_rate: Some(0.5),
                slow_call_rate: None,
                slow_call_duration: None,
                consecutive_failures: None,
                minimum_calls: 20,
                permanent: Outcome::Ignored,
                open_backoff: DEFAULT_OPEN_BACKOFF,
                open_jitter: DEFAULT_OPEN_JITTER,
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
                // The kernel's tick: a time window reads the clock on every call, and the
                // rules are about seconds, so a few nanoseconds per read at millisecond
                // precision beats an exact clock at ~20-40 ns (see `Clock`).
                clock: Clock::Coarse,
            },
            backoff_reset_set: false,
            seed: None,
            guard: None,
            series: Series::Own,
        }
    }

    /// The instance name: the `name` label of every metric, and a field of every log and event
    /// (default `"default"`; must not be empty).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    pub(crate) fn name_ref(&self) -> &str {
        &self.name
    }

    pub(crate) fn clock_ref(&self) -> Clock {
        self.cfg.clock
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
    ///
    /// With the default [`Clock::Coarse`], `duration` must be at least
    /// [`MIN_COARSE_SLOW_CALL`] (50 ms: a duration is measured to one tick of that clock, up
    /// to 4 ms on Linux and 16 ms on Windows); [`Clock::Tokio`] measures any duration.
    #[must_use]
    pub fn slow_calls(mut self, duration: Duration, threshold: f64) -> Self {
        self.cfg.slow_call_duration = Some(duration);
        self.cfg.slow_call_rate = Some(threshold);
        self
    }

    /// No slow-call rule (the default): a call's duration does not matter.
    #[must_use]
    pub fn no_slow_calls(mut self) -> Self {
        self.cfg.slow_call_duration = None;
        self.cfg.slow_call_rate = None;
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

    /// No consecutive-failure rule (the default): only the rate rules trip the breaker.
    #[must_use]
    pub fn no_consecutive_failures(mut self) -> Self {
        self.cfg.consecutive_failures = None;
        self
    }

    /// What a `Class::Permanent` outcome counts as (default [`Outcome::Ignored`]).
    #[must_use]
    pub fn permanent_outcome(mut self, outcome: Outcome) -> Self {
        self.cfg.permanent = outcome;
        self
    }

    /// The curve of open periods (default [`DEFAULT_OPEN_BACKOFF`]: 5 s, ×2, up to 60 s).
    ///
    /// The breaker's re-open streak picks the step: the first trip is step 1 (the curve's base),
    /// each re-open whose probes all failed is one step further, a re-open on a mixed verdict
    /// repeats the step, and a trip soon after closing continues the streak (see
    /// [`backoff_reset_after`](Self::backoff_reset_after)). The curve's `max` caps every open
    /// period, also one stretched by an upstream's `Retry-After`. A decorrelated curve grows
    /// from the previous open period. The base must be longer than zero.
    #[must_use]
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.cfg.open_backoff = backoff;
        self
    }

    /// How each open period is randomised (default [`DEFAULT_OPEN_JITTER`]: up to 20% shorter),
    /// so the breakers of a fleet that opened together do not probe in step. Any jitter only
    /// shortens the period; an open period is never shorter than 1 ms.
    #[must_use]
    pub fn open_jitter(mut self, jitter: Jitter) -> Self {
        self.cfg.open_jitter = jitter;
        self
    }

    /// How long the breaker must stay closed before the open duration falls back to the
    /// curve's base (default: the curve's max).
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
    /// (default 30 s: a probe that hangs must not keep the breaker half-open, refusing every
    /// other call, forever). Must be longer than zero.
    #[must_use]
    pub fn half_open_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.half_open_timeout = Some(timeout);
        self
    }

    /// No half-open deadline: the breaker waits for its probes however long they take (a probe
    /// that never ends then keeps it half-open).
    #[must_use]
    pub fn no_half_open_timeout(mut self) -> Self {
        self.cfg.half_open_timeout = None;
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

    /// Where the breaker reads the time (default [`Clock::Coarse`], the kernel's tick: a few
    /// nanoseconds per read, one tick of precision, not paused by `tokio::time::pause`).
    /// [`Clock::Tokio`] follows tokio's clock, paused or not: the one for tests that drive
    /// time with `tokio::time::advance`.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.cfg.clock = clock;
        self
    }

    /// Seeds the jitter of open durations (reproducible tests); entropy by default.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks every setting and derives what the breaker reads from them; the window to build.
    fn validate(&mut self) -> Result<WindowImpl, ConfigError> {
        if self.name.is_empty() {
            return Err(crate::error::config_error("name", "must not be empty"));
        }
        self.cfg.check_rules()?;
        self.cfg.check_open()?;
        if !self.backoff_reset_set {
            self.cfg.backoff_reset_after = self.cfg.open_backoff.max();
        }
        self.cfg.check_half_open()?;
        self.window.validate(self.cfg.minimum_calls)
    }

    /// Validates the settings without building a breaker.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        self.clone().validate().map(drop)
    }

    /// Validates the settings and builds the breaker.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting that makes no sense: an empty name, a rate outside
    /// `(0, 1]`, an empty window, `minimum_calls` larger than a count window, no trip rule at
    /// all, an open backoff whose base is zero or longer than its max, zero half-open
    /// permits…
    pub fn build(mut self) -> Result<Breaker, ConfigError> {
        let window = self.validate()?;
        crate::metrics::describe();
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

impl Config {
    /// The trip rules: thresholds, durations, confidence, and at least one rule.
    fn check_rules(&self) -> Result<(), ConfigError> {
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if let Some(r) = self.failure_rate
            && !rate_ok(r)
        {
            return Err(crate::error::config_error(
                "failure_rate_threshold",
                format!("must be between 0 and 1 (exclusive of 0), got {r}"),
            ));
        }
        if let Some(r) = self.slow_call_rate
            && !rate_ok(r)
        {
            return Err(crate::error::config_error(
                "slow_calls",
                format!("threshold must be between 0 and 1 (exclusive of 0), got {r}"),
            ));
        }
        if self.slow_call_duration == Some(Duration::ZERO) {
            return Err(crate::error::config_error(
                "slow_calls",
                "duration must be greater than zero",
            ));
        }
        if let Some(duration) = self.slow_call_duration
            && self.clock == Clock::Coarse
            && duration < MIN_COARSE_SLOW_CALL
        {
            return Err(crate::error::config_error(
                "slow_calls",
                format!(
                    "duration {duration:?} is shorter than {MIN_COARSE_SLOW_CALL:?}, the shortest the default coarse clock measures well (it moves in ticks of 1-16 ms, by OS): set `clock(Clock::Tokio)` for a shorter threshold"
                ),
            ));
        }
        if self.consecutive_failures == Some(0) {
            return Err(crate::error::config_error(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        if self.failure_rate.is_none()
            && self.slow_call_rate.is_none()
            && self.consecutive_failures.is_none()
        {
            return Err(crate::error::config_error(
                "failure_rate_threshold",
                "is off and no other trip rule (slow_calls, consecutive_failures) is set: the breaker could never open",
            ));
        }
        if self.minimum_calls == 0 {
            return Err(crate::error::config_error(
                "minimum_calls",
                "must be at least 1",
            ));
        }
        if !(self.rate_confidence.is_finite() && (0.0..=10.0).contains(&self.rate_confidence)) {
            return Err(crate::error::config_error(
                "rate_confidence",
                format!(
                    "must be a number of standard errors between 0 and 10, got {}",
                    self.rate_confidence
                ),
            ));
        }
        Ok(())
    }

    /// The open periods: a valid curve whose base is longer than zero, a valid jitter.
    fn check_open(&self) -> Result<(), ConfigError> {
        self.open_backoff
            .validate("circuit breaker", "open_backoff")?;
        self.open_jitter
            .validate("circuit breaker", "open_jitter")?;
        if self.open_backoff.base().is_zero() {
            return Err(crate::error::config_error(
                "open_backoff",
                "base delay must be greater than zero",
            ));
        }
        Ok(())
    }

    /// The half-open period: the permits, their deadline, and how many failed probes re-open
    /// (derived from the failure-rate threshold).
    fn check_half_open(&mut self) -> Result<(), ConfigError> {
        if self.half_open_permits == 0 || self.half_open_permits > 10_000 {
            return Err(crate::error::config_error(
                "half_open_permits",
                format!(
                    "must be between 1 and 10000, got {}",
                    self.half_open_permits
                ),
            ));
        }
        if self.half_open_timeout == Some(Duration::ZERO) {
            return Err(crate::error::config_error(
                "half_open_timeout",
                "must be greater than zero (no_half_open_timeout() turns it off)",
            ));
        }
        self.half_open_reopen_after = match self.failure_rate {
            // `- 1e-9`: 0.3 × 10 is 3.0000000000000004 in floating point, which must stay 3.
            Some(rate) => ((rate * self.half_open_permits as f64 - 1e-9).ceil() as u64)
                .clamp(1, self.half_open_permits),
            None => 1,
        };
        Ok(())
    }
}

impl Window {
    /// Checks the window's size against its limits and `minimum_calls`, and makes it.
    fn validate(self, minimum_calls: u64) -> Result<WindowImpl, ConfigError> {
        match self {
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
                if minimum_calls > u64::from(size) {
                    return Err(crate::error::config_error(
                        "minimum_calls",
                        format!(
                            "({minimum_calls}) exceeds the count window size ({size}): the rate rules could never trip"
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
}
