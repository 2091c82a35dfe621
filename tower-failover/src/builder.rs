//! [`FailoverBuilder`]: validated configuration of a [`Failover`].

use std::{collections::HashSet, fmt, sync::Arc, time::Duration};

use tower_fault::{HttpClassifier, SeededRng};

use crate::{
    Failover,
    config::{AllDown, Balance, EjectionConfig, InitialState, ProbeConfig, TierPolicy},
    endpoint::{Endpoint, EndpointInfo, EndpointStatus, Target},
    error::ConfigError,
    probe::Probe,
    prober,
    shared::{Entry, Shared, SharedConfig, Snapshot},
};

/// Builds a [`Failover`]; see [`Failover::builder`].
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
pub struct FailoverBuilder<S, C = HttpClassifier> {
    name: Arc<str>,
    tiers: Vec<Vec<Endpoint<S>>>,
    classifier: C,
    balance: Balance,
    tier_policy: TierPolicy,
    all_down: AllDown,
    ejection: EjectionConfig,
    probe: Option<Arc<dyn Probe>>,
    probe_cfg: ProbeConfig,
    initial: InitialState,
    seed: Option<u64>,
    rewrite: bool,
}

impl<S, C: fmt::Debug> fmt::Debug for FailoverBuilder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverBuilder")
            .field("name", &self.name)
            .field("tiers", &self.tiers)
            .field("classifier", &self.classifier)
            .field("balance", &self.balance)
            .field("tier_policy", &self.tier_policy)
            .field("all_down", &self.all_down)
            .field("ejection", &self.ejection)
            .field("probe", &self.probe.is_some())
            .field("probe_cfg", &self.probe_cfg)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

impl<S> FailoverBuilder<S> {
    pub(crate) fn new() -> Self {
        Self {
            name: Arc::from("failover"),
            tiers: Vec::new(),
            classifier: HttpClassifier::default(),
            balance: Balance::default(),
            tier_policy: TierPolicy::default(),
            all_down: AllDown::default(),
            ejection: EjectionConfig::default(),
            probe: None,
            probe_cfg: ProbeConfig::default(),
            initial: InitialState::default(),
            seed: None,
            rewrite: true,
        }
    }
}

impl<S, C> FailoverBuilder<S, C> {
    /// The instance name in metrics and logs (default `failover`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds the next priority tier: the first call declares the primaries, later calls standbys.
    #[must_use]
    pub fn tier(mut self, endpoints: impl IntoIterator<Item = Endpoint<S>>) -> Self {
        self.tiers.push(endpoints.into_iter().collect());
        self
    }

    /// The classifier of outcomes for passive ejection (default [`HttpClassifier`]).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> FailoverBuilder<S, C2> {
        FailoverBuilder {
            name: self.name,
            tiers: self.tiers,
            classifier,
            balance: self.balance,
            tier_policy: self.tier_policy,
            all_down: self.all_down,
            ejection: self.ejection,
            probe: self.probe,
            probe_cfg: self.probe_cfg,
            initial: self.initial,
            seed: self.seed,
            rewrite: self.rewrite,
        }
    }

    /// How traffic is spread inside a tier (default p2c).
    #[must_use]
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Envoy-style spill over tiers with this overprovisioning factor (Envoy uses 1.4) instead
    /// of strict priority.
    #[must_use]
    pub fn spill(mut self, overprovisioning: f64) -> Self {
        self.tier_policy = TierPolicy::Spill { overprovisioning };
        self
    }

    /// What happens when no endpoint is usable (default [`AllDown::FailFast`]).
    #[must_use]
    pub fn when_all_down(mut self, policy: AllDown) -> Self {
        self.all_down = policy;
        self
    }

    /// Enables active health checks with this probe.
    #[must_use]
    pub fn probe(mut self, probe: impl Probe) -> Self {
        self.probe = Some(Arc::new(probe));
        self
    }

    /// Time between probes of a healthy endpoint (default 5 s); also of an unhealthy one
    /// unless [`unhealthy_interval`](Self::unhealthy_interval) is set.
    #[must_use]
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_cfg.interval = interval;
        self
    }

    /// Time between probes of an endpoint that is not healthy (default: the probe interval).
    #[must_use]
    pub fn unhealthy_interval(mut self, interval: Duration) -> Self {
        self.probe_cfg.unhealthy_interval = Some(interval);
        self
    }

    /// Random extra delay added to every probe interval, and the spread of the first probes
    /// (default 500 ms).
    #[must_use]
    pub fn probe_jitter(mut self, jitter: Duration) -> Self {
        self.probe_cfg.jitter = jitter;
        self
    }

    /// Probe timeout (default 1 s); a timed-out probe is a failed probe.
    #[must_use]
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_cfg.timeout = timeout;
        self
    }

    /// Hysteresis: `healthy` passes in a row bring an unhealthy endpoint back (default 2),
    /// `unhealthy` failures in a row take a healthy one down (default 3).
    #[must_use]
    pub fn thresholds(mut self, healthy: u32, unhealthy: u32) -> Self {
        self.probe_cfg.healthy_threshold = healthy;
        self.probe_cfg.unhealthy_threshold = unhealthy;
        self
    }

    /// At most this many probes run at once (default 8).
    #[must_use]
    pub fn max_concurrent_probes(mut self, n: usize) -> Self {
        self.probe_cfg.max_concurrency = n;
        self
    }

    /// The status endpoints start in (default [`InitialState::AssumeHealthy`]).
    #[must_use]
    pub fn initial_state(mut self, initial: InitialState) -> Self {
        self.initial = initial;
        self
    }

    /// Passive ejection on a streak of `Transient` outcomes of live traffic at least this long
    /// (default 5; 0 disables passive ejection, while an endpoint's own breaker still holds it
    /// out, see [`Cause::HeldOut`](crate::Cause::HeldOut)).
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
        self.ejection.consecutive_failures = consecutive_failures;
        self
    }

    /// The largest fraction of the endpoints (of every tier) that passive ejection keeps out of
    /// rotation at once, like Envoy's `max_ejection_percent` (default 0.5; in `(0, 1]`, 1 turns
    /// the guard off). It may always eject one endpoint.
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
        self.ejection.max_ejected_fraction = fraction;
        self
    }

    /// Ejection time: `base × 2^(n-1)` for the `n`th ejection in a row, capped at `max`,
    /// jittered down by up to half (defaults 10 s and 300 s).
    #[must_use]
    pub fn ejection_time(mut self, base: Duration, max: Duration) -> Self {
        self.ejection.base = base;
        self.ejection.max = max;
        self
    }

    /// Each full `period` an endpoint stays healthy forgives one ejection of its streak
    /// (default 60 s; `Duration::MAX` never forgives, zero is a `build()` error). Only time
    /// spent healthy counts, once: an endpoint that stays dead backs off to the maximum.
    #[must_use]
    pub fn ejection_decay(mut self, period: Duration) -> Self {
        self.ejection.decay = period;
        self
    }

    /// Whether requests are rewritten to the chosen endpoint's scheme, authority and path
    /// prefix (default `true`, so one client serves every endpoint). Turn it off when each
    /// endpoint's service is already bound to its upstream (a per-endpoint connection or
    /// channel); base URIs are then used only by probes.
    #[must_use]
    pub fn rewrite_uris(mut self, rewrite: bool) -> Self {
        self.rewrite = rewrite;
        self
    }

    /// Seeds the jitter and sampling generators (deterministic tests).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(crate::error::config_error(m));
        if self.tiers.is_empty() {
            return err("no tiers: call `.tier([...])` at least once".into());
        }
        if let Some(t) = self.tiers.iter().position(Vec::is_empty) {
            return err(format!("tier {t} has no endpoints"));
        }
        let mut names = HashSet::new();
        for e in self.tiers.iter().flatten() {
            if e.name.is_empty() {
                return err("an endpoint has an empty name".into());
            }
            if !names.insert(e.name.clone()) {
                return err(format!("endpoint name `{}` is used twice", e.name));
            }
        }
        if let TierPolicy::Spill { overprovisioning } = self.tier_policy {
            if !(overprovisioning.is_finite() && overprovisioning >= 1.0) {
                return err(format!(
                    "spill overprovisioning factor must be a finite number >= 1.0, got {overprovisioning}"
                ));
            }
        }
        if let AllDown::Wait(d) = self.all_down {
            if d.is_zero() {
                return err(
                    "AllDown::Wait needs a non-zero duration (use FailFast to not wait)".into(),
                );
            }
        }
        // Checked even with passive ejection off (`eject_after(0)`): a failed readiness still
        // ejects, for these times.
        let ej = &self.ejection;
        if ej.base.is_zero() {
            return err("ejection base time must be non-zero".into());
        }
        if ej.base > ej.max {
            return err(format!(
                "ejection base time {:?} is longer than its maximum {:?}",
                ej.base, ej.max
            ));
        }
        if !(ej.max_ejected_fraction > 0.0 && ej.max_ejected_fraction <= 1.0) {
            return err(format!(
                "max_ejected_fraction must be in (0, 1] (1 turns the guard off; eject_after(0) turns passive ejection off), got {}",
                ej.max_ejected_fraction
            ));
        }
        if ej.decay.is_zero() {
            return err(
                "ejection decay period must be non-zero (Duration::MAX never forgives an ejection)"
                    .into(),
            );
        }
        let p = &self.probe_cfg;
        if self.probe.is_some() {
            if p.interval.is_zero() || p.unhealthy_interval().is_zero() {
                return err("probe intervals must be non-zero".into());
            }
            if p.timeout.is_zero() {
                return err("probe timeout must be non-zero".into());
            }
            if p.healthy_threshold == 0 || p.unhealthy_threshold == 0 {
                return err("probe thresholds must be at least 1".into());
            }
            if p.max_concurrency == 0 {
                return err("max_concurrent_probes must be at least 1".into());
            }
        } else if self.initial == InitialState::ProbeFirst {
            return err("InitialState::ProbeFirst needs a probe (`.probe(...)`): without one no endpoint would ever become healthy".into());
        }
        Ok(())
    }

    /// Validates the configuration and starts the failover set.
    ///
    /// With a probe configured this spawns the background probe task, so it must be called
    /// from inside a tokio runtime (the task needs the `time` driver); otherwise it returns an
    /// error saying so.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for nonsense: no tiers, an empty tier, duplicate or empty names, an
    /// unparsable or relative base URI, zero intervals or thresholds, a base ejection time
    /// above its maximum, an overprovisioning factor below 1, a max-ejected fraction outside
    /// `(0, 1]`, probe-first without a probe, or no runtime to run probes on.
    pub fn build(self) -> Result<Failover<S, C>, ConfigError>
    where
        S: Send + Sync + 'static,
        C: Send + Sync + 'static,
    {
        self.validate()?;
        let runtime = match &self.probe {
            Some(_) => Some(tokio::runtime::Handle::try_current().map_err(|_| {
                crate::error::config_error("build() must be called inside a tokio runtime when a probe is configured (the probe task is spawned on it)")
            })?),
            None => None,
        };
        let seed = self
            .seed
            .unwrap_or_else(|| SeededRng::from_entropy().next_u64());
        crate::metrics::describe();
        let shared = Arc::new(Shared::new(SharedConfig {
            name: self.name.clone(),
            classifier: self.classifier,
            balance: self.balance,
            tier_policy: self.tier_policy,
            all_down: self.all_down,
            ejection: self.ejection,
            probe: self.probe.as_ref().map(|_| self.probe_cfg.clone()),
            initial: self.initial,
            rewrite: self.rewrite,
            seed,
        }));
        let mut entries = Vec::new();
        for (tier, endpoints) in self.tiers.into_iter().enumerate() {
            for e in endpoints {
                entries.push(Arc::new(new_entry(&shared, tier, e)?));
            }
        }
        let snap = Snapshot::new(1, entries);
        for e in &snap.entries {
            shared.announce(e);
        }
        shared.changed(&snap);
        *shared
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(snap);
        shared
            .generation
            .store(1, std::sync::atomic::Ordering::Release);
        if let (Some(probe), Some(rt)) = (self.probe, runtime) {
            prober::spawn(&shared, probe, &rt, seed);
        }
        Ok(Failover::from_shared(shared))
    }
}

/// Validates one endpoint and makes its entry.
pub(crate) fn new_entry<S, C>(
    shared: &Shared<S, C>,
    tier: usize,
    e: Endpoint<S>,
) -> Result<Entry<S>, ConfigError> {
    let target = Target::from_base(&e.name, &e.base)?;
    let base_uri = e.base.map_err(crate::error::config_error)?;
    let info = EndpointInfo {
        id: shared.next_id(),
        name: e.name,
        tier,
        base_uri,
    };
    let status = match shared.initial {
        InitialState::AssumeHealthy => EndpointStatus::Healthy,
        InitialState::ProbeFirst => EndpointStatus::Unknown,
    };
    let target = shared.rewrite.then_some(target);
    Ok(Entry::new(
        &shared.name,
        info,
        target,
        e.service,
        status,
        Arc::clone(&shared.recovered),
    ))
}
