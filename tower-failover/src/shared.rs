//! The state shared by every clone of a failover set, and what every other part of it reads:
//! the endpoint list, the settings, the generators, the change counter.
//!
//! What the set does with that state lives beside it: `pick` (selection), `trial` (trial
//! requests), `passive` (what outcomes say about an endpoint), `ejection` (taking endpoints out
//! of rotation), `health` (status transitions and probes), `events` (subscriptions),
//! `waiters` (readiness wake-ups).

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock, TryLockError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};
use tower_fault::{EndpointId, SeededRng, events::Publisher};

use crate::{
    config::{AllDown, Balance, EjectionConfig, InitialState, ProbeConfig, TierPolicy},
    endpoint::{Checked, EndpointInfo, EndpointSnapshot, EndpointStatus},
    entry::Entry,
    events::HealthEvent,
    observe::SetMetrics,
    settings::Settings,
    snapshot::Snapshot,
    waiters::Waiters,
};

/// Locks `m`, going on past a lock another holder poisoned by panicking.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lock if no one holds it (poisoned or not), `None` if another thread does.
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Everything every clone of one failover set shares.
pub(crate) struct Shared<S, C> {
    pub(crate) name: Arc<str>,
    pub(crate) classifier: C,
    pub(crate) balance: Balance,
    pub(crate) tier_policy: TierPolicy,
    pub(crate) all_down: AllDown,
    pub(crate) ejection: EjectionConfig,
    pub(crate) probe: Option<ProbeConfig>,
    pub(crate) initial: InitialState,
    pub(crate) rewrite: bool,
    pub(crate) snapshot: RwLock<Arc<Snapshot<S>>>,
    pub(crate) generation: AtomicU64,
    /// Bumped on every status or membership change (lost-wakeup check in `poll_ready`).
    pub(crate) version: AtomicU64,
    pub(crate) rr: AtomicUsize,
    pub(crate) seed: u64,
    clones: AtomicU64,
    pub(crate) ejected: AtomicUsize,
    /// Serialises passive ejections, so two endpoints ejected at once cannot both pass the
    /// max-ejected check (rare: held only while one ejection is decided).
    pub(crate) ejection_gate: Mutex<()>,
    pub(crate) rng: Mutex<SeededRng>,
    pub(crate) waiters: Waiters,
    /// Woken by recoveries, ejection ends and released trials; shared with every entry.
    pub(crate) recovered: Arc<Notify>,
    pub(crate) prober_wake: Arc<Notify>,
    pub(crate) events: Publisher<HealthEvent>,
    metrics: SetMetrics,
    next_id: AtomicU64,
    epoch: Instant,
}

impl<S, C> std::fmt::Debug for Shared<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("balance", &self.balance)
            .field("tier_policy", &self.tier_policy)
            .field("all_down", &self.all_down)
            .finish_non_exhaustive()
    }
}

impl<S, C> Drop for Shared<S, C> {
    fn drop(&mut self) {
        // Wakes the probe task so it notices, at once, that the set is gone.
        self.prober_wake.notify_one();
    }
}

impl<S, C> Shared<S, C> {
    /// The state of a new set with these settings (the probe itself is the probe task's) and
    /// this seed; no endpoint yet.
    pub(crate) fn new(cfg: Settings<C>, seed: u64) -> Self {
        Self {
            metrics: SetMetrics::new(&cfg.name),
            probe: cfg.probe.is_some().then_some(cfg.probe_cfg),
            name: cfg.name,
            classifier: cfg.classifier,
            balance: cfg.balance,
            tier_policy: cfg.tier_policy,
            all_down: cfg.all_down,
            ejection: cfg.ejection,
            initial: cfg.initial,
            rewrite: cfg.rewrite,
            snapshot: RwLock::new(Arc::new(Snapshot::new(0, Vec::new()))),
            generation: AtomicU64::new(0),
            version: AtomicU64::new(0),
            rr: AtomicUsize::new(0),
            seed,
            clones: AtomicU64::new(0),
            ejected: AtomicUsize::new(0),
            ejection_gate: Mutex::new(()),
            rng: Mutex::new(SeededRng::new(seed ^ 0xE1EC_7ED0)),
            waiters: Waiters::default(),
            recovered: Arc::new(Notify::new()),
            prober_wake: Arc::new(Notify::new()),
            events: Publisher::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A generator for a new clone of the service (each clone draws its own sequence).
    pub(crate) fn clone_rng(&self) -> SeededRng {
        let n = self.clones.fetch_add(1, Ordering::Relaxed);
        SeededRng::new(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn load_snapshot(&self) -> Arc<Snapshot<S>> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn next_id(&self) -> EndpointId {
        EndpointId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn nanos_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    /// The entry of a checked endpoint joining the set in `tier`: a new id, the initial status,
    /// its metric handles.
    pub(crate) fn new_entry(&self, tier: usize, e: Checked<S>) -> Entry<S> {
        let info = EndpointInfo {
            id: self.next_id(),
            name: e.name,
            tier,
            base_uri: e.base_uri,
        };
        let status = match self.initial {
            InitialState::AssumeHealthy => EndpointStatus::Healthy,
            InitialState::ProbeFirst => EndpointStatus::Unknown,
        };
        let target = self.rewrite.then_some(e.target);
        Entry::new(
            &self.name,
            info,
            target,
            e.service,
            status,
            Arc::clone(&self.recovered),
        )
    }

    /// A view of one endpoint.
    pub(crate) fn view(&self, e: &Entry<S>) -> EndpointSnapshot {
        let ejected_for = (e.status() == EndpointStatus::Ejected).then(|| {
            self.ejected_until(e)
                .saturating_duration_since(Instant::now())
        });
        e.snapshot(ejected_for)
    }

    pub(crate) fn ejected_until(&self, e: &Entry<S>) -> Instant {
        self.epoch + Duration::from_nanos(e.ejected_until.load(Ordering::Acquire))
    }

    /// Called after the endpoint list or any status changed.
    pub(crate) fn changed(&self, snap: &Snapshot<S>) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.metrics.active_tier(snap.active_tier());
        self.recovered.notify_waiters();
        self.waiters.wake_all();
    }
}
