//! [`FailoverBuilder`]: the one builder of a failover set's settings, for a [`Failover`] over
//! services of its own per endpoint and for a [`FailoverLayer`](crate::FailoverLayer).

use std::{fmt, sync::Arc, time::Duration};

use tower_fault::{
    HttpClassifier,
    backoff::{Backoff, Jitter},
};

use crate::{
    Failover,
    config::{AllDown, Balance, InitialState, TierPolicy},
    endpoint::Endpoint,
    error::ConfigError,
    probe::Probe,
    settings::{Settings, check_tiers},
};

/// Builds a failover set: its tiers of endpoints and every setting.
///
/// One builder for both ways of making a set; `E` is what a tier holds:
///
/// * [`Endpoint<S>`] — a name, a base URI and the service that reaches it — from
///   [`Failover::builder`], whose [`build`](FailoverBuilder::build) gives a [`Failover`];
/// * [`Upstream`](crate::Upstream) — a name and a base URI — from
///   [`FailoverLayer::builder`](crate::FailoverLayer::builder) (this type is then
///   [`FailoverLayerBuilder`](crate::FailoverLayerBuilder)), whose build gives a
///   [`FailoverLayer`](crate::FailoverLayer) that sends every endpoint's requests through the
///   client it wraps.
///
/// Every other setting is the same for both. `build()` checks them all and returns a
/// [`ConfigError`] naming the setting at fault.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::service_fn;
/// use tower_failover::{AllDown, Endpoint, Failover, HttpProbe};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = service_fn(|_req: http::Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// });
/// let failover = Failover::builder()
///     .name("payments")
///     .tier([
///         Endpoint::new("eu-1", "http://10.0.0.7:8080", client.clone()),
///         Endpoint::new("eu-2", "http://10.0.0.8:8080", client.clone()),
///     ])
///     .tier([Endpoint::new("us-1", "http://10.1.0.7:8080", client.clone())])
///     .probe(HttpProbe::shallow(client, "/healthz"))
///     .probe_interval(Duration::from_secs(2))
///     .thresholds(2, 3)
///     .when_all_down(AllDown::Wait(Duration::from_secs(1)))
///     .build()?; // inside a tokio runtime: the probe task is spawned here
/// # let _ = failover; Ok(()) }
/// ```
pub struct FailoverBuilder<E, C = HttpClassifier> {
    pub(crate) tiers: Vec<Vec<E>>,
    pub(crate) settings: Settings<C>,
}

impl<E: fmt::Debug, C: fmt::Debug> fmt::Debug for FailoverBuilder<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("FailoverBuilder")
            .field("name", &s.name)
            .field("tiers", &self.tiers)
            .field("classifier", &s.classifier)
            .field("balance", &s.balance)
            .field("tier_policy", &s.tier_policy)
            .field("all_down", &s.all_down)
            .field("ejection", &s.ejection)
            .field("probe", &s.probe.is_some())
            .field("probe_cfg", &s.probe_cfg)
            .field("initial", &s.initial)
            .finish_non_exhaustive()
    }
}

impl<E> FailoverBuilder<E> {
    pub(crate) fn new() -> Self {
        Self {
            tiers: Vec::new(),
            settings: Settings::new(),
        }
    }
}

impl<E, C> FailoverBuilder<E, C> {
    /// The instance name (default `"default"`): the `name` label of every metric and a field
    /// of every log line of this set. An empty name is a `build()` error.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// The classifier of outcomes for passive ejection (default [`HttpClassifier`], the one
    /// every layer of the suite reads).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> FailoverBuilder<E, C2> {
        FailoverBuilder {
            tiers: self.tiers,
            settings: self.settings.with_classifier(classifier),
        }
    }

    /// How traffic is spread inside a tier (default [`Balance::P2c`]: two random endpoints, the
    /// one with fewer requests in flight, so a slow endpoint gets less without a global scan).
    #[must_use]
    pub fn balance(mut self, balance: Balance) -> Self {
        self.settings.balance = balance;
        self
    }

    /// Envoy-style spill over tiers with this overprovisioning factor (Envoy uses 1.4) instead
    /// of strict priority (the default: a standby takes traffic only when no primary is
    /// healthy). A factor below 1 is a `build()` error.
    #[must_use]
    pub fn spill(mut self, overprovisioning: f64) -> Self {
        self.settings.tier_policy = TierPolicy::Spill { overprovisioning };
        self
    }

    /// What happens when no endpoint is usable (default [`AllDown::FailFast`]: the call fails
    /// at once with a not-processed rejection an outer retry can wait on, so nothing queues up
    /// behind an outage).
    #[must_use]
    pub fn when_all_down(mut self, policy: AllDown) -> Self {
        self.settings.all_down = policy;
        self
    }

    /// Enables active health checks with this probe (none by default: health then comes from
    /// live traffic alone).
    #[must_use]
    pub fn probe(mut self, probe: impl Probe) -> Self {
        self.settings.probe = Some(Arc::new(probe));
        self
    }

    /// Time between probes of a healthy endpoint (default 5 s: a dead endpoint is found within
    /// `unhealthy threshold × 5 s` at one request per endpoint every 5 s); also of an unhealthy
    /// one unless [`unhealthy_interval`](Self::unhealthy_interval) is set.
    #[must_use]
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.settings.probe_cfg.interval = interval;
        self
    }

    /// Time between probes of an endpoint that is not healthy (default: the probe interval).
    #[must_use]
    pub fn unhealthy_interval(mut self, interval: Duration) -> Self {
        self.settings.probe_cfg.unhealthy_interval = Some(interval);
        self
    }

    /// Random extra delay added to every probe interval, and the spread of the first probes
    /// (default 500 ms, so the instances of a fleet do not probe in step).
    #[must_use]
    pub fn probe_jitter(mut self, jitter: Duration) -> Self {
        self.settings.probe_cfg.jitter = jitter;
        self
    }

    /// Probe timeout (default 1 s: a health check answers fast or the endpoint is in trouble);
    /// a timed-out probe is a failed probe.
    #[must_use]
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.settings.probe_cfg.timeout = timeout;
        self
    }

    /// Hysteresis: `healthy` passes in a row bring an unhealthy endpoint back (default 2),
    /// `unhealthy` failures in a row take a healthy one down (default 3), so one lost probe
    /// neither takes an endpoint out nor brings a flapping one back.
    #[must_use]
    pub fn thresholds(mut self, healthy: u32, unhealthy: u32) -> Self {
        self.settings.probe_cfg.healthy_threshold = healthy;
        self.settings.probe_cfg.unhealthy_threshold = unhealthy;
        self
    }

    /// At most this many probes run at once (default 8, so a large set's probes do not burst).
    #[must_use]
    pub fn max_concurrent_probes(mut self, n: usize) -> Self {
        self.settings.probe_cfg.max_concurrency = n;
        self
    }

    /// The status endpoints start in (default [`InitialState::AssumeHealthy`]: traffic flows
    /// from the start, with or without a probe).
    #[must_use]
    pub fn initial_state(mut self, initial: InitialState) -> Self {
        self.settings.initial = initial;
        self
    }

    /// Passive ejection on a streak of `Transient` outcomes of live traffic at least this long
    /// (default 5; 0 is a `build()` error — [`no_passive_ejection`](Self::no_passive_ejection)
    /// turns it off).
    ///
    /// A run of failures ejects only when it is a real streak: at least `consecutive_failures`
    /// long, and long enough that an endpoint failing at random at its recent failure rate would
    /// produce it less than once in a million calls. The recent rate is that of the last 64 to
    /// 128 outcomes before the run, taken at the upper end of its 97.7 % confidence interval. An
    /// endpoint with a clean recent past is ejected at `consecutive_failures` (a dead endpoint is
    /// caught as fast as a fixed threshold would; at 5 % recent failures it takes about 7); one that
    /// fails a quarter of its calls at random needs a run of about 13, at 40 % about 20. Five
    /// failures in a row start about once in 1 400 calls at 25 % random failures, once in 160
    /// at 40 %: a fixed threshold would eject healthy endpoints over and over.
    ///
    /// An endpoint that fails often but not in long runs is not dead; judge its failure rate with
    /// a circuit breaker per endpoint (see [`FailoverBuilder::max_ejected_fraction`] and
    /// [`Cause::HeldOut`](crate::Cause::HeldOut) for how its verdict steers traffic).
    #[must_use]
    pub fn eject_after(mut self, consecutive_failures: u32) -> Self {
        self.settings.ejection.consecutive_failures = Some(consecutive_failures);
        self
    }

    /// Turns passive ejection off: live traffic's failures never eject an endpoint. A failed
    /// `poll_ready` still ejects (for the [ejection backoff](Self::ejection_backoff)'s times),
    /// and an endpoint's own breaker still holds it out (see
    /// [`Cause::HeldOut`](crate::Cause::HeldOut)).
    #[must_use]
    pub fn no_passive_ejection(mut self) -> Self {
        self.settings.ejection.consecutive_failures = None;
        self
    }

    /// The largest fraction of the endpoints (of every tier) that passive ejection keeps out of
    /// rotation at once, like Envoy's `max_ejection_percent` (default 0.5; in `(0, 1]`, 1 lets
    /// it take every endpoint out). It may always eject one endpoint.
    ///
    /// Live failures and failed trials eject an endpoint only while fewer than
    /// `⌊fraction × endpoints⌋` (at least 1) others are out of rotation for any reason; a
    /// refused ejection is counted in `failover_ejections_refused_total` and logged, a failed
    /// trial it refuses returns its endpoint to rotation ([`Cause::MaxEjected`](crate::Cause)).
    /// Active probes, a failed `poll_ready` and an endpoint's own breaker holding it out are
    /// not limited: they are verdicts, not inferences from live traffic.
    ///
    /// Why half: live-traffic evidence can be shared by every endpoint at once (a noisy period,
    /// a blip in the network in front of all of them, a bad request mix). Ejecting every
    /// endpoint on it turns a partial failure into "no healthy endpoint"; keeping half of them
    /// in rotation serves what can be served, and with one primary and one standby the primary
    /// can still fail over.
    ///
    /// The fraction counts the endpoints of every tier: of two primaries and one standby,
    /// passive ejection takes out one primary at most, and a second dead primary keeps its
    /// share of the traffic (a retry goes to an endpoint it has not tried) until an active probe
    /// or its own breaker takes it out. Give such sets probes or per-endpoint breakers, or a
    /// larger fraction.
    #[must_use]
    pub fn max_ejected_fraction(mut self, fraction: f64) -> Self {
        self.settings.ejection.max_ejected_fraction = fraction;
        self
    }

    /// How long ejections last: the `n`th ejection of an endpoint in a row is out of rotation
    /// for step `n` of this curve, jittered by [`ejection_jitter`](Self::ejection_jitter), then
    /// takes a trial request or a probe to come back (default
    /// `Backoff::exponential(10 s, 2.0, 5 min)`: an endpoint that recovers is tried again within
    /// seconds, one that stays dead backs off to a trial every few minutes). The
    /// suite's one backoff vocabulary ([`tower_fault::backoff`]), as retry's delays and a
    /// breaker's open periods.
    ///
    /// Its base is also how long a refused trial without a `Retry-After` hint keeps an endpoint
    /// out, and its maximum caps how long an endpoint's own breaker can hold it out. A zero base
    /// is a `build()` error.
    #[must_use]
    pub fn ejection_backoff(mut self, backoff: Backoff) -> Self {
        self.settings.ejection.backoff = backoff;
        self
    }

    /// How ejection times are randomised (default [`Jitter::Equal`]: up to half shorter, so
    /// endpoints ejected together come back spread out, and an ejection keeps at least half its
    /// length).
    #[must_use]
    pub fn ejection_jitter(mut self, jitter: Jitter) -> Self {
        self.settings.ejection.jitter = jitter;
        self
    }

    /// Each full `period` an endpoint stays healthy forgives one ejection of its streak
    /// (default 60 s; zero is a `build()` error). Only time spent healthy counts, once: an
    /// endpoint that stays dead backs off to the maximum.
    ///
    /// A setting of its own, not part of the [ejection backoff](Self::ejection_backoff): the
    /// curve says how long the `n`th ejection in a row lasts, decay says how stable time brings
    /// `n` back down, one step per period, where a breaker's open backoff starts over at the
    /// first success.
    #[must_use]
    pub fn ejection_decay(mut self, period: Duration) -> Self {
        self.settings.ejection.decay = period;
        self
    }

    /// Turns decay off: an endpoint's ejection streak never shrinks, each ejection is the next
    /// step of the ejection backoff.
    #[must_use]
    pub fn no_ejection_decay(mut self) -> Self {
        self.settings.ejection.decay = Duration::MAX;
        self
    }

    /// Seeds the jitter and sampling generators (deterministic tests).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }
}

impl<S, C> FailoverBuilder<Endpoint<S>, C> {
    /// Adds the next priority tier: the first call declares the primaries, later calls standbys.
    #[must_use]
    pub fn tier(mut self, endpoints: impl IntoIterator<Item = Endpoint<S>>) -> Self {
        self.tiers.push(endpoints.into_iter().collect());
        self
    }

    /// Whether requests are rewritten to the chosen endpoint's scheme, authority and path
    /// prefix (default `true`, so one client serves every endpoint). Turn it off when each
    /// endpoint's service is already bound to its upstream (a per-endpoint connection or
    /// channel); base URIs are then used only by probes.
    #[must_use]
    pub fn rewrite_uris(mut self, rewrite: bool) -> Self {
        self.settings.rewrite = rewrite;
        self
    }

    /// Validates the configuration and starts the failover set.
    ///
    /// With a probe configured this spawns the background probe task, so it must be called
    /// from inside a tokio runtime (the task needs the `time` driver); otherwise it returns an
    /// error saying so.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for nonsense: an empty name, no tiers, an empty tier, duplicate or
    /// empty endpoint names, an unparsable or relative base URI, zero intervals or thresholds,
    /// an ejection backoff whose base is zero or above its maximum, an overprovisioning factor
    /// below 1, a max-ejected fraction outside `(0, 1]`, probe-first without a probe, or no
    /// runtime to run probes on.
    pub fn build(self) -> Result<Failover<S, C>, ConfigError>
    where
        S: Send + Sync + 'static,
        C: Send + Sync + 'static,
    {
        self.settings.validate()?;
        let tiers = check_tiers(self.tiers)?;
        let runtime = self.settings.probe_runtime()?;
        Ok(self.settings.start(tiers, runtime.as_ref()))
    }
}
