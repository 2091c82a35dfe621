//! One endpoint of a failover set: its service prototype, its health and its counters.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use crate::{
    endpoint::{EndpointInfo, EndpointSnapshot, EndpointStatus, Target},
    observe::EndpointMetrics,
    outcomes::Outcomes,
    shared::{lock, try_lock},
};

/// Health bookkeeping that changes rarely, behind the entry's lock.
#[derive(Debug, Default)]
pub(crate) struct Slow {
    pub(crate) probe_passes: u32,
    pub(crate) probe_failures: u32,
    /// Ejections in a row (decays while the endpoint stays healthy).
    pub(crate) ejection_streak: u32,
    /// The time out of rotation of the last ejection of the streak.
    pub(crate) last_ejection: Duration,
    /// When the endpoint last became healthy, while it still is: the stable time the next
    /// ejection's decay counts (once; an ejection or a hold-out consumes it).
    pub(crate) recovered_at: Option<Instant>,
    /// The current ejection is a hold-out (see `Shared::hold_out`).
    pub(crate) held_out: bool,
}

/// At most this many idle clones of an endpoint's service are kept for the next requests (see
/// [`Entry::idle`]); one is in use per request being sent, so this covers that many callers
/// sending at once before a clone has to be made.
const MAX_IDLE_SERVICES: usize = 64;

/// One endpoint: its service prototype and its health.
pub(crate) struct Entry<S> {
    pub(crate) info: Arc<EndpointInfo>,
    /// `None` when URI rewriting is off.
    pub(crate) target: Option<Target>,
    pub(crate) service: S,
    /// Clones of `service` that sent a request and can be polled ready for the next, boxed so
    /// that a `Failover` holds a pointer and not the service itself.
    ///
    /// A request takes one and gives it back once its call is made, instead of cloning the
    /// prototype and dropping the clone: for hyper-util's client (304 bytes, five reference
    /// counts) that was a copy and ten atomic operations per request, and the client inline made
    /// every `Failover` clone, and the retry future holding one, 300 bytes larger. For a service
    /// whose clone is one reference count (reqwest's client) the two lock operations cost about
    /// what the clone did (BENCHMARKS.md has both). The lock is held for a push or a pop, and
    /// only tried: a request that finds it held by another thread does without. A clone polled
    /// ready but never called is dropped rather than kept, so a readiness reservation it holds (a
    /// concurrency permit) is released.
    idle: Mutex<Vec<Box<S>>>,
    pub(crate) status: AtomicU8,
    pub(crate) in_flight: AtomicUsize,
    /// The failure run and recent failure rate of live traffic (passive ejection).
    pub(crate) outcomes: Outcomes,
    pub(crate) ejected_until: AtomicU64,
    pub(crate) trial: AtomicBool,
    /// Woken when a trial is released without a status change (a cancelled trial), so that
    /// requests waiting for an endpoint look again.
    pub(crate) trial_released: Arc<Notify>,
    pub(crate) ejections: AtomicU64,
    pub(crate) slow: Mutex<Slow>,
    pub(crate) drained: Notify,
    pub(crate) metrics: EndpointMetrics,
}

impl<S> fmt::Debug for Entry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            idle: Mutex::default(),
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

    /// A clone of the endpoint's service to poll ready and call: an idle one, or a new one.
    ///
    /// The pool is only tried, never waited for: a request that finds it locked by another
    /// thread clones the prototype, as it would with no pool.
    pub(crate) fn take_service(&self) -> Box<S>
    where
        S: Clone,
    {
        let idle = try_lock(&self.idle).and_then(|mut idle| idle.pop());
        idle.unwrap_or_else(|| Box::new(self.service.clone()))
    }

    /// Keeps a clone whose call has been made for a later request (see [`Entry::idle`]); with
    /// the pool full or locked by another thread, the clone is dropped.
    pub(crate) fn give_back(&self, service: Box<S>) {
        if let Some(mut idle) = try_lock(&self.idle)
            && idle.len() < MAX_IDLE_SERVICES
        {
            idle.push(service);
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
