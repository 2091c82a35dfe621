//! Every setting of a failover set but its endpoints (what both builders configure), their
//! checks, and starting a set from them.

use std::{
    collections::HashSet,
    sync::{Arc, PoisonError, atomic::Ordering},
};

use tokio::runtime::Handle;
use tower_fault::{HttpClassifier, SeededRng};

use crate::{
    Failover,
    config::{AllDown, Balance, EjectionConfig, InitialState, ProbeConfig, TierPolicy},
    endpoint::{Checked, Endpoint},
    error::{ConfigError, config_error, field_error},
    probe::Probe,
    prober,
    shared::Shared,
    snapshot::Snapshot,
};

/// The name of a set whose builder was given none: the suite's one default instance name, so
/// metrics and logs of an unnamed failover read `name="default"` like every other unnamed layer.
const DEFAULT_NAME: &str = "default";

/// The settings of a failover set, endpoints aside.
#[derive(Clone)]
pub(crate) struct Settings<C> {
    pub(crate) name: Arc<str>,
    pub(crate) classifier: C,
    pub(crate) balance: Balance,
    pub(crate) tier_policy: TierPolicy,
    pub(crate) all_down: AllDown,
    pub(crate) ejection: EjectionConfig,
    pub(crate) probe: Option<Arc<dyn Probe>>,
    pub(crate) probe_cfg: ProbeConfig,
    pub(crate) initial: InitialState,
    pub(crate) seed: Option<u64>,
    pub(crate) rewrite: bool,
}

impl Settings<HttpClassifier> {
    pub(crate) fn new() -> Self {
        Self {
            name: Arc::from(DEFAULT_NAME),
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

impl<C> Settings<C> {
    /// The same settings with another classifier.
    pub(crate) fn with_classifier<C2>(self, classifier: C2) -> Settings<C2> {
        Settings {
            name: self.name,
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

    /// Checks every setting and their combinations.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_routing()?;
        self.validate_ejection()?;
        self.validate_probe()
    }

    fn validate_routing(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(field_error("name", "must not be empty"));
        }
        if let TierPolicy::Spill { overprovisioning } = self.tier_policy
            && !(overprovisioning.is_finite() && overprovisioning >= 1.0)
        {
            return Err(field_error(
                "spill",
                format!(
                    "overprovisioning factor must be a finite number >= 1.0, got {overprovisioning}"
                ),
            ));
        }
        if self.all_down == AllDown::Wait(std::time::Duration::ZERO) {
            return Err(field_error(
                "when_all_down",
                "AllDown::Wait needs a non-zero duration (use FailFast to not wait)",
            ));
        }
        Ok(())
    }

    /// Checked with passive ejection off too: a failed readiness still ejects, for these times.
    fn validate_ejection(&self) -> Result<(), ConfigError> {
        let ej = &self.ejection;
        if ej.consecutive_failures == Some(0) {
            return Err(field_error(
                "eject_after",
                "must be at least 1 (no_passive_ejection() turns passive ejection off)",
            ));
        }
        ej.backoff.validate("failover", "ejection_backoff")?;
        if ej.backoff.base().is_zero() {
            return Err(field_error(
                "ejection_backoff",
                "base delay must be non-zero (an ejection must last)",
            ));
        }
        ej.jitter.validate("failover", "ejection_jitter")?;
        if !(ej.max_ejected_fraction > 0.0 && ej.max_ejected_fraction <= 1.0) {
            return Err(field_error(
                "max_ejected_fraction",
                format!(
                    "must be in (0, 1] (no_passive_ejection() turns passive ejection off), got {}",
                    ej.max_ejected_fraction
                ),
            ));
        }
        if ej.decay.is_zero() {
            return Err(field_error(
                "ejection_decay",
                "period must be non-zero (no_ejection_decay() never forgives an ejection)",
            ));
        }
        Ok(())
    }

    fn validate_probe(&self) -> Result<(), ConfigError> {
        let p = &self.probe_cfg;
        if self.probe.is_none() {
            if self.initial == InitialState::ProbeFirst {
                return Err(field_error(
                    "initial_state",
                    "InitialState::ProbeFirst needs a probe (`.probe(...)`): without one no endpoint would ever become healthy",
                ));
            }
            return Ok(());
        }
        if p.interval.is_zero() || p.unhealthy_interval().is_zero() {
            return Err(config_error("probe intervals must be non-zero"));
        }
        if p.timeout.is_zero() {
            return Err(field_error("probe_timeout", "must be non-zero"));
        }
        if p.healthy_threshold == 0 || p.unhealthy_threshold == 0 {
            return Err(field_error(
                "thresholds",
                "probe thresholds must be at least 1",
            ));
        }
        if p.max_concurrency == 0 {
            return Err(field_error("max_concurrent_probes", "must be at least 1"));
        }
        Ok(())
    }

    /// The runtime the probe task is spawned on: the current one, which a probe needs.
    pub(crate) fn probe_runtime(&self) -> Result<Option<Handle>, ConfigError> {
        match &self.probe {
            Some(_) => Handle::try_current().map(Some).map_err(|_| {
                config_error(
                    "build() must be called inside a tokio runtime when a probe is configured (the probe task is spawned on it)",
                )
            }),
            None => Ok(None),
        }
    }

    /// Starts a set over `tiers` (checked): its shared state, its endpoints' metric handles,
    /// and (with a probe) its probe task on `runtime`.
    pub(crate) fn start<S>(
        self,
        tiers: Vec<Vec<Checked<S>>>,
        runtime: Option<&Handle>,
    ) -> Failover<S, C>
    where
        S: Send + Sync + 'static,
        C: Send + Sync + 'static,
    {
        crate::metrics::describe();
        let seed = self
            .seed
            .unwrap_or_else(|| SeededRng::from_entropy().next_u64());
        let probe = self.probe.clone();
        let shared = Arc::new(Shared::new(self, seed));
        let entries = tiers
            .into_iter()
            .enumerate()
            .flat_map(|(tier, endpoints)| endpoints.into_iter().map(move |e| (tier, e)))
            .map(|(tier, e)| Arc::new(shared.new_entry(tier, e)))
            .collect();
        let snap = Snapshot::new(1, entries);
        for e in &snap.entries {
            shared.announce(e);
        }
        shared.changed(&snap);
        *shared
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snap);
        shared.generation.store(1, Ordering::Release);
        if let (Some(probe), Some(rt)) = (probe, runtime) {
            prober::spawn(&shared, probe, rt, seed);
        }
        Failover::from_shared(shared)
    }
}

/// Checks the tiers: at least one, none empty, every endpoint valid and named uniquely.
pub(crate) fn check_tiers<S>(
    tiers: Vec<Vec<Endpoint<S>>>,
) -> Result<Vec<Vec<Checked<S>>>, ConfigError> {
    if tiers.is_empty() {
        return Err(config_error("no tiers: call `.tier([...])` at least once"));
    }
    if let Some(t) = tiers.iter().position(Vec::is_empty) {
        return Err(config_error(format!("tier {t} has no endpoints")));
    }
    let mut names = HashSet::new();
    for e in tiers.iter().flatten() {
        if !e.name.is_empty() && !names.insert(e.name.clone()) {
            return Err(config_error(format!(
                "endpoint name `{}` is used twice",
                e.name
            )));
        }
    }
    tiers
        .into_iter()
        .map(|tier| tier.into_iter().map(Endpoint::check).collect())
        .collect()
}
