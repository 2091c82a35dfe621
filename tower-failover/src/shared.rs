//! The state shared by every clone of a failover set: endpoints, their health, events.

use std::{
    ops::Range,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    task::Waker,
    time::Duration,
};

use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tower_fault::{AttemptContext, BoxError, Class, EndpointId, SeededRng};

use tower_fault::time::saturating_after;

use crate::{
    config::{
        AllDown, Balance, EjectionConfig, InitialState, ProbeConfig, TierPolicy, ejection_time,
    },
    endpoint::{EndpointInfo, EndpointSnapshot, EndpointStatus, Target},
    events::{Cause, HealthEvent, HealthEvents},
    observe::{EndpointMetrics, SetMetrics},
    outcomes::Outcomes,
    probe::ProbeOutcome,
};

/// Tiers up to this size are picked from in one pass over a stack buffer.
pub(crate) const INLINE_PICK: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Readiness waiters kept at most (see [`Shared::register_waiter`]).
const MAX_WAITERS: usize = 256;

/// Health bookkeeping that changes rarely, behind the entry's lock.
#[derive(Debug, Default)]
struct Slow {
    probe_passes: u32,
    probe_failures: u32,
    /// Ejections in a row (decays while the endpoint stays healthy).
    ejection_streak: u32,
    /// When the endpoint last became healthy, while it still is: the stable time the next
    /// ejection's decay counts (once; an ejection or a hold-out consumes it).
    recovered_at: Option<Instant>,
    /// The current ejection is a hold-out (see [`Shared::hold_out`]).
    held_out: bool,
}

/// One endpoint: its service prototype and its health.
pub(crate) struct Entry<S> {
    pub(crate) info: Arc<EndpointInfo>,
    /// `None` when URI rewriting is off.
    pub(crate) target: Option<Target>,
    pub(crate) service: S,
    status: AtomicU8,
    pub(crate) in_flight: AtomicUsize,
    /// The failure run and recent failure rate of live traffic (passive ejection).
    outcomes: Outcomes,
    ejected_until: AtomicU64,
    pub(crate) trial: AtomicBool,
    /// Woken when a trial is released without a status change (a cancelled trial), so that
    /// requests waiting for an endpoint look again.
    trial_released: Arc<Notify>,
    pub(crate) ejections: AtomicU64,
    slow: Mutex<Slow>,
    pub(crate) drained: Notify,
    pub(crate) metrics: EndpointMetrics,
}

impl<S> std::fmt::Debug for Entry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("info", &self.info)
            .field("status", &self.status())
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S> Entry<S> {
    pub(crate) fn new(
        name: &Arc<str>,
        info: EndpointInfo,
        target: Option<Target>,
        service: S,
        status: EndpointStatus,
        trial_released: Arc<Notify>,
    ) -> Self {
        Self {
            metrics: EndpointMetrics::new(name, &info.name, status == EndpointStatus::Healthy),
            info: Arc::new(info),
            target,
            service,
            status: AtomicU8::new(status.to_u8()),
            in_flight: AtomicUsize::new(0),
            outcomes: Outcomes::default(),
            ejected_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            trial_released,
            ejections: AtomicU64::new(0),
            slow: Mutex::default(),
            drained: Notify::new(),
        }
    }

    #[inline]
    pub(crate) fn status(&self) -> EndpointStatus {
        EndpointStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Whether the endpoint was removed, read with `SeqCst` (see `CallGuard::try_begin`).
    pub(crate) fn removed_seqcst(&self) -> bool {
        self.status.load(Ordering::SeqCst) == EndpointStatus::Removed.to_u8()
    }

    /// Whether the endpoint is still in the ejection a trial was sent for (see
    /// `CallGuard::trial`): a trial's verdict applies to that ejection only.
    pub(crate) fn in_ejection(&self, ejection: u64) -> bool {
        self.status() == EndpointStatus::Ejected
            && self.ejections.load(Ordering::Acquire) == ejection
    }

    /// Frees the endpoint's trial slot and wakes the requests waiting for an endpoint.
    pub(crate) fn release_trial(&self) {
        self.trial.store(false, Ordering::Release);
        self.trial_released.notify_waiters();
    }

    #[inline]
    pub(crate) fn is_healthy(&self) -> bool {
        self.status.load(Ordering::Acquire) == EndpointStatus::Healthy.to_u8()
    }

    #[inline]
    pub(crate) fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self, ejected_for: Option<Duration>) -> EndpointSnapshot {
        let status = self.status();
        EndpointSnapshot {
            ejected_for,
            held_out: status == EndpointStatus::Ejected && lock(&self.slow).held_out,
            info: self.info.clone(),
            status,
            in_flight: self.load(),
            consecutive_failures: self.outcomes.run(),
            ejections: self.ejections.load(Ordering::Relaxed),
        }
    }
}

/// The endpoint list, sorted by tier; replaced wholesale on add/remove.
#[derive(Debug)]
pub(crate) struct Snapshot<S> {
    pub(crate) generation: u64,
    pub(crate) entries: Vec<Arc<Entry<S>>>,
    /// `entries[tiers[t].clone()]` is tier `t` (possibly empty).
    pub(crate) tiers: Vec<Range<usize>>,
}

impl<S> Snapshot<S> {
    pub(crate) fn new(generation: u64, mut entries: Vec<Arc<Entry<S>>>) -> Self {
        entries.sort_by_key(|e| e.info.tier);
        let num_tiers = entries.last().map_or(0, |e| e.info.tier + 1);
        let mut tiers = Vec::with_capacity(num_tiers);
        let mut start = 0;
        for t in 0..num_tiers {
            let end = start
                + entries[start..]
                    .iter()
                    .take_while(|e| e.info.tier == t)
                    .count();
            tiers.push(start..end);
            start = end;
        }
        Self {
            generation,
            entries,
            tiers,
        }
    }

    /// The first tier with a healthy endpoint.
    pub(crate) fn active_tier(&self) -> Option<usize> {
        self.tiers
            .iter()
            .position(|r| self.entries[r.clone()].iter().any(|e| e.is_healthy()))
    }
}

/// Which endpoints a pick may choose from.
#[derive(Debug, Clone)]
pub(crate) struct Candidates {
    pub(crate) range: Range<usize>,
    /// Panic mode: every endpoint that is not removed counts as usable.
    pub(crate) panic: bool,
}

impl Candidates {
    #[inline]
    pub(crate) fn admits<S>(&self, e: &Entry<S>) -> bool {
        if self.panic {
            e.status() != EndpointStatus::Removed
        } else {
            e.is_healthy()
        }
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
    seed: u64,
    clones: AtomicU64,
    pub(crate) ejected: AtomicUsize,
    /// Serialises passive ejections, so two endpoints ejected at once cannot both pass the
    /// max-ejected check (rare: held only while one ejection is decided).
    ejection_gate: Mutex<()>,
    rng: Mutex<SeededRng>,
    waiters: Mutex<Vec<Waker>>,
    /// Woken by recoveries, ejection ends and released trials; shared with every entry.
    pub(crate) recovered: Arc<Notify>,
    pub(crate) prober_wake: Arc<Notify>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<HealthEvent>>>,
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

pub(crate) struct SharedConfig<C> {
    pub(crate) name: Arc<str>,
    pub(crate) classifier: C,
    pub(crate) balance: Balance,
    pub(crate) tier_policy: TierPolicy,
    pub(crate) all_down: AllDown,
    pub(crate) ejection: EjectionConfig,
    pub(crate) probe: Option<ProbeConfig>,
    pub(crate) initial: InitialState,
    pub(crate) rewrite: bool,
    pub(crate) seed: u64,
}

impl<S, C> Shared<S, C> {
    pub(crate) fn new(cfg: SharedConfig<C>) -> Self {
        Self {
            metrics: SetMetrics::new(&cfg.name),
            name: cfg.name,
            classifier: cfg.classifier,
            balance: cfg.balance,
            tier_policy: cfg.tier_policy,
            all_down: cfg.all_down,
            ejection: cfg.ejection,
            probe: cfg.probe,
            initial: cfg.initial,
            rewrite: cfg.rewrite,
            snapshot: RwLock::new(Arc::new(Snapshot::new(0, Vec::new()))),
            generation: AtomicU64::new(0),
            version: AtomicU64::new(0),
            rr: AtomicUsize::new(0),
            seed: cfg.seed,
            clones: AtomicU64::new(0),
            ejected: AtomicUsize::new(0),
            ejection_gate: Mutex::new(()),
            rng: Mutex::new(SeededRng::new(cfg.seed ^ 0xE1EC_7ED0)),
            waiters: Mutex::default(),
            recovered: Arc::new(Notify::new()),
            prober_wake: Arc::new(Notify::new()),
            subscribers: Mutex::default(),
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

    fn nanos_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
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

    // ----- selection -------------------------------------------------------------------------

    /// The endpoints a request may go to now, or `None` when none is usable.
    pub(crate) fn candidates(&self, snap: &Snapshot<S>, rng: &mut SeededRng) -> Option<Candidates> {
        match self.tier_policy {
            TierPolicy::Strict => {
                for range in &snap.tiers {
                    if snap.entries[range.clone()].iter().any(|e| e.is_healthy()) {
                        return Some(Candidates {
                            range: range.clone(),
                            panic: false,
                        });
                    }
                }
            }
            TierPolicy::Spill { overprovisioning } => {
                let healthy = |r: &Range<usize>| {
                    snap.entries[r.clone()]
                        .iter()
                        .filter(|e| e.is_healthy())
                        .count()
                };
                let mut total = 0.0;
                let mut left = 1.0;
                for r in &snap.tiers {
                    let share = tier_share(healthy(r), r.len(), overprovisioning, left);
                    total += share;
                    left -= share;
                }
                if total > 0.0 {
                    let mut draw = rng.next_f64() * total;
                    let mut left = 1.0;
                    let mut last = None;
                    for r in &snap.tiers {
                        let share = tier_share(healthy(r), r.len(), overprovisioning, left);
                        left -= share;
                        if share > 0.0 {
                            last = Some(r.clone());
                            if draw < share {
                                return Some(Candidates {
                                    range: r.clone(),
                                    panic: false,
                                });
                            }
                            draw -= share;
                        }
                    }
                    if let Some(range) = last {
                        return Some(Candidates {
                            range,
                            panic: false,
                        });
                    }
                }
            }
        }
        if self.all_down == AllDown::Panic && !snap.entries.is_empty() {
            return Some(Candidates {
                range: 0..snap.entries.len(),
                panic: true,
            });
        }
        None
    }

    /// The first and (if any) second choice among `cands` (indices into the snapshot).
    ///
    /// One pass over the candidate range into a stack buffer (no allocation) for ranges of up
    /// to [`INLINE_PICK`] endpoints; larger tiers count first and then walk to the chosen ones.
    pub(crate) fn pick(
        &self,
        snap: &Snapshot<S>,
        cands: &Candidates,
        rng: &mut SeededRng,
    ) -> Option<(usize, Option<usize>)> {
        let slice = &snap.entries[cands.range.clone()];
        let base = cands.range.start;
        let mut buf = [0u32; INLINE_PICK];
        let (k, inline) = if slice.len() <= INLINE_PICK {
            let mut k = 0;
            for (i, e) in slice.iter().enumerate() {
                if cands.admits(e) {
                    buf[k] = i as u32;
                    k += 1;
                }
            }
            (k, true)
        } else {
            (slice.iter().filter(|e| cands.admits(e)).count(), false)
        };
        if k == 0 {
            return None;
        }
        // The `n`th admitted endpoint. A large tier is walked a second time, and a status may
        // have changed since it was counted: then the last admitted one before the walk ran out
        // stands in (or none), never an endpoint that was not admitted.
        let nth = |n: usize| -> Option<usize> {
            if inline {
                Some(base + buf[n] as usize)
            } else {
                let mut last = None;
                for (seen, (i, _)) in slice
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| cands.admits(e))
                    .enumerate()
                {
                    last = Some(base + i);
                    if seen == n {
                        break;
                    }
                }
                last
            }
        };
        match self.balance {
            Balance::P2c => {
                if k == 1 {
                    return nth(0).map(|a| (a, None));
                }
                let a = rng.below(k as u64) as usize;
                let mut b = rng.below(k as u64 - 1) as usize;
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b));
                match b.filter(|&b| b != a) {
                    Some(b) if snap.entries[b].load() < snap.entries[a].load() => {
                        Some((b, Some(a)))
                    }
                    b => Some((a, b)),
                }
            }
            Balance::RoundRobin => {
                let n = self.rr.fetch_add(1, Ordering::Relaxed) % k;
                let first = nth(n)?;
                let second = if k > 1 { nth((n + 1) % k) } else { None };
                Some((first, second.filter(|&s| s != first)))
            }
        }
    }

    /// A healthy endpoint this request has not tried yet, preferring the active tier, then the
    /// tiers after it, then those before it.
    pub(crate) fn untried(
        &self,
        snap: &Snapshot<S>,
        cands: Option<&Candidates>,
        tried: &dyn Fn(EndpointId) -> bool,
    ) -> Option<usize> {
        let admits = |e: &Entry<S>| cands.map_or_else(|| e.is_healthy(), |c| c.admits(e));
        let start = cands.map_or(0, |c| c.range.start);
        let n = snap.entries.len();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| admits(&snap.entries[i]) && !tried(snap.entries[i].info.id))
    }

    /// Claims the one trial request of an ejected endpoint whose ejection time is over, if any
    /// (only in or above the active tier: a trial never moves traffic to a standby).
    /// An endpoint this request already tried (`tried`) is not trialled with it.
    pub(crate) fn claim_trial(
        &self,
        snap: &Snapshot<S>,
        tried: Option<&AttemptContext>,
    ) -> Option<usize> {
        if self.ejected.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = self.nanos_since_epoch(Instant::now());
        let max_tier = snap.active_tier().unwrap_or(usize::MAX);
        snap.entries.iter().position(|e| {
            trial_candidate(e, max_tier, tried)
                && e.ejected_until.load(Ordering::Acquire) <= now
                && e.trial
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        })
    }

    /// When an endpoint might become usable again: the earliest end of an ejection, or the
    /// unhealthy probe interval.
    pub(crate) fn retry_hint(&self, snap: &Snapshot<S>) -> Option<Duration> {
        let now = Instant::now();
        let ejection = snap
            .entries
            .iter()
            .filter(|e| e.status() == EndpointStatus::Ejected)
            .map(|e| self.ejected_until(e).saturating_duration_since(now))
            .min();
        ejection.or_else(|| self.probe.as_ref().map(ProbeConfig::unhealthy_interval))
    }

    /// The earliest moment an ejected endpoint becomes eligible for a trial with this request:
    /// the endpoints [`claim_trial`](Self::claim_trial) would take (in or above the active
    /// tier, not tried by this request, no trial in flight). Counting others would make a
    /// waiting request wake for an endpoint it cannot take, at once and forever.
    pub(crate) fn next_trial_at(
        &self,
        snap: &Snapshot<S>,
        tried: Option<&AttemptContext>,
    ) -> Option<Instant> {
        let max_tier = snap.active_tier().unwrap_or(usize::MAX);
        snap.entries
            .iter()
            .filter(|e| trial_candidate(e, max_tier, tried) && !e.trial.load(Ordering::Acquire))
            .map(|e| self.ejected_until(e))
            .min()
    }

    // ----- waking ----------------------------------------------------------------------------

    /// Wakes `waker` on the next health or membership change. The list is bounded: wakers of
    /// tasks that went away stay until a change wakes them all, so past [`MAX_WAITERS`] the
    /// list is woken and emptied now (a spurious wake-up: each live task polls again and
    /// registers anew; a task that is gone costs nothing more).
    pub(crate) fn register_waiter(&self, waker: &Waker) {
        let mut waiters = lock(&self.waiters);
        if waiters.iter().any(|w| w.will_wake(waker)) {
            return;
        }
        if waiters.len() >= MAX_WAITERS {
            let full = std::mem::take(&mut *waiters);
            waiters.push(waker.clone());
            drop(waiters);
            for w in full {
                w.wake();
            }
            return;
        }
        waiters.push(waker.clone());
    }

    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        lock(&self.waiters).len()
    }

    fn wake_all(&self) {
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for w in waiters {
            w.wake();
        }
    }

    /// Called after the endpoint list or any status changed.
    pub(crate) fn changed(&self, snap: &Snapshot<S>) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.metrics.active_tier(snap.active_tier());
        self.recovered.notify_waiters();
        self.wake_all();
    }

    // ----- events ----------------------------------------------------------------------------

    pub(crate) fn subscribe(&self) -> HealthEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = lock(&self.subscribers);
        for e in &self.load_snapshot().entries {
            let status = e.status();
            let _ = tx.send(HealthEvent {
                endpoint: e.info.clone(),
                from: status,
                to: status,
                cause: Cause::Snapshot,
            });
        }
        subs.push(tx);
        HealthEvents::new(rx)
    }

    pub(crate) fn emit(&self, event: HealthEvent) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|tx| tx.send(event.clone()).is_ok());
    }

    // ----- transitions -----------------------------------------------------------------------

    /// Moves `e` to `to` (the caller holds `e.slow`). Emits the event, logs, updates metrics.
    fn set_status(&self, e: &Entry<S>, slow: &mut Slow, to: EndpointStatus, cause: Cause) {
        let from = e.status();
        if from == to {
            return;
        }
        // `SeqCst`: a removal must be seen by a request that counted itself in flight before
        // checking (see `CallGuard::try_begin`); every status change is rare.
        e.status.store(to.to_u8(), Ordering::SeqCst);
        if from == EndpointStatus::Ejected {
            self.ejected.fetch_sub(1, Ordering::AcqRel);
        }
        if to == EndpointStatus::Ejected {
            self.ejected.fetch_add(1, Ordering::AcqRel);
        }
        if to == EndpointStatus::Healthy {
            slow.recovered_at = Some(Instant::now());
            slow.held_out = false;
            e.outcomes.end_run();
        }
        e.metrics.healthy(to == EndpointStatus::Healthy);
        let (name, endpoint) = (&*self.name, &*e.info.name);
        if to == EndpointStatus::Healthy {
            tracing::info!(failover = name, endpoint, %from, %to, cause = cause.as_str(), "endpoint healthy");
        } else if from == EndpointStatus::Healthy || to == EndpointStatus::Ejected {
            tracing::warn!(failover = name, endpoint, %from, %to, cause = cause.as_str(), "endpoint out of rotation");
        } else {
            tracing::info!(failover = name, endpoint, %from, %to, cause = cause.as_str(), "endpoint status changed");
        }
        self.emit(HealthEvent {
            endpoint: e.info.clone(),
            from,
            to,
            cause,
        });
        self.changed(&self.load_snapshot());
    }

    /// Consumes the stable time since the last recovery: each full decay period of it forgives
    /// one ejection of the streak. Time out of rotation is not stable, and a failed trial must
    /// not count the same healthy period again, so it counts once.
    fn forgive(&self, slow: &mut Slow, now: Instant) {
        let decay = self.ejection.decay;
        if let Some(recovered) = slow.recovered_at.take() {
            if !decay.is_zero() {
                let stable = now.saturating_duration_since(recovered).as_nanos() / decay.as_nanos();
                slow.ejection_streak = slow
                    .ejection_streak
                    .saturating_sub(stable.min(u128::from(u32::MAX)) as u32);
            }
        }
    }

    /// Takes `e` out of rotation for `d` from `now`, as a new ejection (a trial sent for an
    /// earlier one gets no verdict on this one). Counts it, emits the event.
    fn take_out(&self, e: &Entry<S>, slow: &mut Slow, now: Instant, d: Duration, cause: Cause) {
        e.ejected_until.store(
            self.nanos_since_epoch(saturating_after(now, d)),
            Ordering::Release,
        );
        e.ejections.fetch_add(1, Ordering::Relaxed);
        e.outcomes.end_run();
        e.metrics.ejected(&cause);
        if e.status() == EndpointStatus::Ejected {
            // Out already (a failed or refused trial): same status, a new end; still an event.
            self.emit(HealthEvent {
                endpoint: e.info.clone(),
                from: EndpointStatus::Ejected,
                to: EndpointStatus::Ejected,
                cause,
            });
            self.changed(&self.load_snapshot());
        } else {
            self.set_status(e, slow, EndpointStatus::Ejected, cause);
        }
    }

    /// Ejects `e` for a jittered time that grows with its ejection streak.
    fn eject(&self, e: &Entry<S>, slow: &mut Slow, cause: Cause) {
        let now = Instant::now();
        self.forgive(slow, now);
        slow.ejection_streak = slow.ejection_streak.saturating_add(1);
        slow.held_out = false;
        let cfg = &self.ejection;
        let d = ejection_time(
            cfg.base,
            cfg.max,
            slow.ejection_streak,
            &mut lock(&self.rng),
        );
        tracing::warn!(failover = &*self.name, endpoint = &*e.info.name, cause = cause.as_str(), ejection = ?d, streak = slow.ejection_streak, "endpoint ejected");
        self.take_out(e, slow, now, d, cause);
    }

    /// Holds `e` out of rotation for `d` on its own layer's word (see
    /// [`rejected_by_endpoint`](Self::rejected_by_endpoint)): its ejection streak stays as it
    /// is, so the backoff of real ejections does not grow on a breaker's verdict.
    fn hold_out(&self, e: &Entry<S>, slow: &mut Slow, d: Duration) {
        let now = Instant::now();
        self.forgive(slow, now);
        slow.held_out = true;
        tracing::warn!(failover = &*self.name, endpoint = &*e.info.name, hold = ?d, "endpoint held out: its own layer refuses requests");
        self.take_out(e, slow, now, d, Cause::HeldOut(d));
    }

    /// Whether passive ejection may take `e` out of rotation, or keep it out after a failed
    /// trial: the other endpoints out of rotation for any reason (ejected, held out, down by
    /// probes, not probed yet) must be fewer than
    /// [`max_ejected`](EjectionConfig::max_ejected) of the endpoints. A rare path (an ejection
    /// being decided): one pass over the snapshot.
    fn may_eject(&self, e: &Entry<S>) -> bool {
        let snap = self.load_snapshot();
        let (mut endpoints, mut out) = (0, 0);
        for other in &snap.entries {
            match other.status() {
                EndpointStatus::Removed => {}
                EndpointStatus::Healthy => endpoints += 1,
                _ => {
                    endpoints += 1;
                    if !std::ptr::eq(&**other, e) {
                        out += 1;
                    }
                }
            }
        }
        out < self.ejection.max_ejected(endpoints)
    }

    /// Passive ejection (a run of live failures, a failed trial) under the max-ejected guard:
    /// ejects `e` and returns `true`, or returns `false` when the guard refuses.
    fn eject_passively(&self, e: &Entry<S>, slow: &mut Slow, cause: Cause) -> bool {
        // Held while deciding and ejecting, so that two ejections at once cannot both pass.
        let _gate = lock(&self.ejection_gate);
        if !self.may_eject(e) {
            return false;
        }
        self.eject(e, slow, cause);
        true
    }

    /// Counts and logs an ejection the max-ejected guard refused.
    fn refused(&self, e: &Entry<S>, cause: &Cause) {
        e.metrics.ejection_refused();
        tracing::warn!(
            failover = &*self.name,
            endpoint = &*e.info.name,
            cause = cause.as_str(),
            max_ejected_fraction = self.ejection.max_ejected_fraction,
            "passive ejection refused: too many endpoints out of rotation already"
        );
    }

    /// Feeds the class of a finished request to passive detection. `trial` is the ejection
    /// (the endpoint's ejection count when it was claimed) a trial request was sent for: its
    /// verdict only applies to that ejection, not to a later one (a probe may have brought the
    /// endpoint back, and live failures ejected it again, while it was in flight).
    ///
    /// Live traffic feeds the endpoint's [`Outcomes`]: a transient failure extends its run, and
    /// the run ejects once it is a real streak for `eject_after` (see
    /// [`Streak::is_real`](crate::outcomes::Streak::is_real)) and the max-ejected guard
    /// allows. The success path is one compare-and-swap on the entry, no lock.
    pub(crate) fn record(&self, e: &Entry<S>, class: Class, trial: Option<u64>) {
        if class.is_local_rejection() {
            self.rejected_by_endpoint(e, class.retry_after(), trial);
            return;
        }
        if let Some(ejection) = trial {
            // A trial's verdict is about its ejection; it is not part of live traffic's runs.
            let mut slow = lock(&e.slow);
            if e.in_ejection(ejection) {
                if !class.is_transient() {
                    self.set_status(e, &mut slow, EndpointStatus::Healthy, Cause::TrialPassed);
                } else if !self.eject_passively(e, &mut slow, Cause::TrialFailed) {
                    // Keeping it out would leave too few endpoints in rotation: back it comes.
                    self.refused(e, &Cause::TrialFailed);
                    self.set_status(e, &mut slow, EndpointStatus::Healthy, Cause::MaxEjected);
                }
            }
            drop(slow);
            e.release_trial();
            return;
        }
        let min_run = self.ejection.consecutive_failures;
        if min_run == 0 {
            return;
        }
        if !class.is_transient() {
            e.outcomes.success();
            return;
        }
        let streak = e.outcomes.failure();
        if streak.run >= min_run && e.is_healthy() && streak.is_real(min_run) {
            let mut slow = lock(&e.slow);
            let cause = Cause::ConsecutiveFailures(streak.run);
            if e.is_healthy() && !self.eject_passively(e, &mut slow, cause.clone()) {
                // The run stays, so every further failure asks again (the guard may allow it
                // by then); the refusal is reported once per run, when the run qualifies.
                if streak.run == streak.required(min_run) {
                    self.refused(e, &cause);
                }
            }
        }
    }

    /// The endpoint's own layer (its circuit breaker) refused a request unsent. That layer
    /// already judged the failures behind its refusal, and the endpoint answered nothing, so the
    /// refusal is no failure of live traffic: it neither extends nor ends a run, and it is no
    /// trial verdict.
    ///
    /// When the layer says when to come back (`retry_after`), a healthy endpoint is held out of
    /// rotation until then (at most the maximum ejection time), since every request sent there
    /// meanwhile would be refused too; a refused trial holds it out again. It returns like an
    /// ejected endpoint (a trial request or a passing probe once the time is over). The
    /// max-ejected guard does not apply: the hold is the layer's verdict, not passive
    /// detection's. Without a hint, a healthy endpoint stays in rotation, and a refused trial
    /// keeps its endpoint out for the base ejection time (otherwise every next request would
    /// be a trial spent on a refusal).
    fn rejected_by_endpoint(
        &self,
        e: &Entry<S>,
        retry_after: Option<Duration>,
        trial: Option<u64>,
    ) {
        let hint = retry_after
            .filter(|d| !d.is_zero())
            .map(|d| d.min(self.ejection.max));
        let hold = match trial {
            Some(_) => Some(hint.unwrap_or(self.ejection.base)),
            None => hint,
        };
        let eligible = |e: &Entry<S>| match trial {
            Some(ejection) => e.in_ejection(ejection),
            None => e.is_healthy(),
        };
        if let Some(hold) = hold {
            if eligible(e) {
                let mut slow = lock(&e.slow);
                if eligible(e) {
                    self.hold_out(e, &mut slow, hold);
                }
            }
        }
        if trial.is_some() {
            e.release_trial();
        }
    }

    /// An endpoint's service failed `poll_ready`: it is broken (a closed buffer, a failed
    /// connection pool), so it is ejected at once, whatever the passive-ejection threshold;
    /// it comes back like any ejected endpoint.
    ///
    /// An endpoint that is already ejected is ejected again (for longer) only when this was its
    /// trial: in panic mode ejected endpoints are polled too, and re-ejecting them on every
    /// poll would bump the health version each time and make `poll_ready` wake itself forever.
    pub(crate) fn readiness_failed(&self, e: &Entry<S>, err: &BoxError, trial: Option<u64>) {
        let mut slow = lock(&e.slow);
        tracing::debug!(failover = &*self.name, endpoint = &*e.info.name, error = %err, "endpoint not ready");
        let eject = match e.status() {
            EndpointStatus::Healthy => true,
            EndpointStatus::Ejected => trial.is_some_and(|ejection| e.in_ejection(ejection)),
            _ => false,
        };
        if eject {
            self.eject(e, &mut slow, Cause::ReadinessFailed(err.to_string()));
        }
        drop(slow);
        if trial.is_some() {
            e.release_trial();
        }
    }

    /// Feeds one probe verdict through the hysteresis.
    pub(crate) fn on_probe(&self, e: &Entry<S>, outcome: ProbeOutcome) {
        let Some(cfg) = &self.probe else { return };
        let mut slow = lock(&e.slow);
        let status = e.status();
        match outcome {
            ProbeOutcome::Healthy => {
                slow.probe_passes = slow.probe_passes.saturating_add(1);
                slow.probe_failures = 0;
                let to_healthy = match status {
                    EndpointStatus::Unknown => true,
                    EndpointStatus::Unhealthy => slow.probe_passes >= cfg.healthy_threshold,
                    EndpointStatus::Ejected => Instant::now() >= self.ejected_until(e),
                    EndpointStatus::Healthy | EndpointStatus::Removed => false,
                };
                if to_healthy {
                    self.set_status(e, &mut slow, EndpointStatus::Healthy, Cause::ProbePassed);
                }
            }
            ProbeOutcome::Unhealthy(reason) => {
                slow.probe_failures = slow.probe_failures.saturating_add(1);
                slow.probe_passes = 0;
                tracing::debug!(failover = &*self.name, endpoint = &*e.info.name, %reason, failures = slow.probe_failures, "probe failed");
                let to_unhealthy = match status {
                    EndpointStatus::Unknown => true,
                    EndpointStatus::Healthy | EndpointStatus::Ejected => {
                        slow.probe_failures >= cfg.unhealthy_threshold
                    }
                    EndpointStatus::Unhealthy | EndpointStatus::Removed => false,
                };
                if to_unhealthy {
                    self.set_status(
                        e,
                        &mut slow,
                        EndpointStatus::Unhealthy,
                        Cause::ProbeFailed(reason.into_owned()),
                    );
                }
            }
        }
    }

    /// Marks `e` removed (new requests never pick it; in-flight ones finish).
    pub(crate) fn mark_removed(&self, e: &Entry<S>) {
        let mut slow = lock(&e.slow);
        self.set_status(e, &mut slow, EndpointStatus::Removed, Cause::Removed);
    }

    /// Announces a new endpoint.
    pub(crate) fn announce(&self, e: &Entry<S>) {
        let status = e.status();
        self.emit(HealthEvent {
            endpoint: e.info.clone(),
            from: EndpointStatus::Unknown,
            to: status,
            cause: Cause::Added,
        });
    }
}

/// Whether `e` could take a trial request from a request that tried `tried`: ejected, in or
/// above the active tier (`max_tier`; a trial never moves traffic to a standby), and not
/// already tried by that request. [`Shared::claim_trial`] and [`Shared::next_trial_at`] must
/// agree on it, or a waiting request wakes for endpoints it cannot take.
fn trial_candidate<S>(e: &Entry<S>, max_tier: usize, tried: Option<&AttemptContext>) -> bool {
    e.info.tier <= max_tier
        && e.status() == EndpointStatus::Ejected
        && !tried.is_some_and(|c| c.was_tried(e.info.id))
}

/// The share of traffic a tier takes under spill (before normalisation).
pub(crate) fn tier_share(healthy: usize, total: usize, overprovisioning: f64, left: f64) -> f64 {
    if total == 0 || left <= 0.0 {
        return 0.0;
    }
    (healthy as f64 / total as f64 * overprovisioning)
        .min(1.0)
        .min(left)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Wake, Waker},
    };

    use super::*;
    use crate::{AllDown, Balance, InitialState, TierPolicy};

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakers of tasks that went away do not pile up while health stays the same: the list is
    /// bounded, and the wakers it lets go are woken (their tasks, if alive, register again).
    #[test]
    fn the_readiness_waiters_list_is_bounded() {
        let shared = Shared::<(), tower_fault::HttpClassifier>::new(SharedConfig {
            name: "t".into(),
            classifier: tower_fault::HttpClassifier::default(),
            balance: Balance::default(),
            tier_policy: TierPolicy::default(),
            all_down: AllDown::default(),
            ejection: EjectionConfig::default(),
            probe: None,
            initial: InitialState::default(),
            rewrite: true,
            seed: 1,
        });
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        for _ in 0..10 * MAX_WAITERS {
            // One waker per task: `will_wake` tells them apart.
            let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
            shared.register_waiter(&waker);
            assert!(shared.waiter_count() <= MAX_WAITERS);
        }
        let mine = Waker::from(wakes.clone());
        shared.register_waiter(&mine);
        shared.register_waiter(&mine);
        assert!(shared.waiter_count() <= MAX_WAITERS);
        shared.wake_all();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "registered once, woken once"
        );
        assert_eq!(shared.waiter_count(), 0);
    }
}
