//! [`RetryLayer`] and its builder.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tower_fault::{HttpClassifier, SeededRng};
use tower_layer::Layer;

use crate::{Backoff, Jitter, Retry, RetryBudget, error::ConfigError, observe::Metrics};

/// The default of [`RetryLayerBuilder::max_replay_bytes`]: request bodies up to 64 KiB are
/// kept for replays.
///
/// Every in-flight request may hold this much until its response head arrives, so it bounds the
/// layer's memory at 64 KiB per concurrent request, while covering the JSON and form bodies of
/// typical API calls; a larger upload is sent once and not retried (never truncated).
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 * 1024;

/// The default total deadline of a logical request: 30 s.
///
/// With no deadline, an upstream that accepts a connection and never answers holds the caller
/// forever, so the defaults have one. 30 s is the total request timeout of .NET's standard
/// resilience handler: far above any healthy answer and the default backoff's sleeps (at most
/// 0.7 s over four attempts), short enough that a hung upstream frees its callers. Change it
/// with [`RetryLayerBuilder::deadline`], turn it off with [`RetryLayerBuilder::no_deadline`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Everything a [`Retry`] service reads, shared by every clone of the layer and its services.
pub(crate) struct Config<C> {
    pub(crate) classifier: C,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) max_retry_after: Duration,
    pub(crate) max_local_rejection_wait: Duration,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) max_replay_bytes: usize,
    pub(crate) stamp_key: bool,
    pub(crate) name: Arc<str>,
    seed: u64,
    sequence: AtomicU64,
    pub(crate) metrics: Metrics,
}

impl<C> Config<C> {
    /// A generator for one request's jitter: reproducible from the builder's seed, different
    /// for every request.
    pub(crate) fn rng(&self) -> SeededRng {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        SeededRng::new(SeededRng::new(self.seed.wrapping_add(n)).next_u64())
    }
}

impl<C> fmt::Debug for Config<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_retry_after", &self.max_retry_after)
            .field("max_local_rejection_wait", &self.max_local_rejection_wait)
            .field("budget", &self.budget)
            .field("max_replay_bytes", &self.max_replay_bytes)
            .field("idempotency_key", &self.stamp_key)
            .finish_non_exhaustive()
    }
}

/// Applies [`Retry`] to a service.
///
/// All services made from one layer value (and its clones) share one configuration and one
/// retry budget.
///
/// ```
/// use std::time::Duration;
/// use tower_retry_plus::{Backoff, Jitter, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .name("payments")
///     .max_attempts(3)
///     .backoff(Backoff::exponential(Duration::from_millis(50), 2.0, Duration::from_secs(2)))
///     .jitter(Jitter::Full)
///     .deadline(Duration::from_secs(10))
///     .attempt_timeout(Duration::from_secs(2))
///     .idempotency_key(true)
///     .build()
///     .expect("valid configuration");
/// # let _ = layer;
/// ```
pub struct RetryLayer<C = HttpClassifier> {
    config: Arc<Config<C>>,
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl Default for RetryLayer {
    /// 4 attempts, exponential backoff from 100 ms to 10 s with full jitter, a 30 s total
    /// deadline ([`DEFAULT_DEADLINE`]), Retry-After honoured up to 60 s (and within the
    /// deadline), a local rejection's hint waited up to the backoff's maximum (10 s), a budget
    /// of 20% of requests + 2 per answered retry + 10/s, 64 KiB replay limit, no key stamping.
    fn default() -> Self {
        RetryLayer::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

impl RetryLayer {
    /// A builder starting from the [defaults](RetryLayer::default).
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new()
    }
}

impl<C> RetryLayer<C> {
    /// The retry budget shared by the services of this layer, if any.
    #[must_use]
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.config.budget.as_ref()
    }

    /// The instance name labelling metrics.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_config(inner, Arc::clone(&self.config))
    }
}

/// What the builder was told about the budget. Kept as given and resolved in `build()`, where
/// settings that contradict each other (tuning the layer's own budget and sharing another, or
/// turning it off) are an error rather than one of them silently winning.
#[derive(Debug, Clone, Default)]
struct BudgetSettings {
    ratio: Option<f64>,
    floor_per_sec: Option<u32>,
    answered_credit: Option<f64>,
    shared: Option<RetryBudget>,
    off: bool,
}

impl BudgetSettings {
    fn resolve(self) -> Result<Option<RetryBudget>, ConfigError> {
        let tuned =
            self.ratio.is_some() || self.floor_per_sec.is_some() || self.answered_credit.is_some();
        match (self.shared, self.off) {
            (None, false) => {
                let mut own = RetryBudget::builder();
                if let Some(ratio) = self.ratio {
                    own = own.ratio(ratio);
                }
                if let Some(floor) = self.floor_per_sec {
                    own = own.floor_per_sec(floor);
                }
                if let Some(credit) = self.answered_credit {
                    own = own.answered_credit(credit);
                }
                Ok(Some(own.build()?))
            }
            (Some(shared), false) if !tuned => Ok(Some(shared)),
            (None, true) if !tuned => Ok(None),
            (shared, off) => {
                let mut set = Vec::new();
                if tuned {
                    set.push(
                        "`budget_ratio`/`budget_floor_per_sec`/`budget_answered_credit` \
                         (the layer's own budget)",
                    );
                }
                if shared.is_some() {
                    set.push("`budget(..)` (a shared one)");
                }
                if off {
                    set.push("`no_budget()` (none)");
                }
                Err(crate::error::config_error(format!(
                    "conflicting budget settings: {}",
                    set.join(", ")
                )))
            }
        }
    }
}

/// Builds a [`RetryLayer`]; every setting is checked by [`build`](Self::build).
#[derive(Clone)]
#[must_use]
pub struct RetryLayerBuilder<C = HttpClassifier> {
    classifier: C,
    backoff: Backoff,
    jitter: Jitter,
    max_attempts: u32,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    max_retry_after: Duration,
    /// `None`: the backoff's maximum delay, resolved in `build()` (whatever order the backoff
    /// and this are set in).
    max_local_rejection_wait: Option<Duration>,
    budget: BudgetSettings,
    max_replay_bytes: usize,
    stamp_key: bool,
    name: Arc<str>,
    seed: Option<u64>,
}

impl<C> fmt::Debug for RetryLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_retry_after", &self.max_retry_after)
            .field("max_local_rejection_wait", &self.max_local_rejection_wait)
            .field("budget", &self.budget)
            .field("max_replay_bytes", &self.max_replay_bytes)
            .field("idempotency_key", &self.stamp_key)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Default for RetryLayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayerBuilder {
    /// The defaults of [`RetryLayer::default`].
    pub fn new() -> Self {
        Self {
            classifier: HttpClassifier::default(),
            backoff: Backoff::default(),
            jitter: Jitter::default(),
            max_attempts: 4,
            deadline: Some(DEFAULT_DEADLINE),
            attempt_timeout: None,
            max_retry_after: Duration::from_secs(60),
            max_local_rejection_wait: None,
            budget: BudgetSettings::default(),
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
            stamp_key: false,
            // Every layer of the suite is `"default"` unless named, so an unnamed instance is
            // labelled alike in every crate.
            name: Arc::from("default"),
            seed: None,
        }
    }
}

impl<C> RetryLayerBuilder<C> {
    /// Replaces the classifier deciding what is transient (default: [`HttpClassifier`]).
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2> {
        RetryLayerBuilder {
            classifier,
            backoff: self.backoff,
            jitter: self.jitter,
            max_attempts: self.max_attempts,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            max_retry_after: self.max_retry_after,
            max_local_rejection_wait: self.max_local_rejection_wait,
            budget: self.budget,
            max_replay_bytes: self.max_replay_bytes,
            stamp_key: self.stamp_key,
            name: self.name,
            seed: self.seed,
        }
    }

    /// The instance name: the `name` label of every metric and a field of every log line
    /// (default `"default"`; must not be empty).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Attempts per request, counting the first (default 4; at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The backoff curve (default exponential, 100 ms × 2 up to 10 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The jitter (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The total deadline of a logical request, covering every attempt and every sleep
    /// (default 30 s, [`DEFAULT_DEADLINE`]; see there why).
    ///
    /// The layer never sleeps past it: when the next wait would reach it, the last outcome is
    /// returned at once. An attempt still running at the deadline fails with
    /// [`DeadlineExceeded`](crate::error::DeadlineExceeded). It is counted from the first poll
    /// of the response future (a request its first poll answers successfully never reads the
    /// clock for it).
    ///
    /// The deadline ends when the response head is returned: reading the response body is the
    /// caller's, and is not bounded by it. Bound it with
    /// [`BodyTimeoutLayer`](crate::BodyTimeoutLayer).
    ///
    /// [`no_deadline`](Self::no_deadline) turns it off; `Duration::MAX` means the same.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = (deadline != Duration::MAX).then_some(deadline);
        self
    }

    /// No total deadline: a request ends when its attempts run out, however long they take.
    /// An upstream that never answers then holds the caller forever unless an
    /// [`attempt_timeout`](Self::attempt_timeout) (or a timeout below the layer) ends attempts.
    pub fn no_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// A timeout per attempt; its expiry is a transient failure
    /// ([`AttemptTimedOut`](crate::error::AttemptTimedOut)). Must be shorter than the deadline.
    ///
    /// Off by default: the deadline already ends a request that never answers, and a per-attempt
    /// bound depends on how long the upstream's calls take, which only the caller knows.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// No per-attempt timeout (the default): an attempt runs until it answers or the deadline
    /// passes.
    pub fn no_attempt_timeout(mut self) -> Self {
        self.attempt_timeout = None;
        self
    }

    /// The longest `Retry-After` of the *upstream* honoured (a 429 or 503 and its header;
    /// default 60 s). A longer hint ends the retries at once, returning the response that
    /// carried it. A local layer's hint is [`max_local_rejection_wait`]'s.
    ///
    /// [`max_local_rejection_wait`]: Self::max_local_rejection_wait
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The longest hint of a *local* rejection waited out before retrying (default: the
    /// backoff's maximum delay, 10 s with the default backoff).
    ///
    /// A local rejection is a layer of this client refusing the request unsent — a circuit
    /// breaker that is open, failover with no healthy endpoint (`tower_fault::Rejected` in the
    /// error chain) — and its hint is when that layer expects to let requests through again.
    /// Waiting it out blocks the caller for the breaker's whole open period (most of a deadline)
    /// on a bet that the upstream has recovered by then, so by default the layer waits no longer
    /// than its own backoff would: a longer hint returns the rejection to the caller at once
    /// ([`RetryOutcome::Rejected`](crate::RetryOutcome::Rejected)), who can decide (queue it,
    /// answer 503, try later). `Duration::ZERO` never waits a hint; `Duration::MAX` waits any
    /// the deadline leaves time for.
    ///
    /// A rejection by one endpoint's own layer — failover reports it with a
    /// `tower_fault::EndpointError` around the error — is not waited at all: the next attempt
    /// goes to an endpoint not tried yet, after the normal backoff.
    pub fn max_local_rejection_wait(mut self, max: Duration) -> Self {
        self.max_local_rejection_wait = Some(max);
        self
    }

    /// Uses an existing budget, e.g. one shared by the layers of every client of one upstream.
    /// Contradicting `budget_ratio`, `budget_floor_per_sec` or `no_budget` is a `build()` error.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget.shared = Some(budget);
        self
    }

    /// The budget's ratio of retries to requests (default 0.2; within `0.0..=1.0`; see
    /// [`RetryBudgetBuilder::ratio`](crate::RetryBudgetBuilder::ratio)). Tunes the layer's own
    /// budget: combined with `budget(..)` or `no_budget()` it is a `build()` error.
    pub fn budget_ratio(mut self, ratio: f64) -> Self {
        self.budget.ratio = Some(ratio);
        self
    }

    /// The budget's floor: retries per second admitted whatever the ratio, as a token bucket of
    /// one second's worth (default 10; see
    /// [`RetryBudgetBuilder::floor_per_sec`](crate::RetryBudgetBuilder::floor_per_sec)). Tunes
    /// the layer's own budget: combined with `budget(..)` or `no_budget()` it is a `build()`
    /// error.
    pub fn budget_floor_per_sec(mut self, floor_per_sec: u32) -> Self {
        self.budget.floor_per_sec = Some(floor_per_sec);
        self
    }

    /// The retries each answered retry earns in the budget (default 2: retries flow while at
    /// least half of them are answered; see
    /// [`RetryBudgetBuilder::answered_credit`](crate::RetryBudgetBuilder::answered_credit)).
    /// Tunes the layer's own budget: combined with `budget(..)` or `no_budget()` it is a
    /// `build()` error.
    pub fn budget_answered_credit(mut self, credit: f64) -> Self {
        self.budget.answered_credit = Some(credit);
        self
    }

    /// Retries without a budget (only `max_attempts` and the deadline limit them).
    pub fn no_budget(mut self) -> Self {
        self.budget.off = true;
        self
    }

    /// Request bodies up to `max` bytes are kept for replays (default
    /// [`DEFAULT_MAX_REPLAY_BYTES`], 64 KiB; see there why); larger ones are sent once, whole,
    /// and not retried. 0 keeps only empty bodies.
    pub fn max_replay_bytes(mut self, max: usize) -> Self {
        self.max_replay_bytes = max;
        self
    }

    /// Stamps a generated `Idempotency-Key` (UUID v7) on requests with non-idempotent methods
    /// that lack one, the same key on every attempt, which makes them retryable on every
    /// transient failure against a server that deduplicates (tower-idempotency). Off by default.
    pub fn idempotency_key(mut self, stamp: bool) -> Self {
        self.stamp_key = stamp;
        self
    }

    /// Seeds the jitter, for reproducible delays in tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// Metric handles are registered here, with the `metrics` recorder installed at this point.
    ///
    /// # Errors
    /// A [`ConfigError`] for an empty name, zero attempts, a backoff whose base exceeds its max or whose
    /// multiplier is below 1 or NaN, a proportional jitter outside `[0, 1]`, a zero deadline or
    /// attempt timeout, an attempt timeout not shorter than the deadline, or a budget ratio
    /// outside `0.0..=1.0` (or NaN).
    pub fn build(self) -> Result<RetryLayer<C>, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::for_field("retry", "name", "must not be empty"));
        }
        if self.max_attempts == 0 {
            return Err(crate::error::config_error(
                "max_attempts must be at least 1 (it counts the first attempt)",
            ));
        }
        self.backoff.validate("retry", "backoff")?;
        self.jitter.validate("retry", "jitter")?;
        if self.deadline == Some(Duration::ZERO) {
            return Err(crate::error::config_error(
                "deadline must be longer than zero",
            ));
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(crate::error::config_error(
                "attempt_timeout must be longer than zero",
            ));
        }
        if let (Some(timeout), Some(deadline)) = (self.attempt_timeout, self.deadline)
            && timeout >= deadline
        {
            return Err(crate::error::config_error(format!(
                "attempt_timeout ({timeout:?}) must be shorter than the deadline \
                     ({deadline:?}; the default is {DEFAULT_DEADLINE:?}: set it with \
                     `deadline(..)` or turn it off with `no_deadline()`)"
            )));
        }
        let budget = self.budget.resolve()?;
        let seed = self
            .seed
            .unwrap_or_else(|| SeededRng::from_entropy().next_u64());
        Ok(RetryLayer {
            config: Arc::new(Config {
                classifier: self.classifier,
                backoff: self.backoff,
                jitter: self.jitter,
                max_attempts: self.max_attempts,
                deadline: self.deadline,
                attempt_timeout: self.attempt_timeout,
                max_retry_after: self.max_retry_after,
                max_local_rejection_wait: self
                    .max_local_rejection_wait
                    .unwrap_or_else(|| self.backoff.max()),
                budget,
                max_replay_bytes: self.max_replay_bytes,
                stamp_key: self.stamp_key,
                metrics: Metrics::register(&self.name),
                name: self.name,
                seed,
                sequence: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(builder: RetryLayerBuilder) -> String {
        builder.build().unwrap_err().to_string()
    }

    #[test]
    fn nonsense_is_refused_with_a_clear_message() {
        let b = RetryLayer::builder;
        assert!(err(b().max_attempts(0)).contains("max_attempts must be at least 1"));
        assert!(err(b().name("")).contains("`name`"));
        let ms = Duration::from_millis;
        assert!(
            err(b().backoff(Backoff::exponential(ms(10), 2.0, ms(5))))
                .contains("larger than its max")
        );
        assert!(
            err(b().backoff(Backoff::exponential(ms(1), f64::NAN, ms(5)))).contains("multiplier")
        );
        assert!(err(b().jitter(Jitter::Proportional(1.5))).contains("`jitter`"));
        assert!(
            err(b().deadline(ms(100)).attempt_timeout(ms(100)))
                .contains("shorter than the deadline")
        );
        assert!(err(b().deadline(Duration::ZERO)).contains("deadline must be longer than zero"));
        assert!(err(b().attempt_timeout(Duration::ZERO)).contains("attempt_timeout"));
        assert!(err(b().budget_ratio(1.5)).contains("ratio"));
        assert!(err(b().budget_ratio(f64::NAN)).contains("ratio"));
        assert!(err(b().budget_answered_credit(-1.0)).contains("answered_credit"));
        // Budget settings that contradict each other: neither silently wins.
        let shared = RetryBudget::default;
        for conflicting in [
            b().budget(shared()).budget_ratio(0.5),
            b().budget(shared()).budget_floor_per_sec(5),
            b().budget(shared()).budget_answered_credit(1.0),
            b().no_budget().budget_answered_credit(1.0),
            b().no_budget().budget_ratio(0.5),
            b().budget_ratio(0.5).budget(shared()),
            b().budget_floor_per_sec(5).no_budget(),
            b().budget(shared()).no_budget(),
            b().no_budget().budget(shared()),
        ] {
            assert!(err(conflicting).contains("conflicting budget settings"));
        }
        assert!(
            b().budget_ratio(0.5)
                .budget_floor_per_sec(5)
                .build()
                .is_ok()
        );
        assert!(b().budget(shared()).budget(shared()).build().is_ok());
        assert!(b().no_budget().no_budget().build().is_ok());
    }

    #[test]
    fn defaults_and_shared_budget() {
        let layer = RetryLayer::default();
        assert_eq!(layer.config.max_attempts, 4);
        assert_eq!(layer.config.deadline, Some(DEFAULT_DEADLINE));
        for off in [
            RetryLayer::builder().no_deadline(),
            RetryLayer::builder().deadline(Duration::MAX),
            RetryLayer::builder().deadline(Duration::MAX).no_deadline(),
        ] {
            assert_eq!(off.build().unwrap().config.deadline, None);
        }
        // An attempt timeout longer than the default deadline says where the deadline came from.
        let e = err(RetryLayer::builder().attempt_timeout(Duration::from_secs(40)));
        assert!(e.contains("no_deadline()"), "{e}");
        assert!(
            RetryLayer::builder()
                .no_deadline()
                .attempt_timeout(Duration::from_secs(40))
                .build()
                .is_ok()
        );
        assert_eq!(layer.config.max_retry_after, Duration::from_secs(60));
        assert_eq!(
            layer.config.max_local_rejection_wait,
            Backoff::default().max()
        );
        // The backoff's maximum whatever the order of the settings, unless set.
        let constant = Backoff::constant(Duration::from_millis(30));
        let layer = RetryLayer::builder().backoff(constant).build().unwrap();
        assert_eq!(
            layer.config.max_local_rejection_wait,
            Duration::from_millis(30)
        );
        let layer = RetryLayer::builder()
            .max_local_rejection_wait(Duration::from_secs(2))
            .backoff(constant)
            .build()
            .unwrap();
        assert_eq!(
            layer.config.max_local_rejection_wait,
            Duration::from_secs(2)
        );
        assert_eq!(layer.config.max_replay_bytes, 64 * 1024);
        assert_eq!(layer.config.attempt_timeout, None);
        let timed = RetryLayer::builder().attempt_timeout(Duration::from_secs(1));
        assert_eq!(
            timed.clone().build().unwrap().config.attempt_timeout,
            Some(Duration::from_secs(1))
        );
        let untimed = timed.no_attempt_timeout().build().unwrap();
        assert_eq!(untimed.config.attempt_timeout, None);
        let named = RetryLayer::builder().name(String::from("payments")).build();
        assert_eq!(named.unwrap().name(), "payments");
        assert_eq!(layer.name(), "default");
        let budget = RetryBudget::default();
        let a = RetryLayer::builder()
            .budget(budget.clone())
            .build()
            .unwrap();
        let b = RetryLayer::builder().budget(budget).build().unwrap();
        a.budget().unwrap().deposit();
        assert_eq!(b.budget().unwrap().snapshot().requests, 1);
        assert!(
            RetryLayer::builder()
                .no_budget()
                .build()
                .unwrap()
                .budget()
                .is_none()
        );
    }

    #[test]
    fn seeded_layers_jitter_reproducibly() {
        let a = RetryLayer::builder().seed(9).build().unwrap();
        let b = RetryLayer::builder().seed(9).build().unwrap();
        for _ in 0..3 {
            assert_eq!(a.config.rng().next_u64(), b.config.rng().next_u64());
        }
        assert_ne!(a.config.rng().next_u64(), a.config.rng().next_u64());
    }
}
