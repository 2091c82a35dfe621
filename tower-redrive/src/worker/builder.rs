//! [`RedriverBuilder`]: the worker's own settings, validated.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32},
    },
    time::Duration,
};

use tower_fault::{HttpClassifier, events::Publisher};

use crate::{
    ConfigError,
    entry::QueueStats,
    queue::RedriveQueue,
    record::Unrecorded,
    settings::{RedriveSettings, Stream},
    worker::{Redriver, Retention, WorkerShared},
};

/// The longest pause between rounds while the store fails, unless the poll interval is longer
/// (see [`RedriverBuilder::store_backoff`]): short enough that a store back from an outage is
/// used again within a minute, long enough that a broken one is not hammered (nor the log
/// filled).
pub const DEFAULT_STORE_BACKOFF: Duration = Duration::from_secs(60);

/// How many unread events a subscriber may hold; the newer ones it misses (counted by
/// `Subscription::missed`) while it is that far behind.
const EVENTS_CAPACITY: usize = 256;

/// Builds a [`Redriver`]: the settings only the worker reads. What it shares with the layer
/// (name, classifier, clock, schedule, seed) is in [`RedriveSettings`].
pub struct RedriverBuilder<S, C = HttpClassifier> {
    service: S,
    queue: Arc<dyn RedriveQueue>,
    settings: RedriveSettings<C>,
    worker_id: Option<String>,
    lease: Duration,
    batch: usize,
    max_rate: Option<f64>,
    poll_interval: Duration,
    janitor_interval: Duration,
    retention: Retention,
    depth_threshold: Option<u64>,
    store_backoff: Option<Duration>,
}

impl<S, C> fmt::Debug for RedriverBuilder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedriverBuilder")
            .field("queue", &self.queue)
            .field("settings", &self.settings)
            .field("worker_id", &self.worker_id)
            .field("lease", &self.lease)
            .field("batch", &self.batch)
            .field("max_rate", &self.max_rate)
            .field("poll_interval", &self.poll_interval)
            .field("janitor_interval", &self.janitor_interval)
            .field("retention", &self.retention)
            .field("depth_threshold", &self.depth_threshold)
            .field("store_backoff", &self.store_backoff)
            .finish_non_exhaustive()
    }
}

impl<S, C> RedriverBuilder<S, C> {
    pub(crate) fn new(
        queue: Arc<dyn RedriveQueue>,
        service: S,
        settings: RedriveSettings<C>,
    ) -> Self {
        Self {
            service,
            queue,
            settings,
            worker_id: None,
            lease: Duration::from_secs(300),
            batch: 32,
            max_rate: None,
            poll_interval: Duration::from_secs(1),
            janitor_interval: Duration::from_secs(600),
            retention: Retention::default(),
            depth_threshold: None,
            store_backoff: None,
        }
    }

    /// This worker's id, recorded as the lease owner (default: name, process id and a random
    /// suffix, so workers of one queue tell themselves apart in `redrive-admin`).
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// How long a claimed entry is reserved for this worker (default 5 minutes: a dead
    /// worker's entries wait at most that long for another worker, and a renewal the store
    /// misses leaves a second one before the lease runs out).
    ///
    /// While a round runs, the worker renews the leases of its batch every third of the lease
    /// ([`RedriveQueue::renew_lease`]), so a delivery may take longer than the lease. The lease
    /// bounds how long an entry stays reserved after its worker died (or cannot reach the
    /// store): another worker takes it over once it runs out.
    #[must_use]
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Entries claimed per round (default 32: one claim query serves many deliveries, and a
    /// worker that dies holds back at most 32 entries until their leases run out).
    #[must_use]
    pub const fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// At most this many deliveries per second, across clones of this worker (default: no cap,
    /// see [`no_max_rate`](Self::no_max_rate)): load levelling for an upstream that just
    /// recovered.
    #[must_use]
    pub const fn max_rate(mut self, per_second: f64) -> Self {
        self.max_rate = Some(per_second);
        self
    }

    /// No cap on the delivery rate (the default: deliveries are one at a time per worker, so
    /// one worker's rate is bounded by the upstream's latency).
    #[must_use]
    pub const fn no_max_rate(mut self) -> Self {
        self.max_rate = None;
        self
    }

    /// The longest pause between rounds when nothing is due (default 1 s: an entry another
    /// process queued or requeued waits at most that, for one claim query a second while
    /// idle); the worker wakes earlier when it knows an entry falls due.
    #[must_use]
    pub const fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How often [`run`](Redriver::run) runs the janitor (default 10 minutes: finished entries
    /// are kept for days, so a purge every few minutes keeps the queue's size within a few
    /// minutes' worth of its retention).
    #[must_use]
    pub const fn janitor_interval(mut self, interval: Duration) -> Self {
        self.janitor_interval = interval;
        self
    }

    /// How long finished entries are kept (default [`Retention::default`]).
    #[must_use]
    pub const fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Emits [`RedriveEvent::DepthAboveThreshold`](crate::RedriveEvent::DepthAboveThreshold)
    /// when the queue depth reaches `threshold` (and
    /// [`DepthBelowThreshold`](crate::RedriveEvent::DepthBelowThreshold) when it falls back).
    /// Default: no depth events (see [`no_depth_alert`](Self::no_depth_alert)).
    #[must_use]
    pub const fn depth_alert(mut self, threshold: u64) -> Self {
        self.depth_threshold = Some(threshold);
        self
    }

    /// No depth events (the default: what depth is alarming depends on the traffic; the
    /// `redrive_queue_depth` gauge is there either way).
    #[must_use]
    pub const fn no_depth_alert(mut self) -> Self {
        self.depth_threshold = None;
        self
    }

    /// The longest pause between rounds while the store fails (default
    /// [`DEFAULT_STORE_BACKOFF`], 1 minute, or the poll interval if that is longer).
    ///
    /// A round stops at the first store error (see [`Redriver::run_once`]); [`run`](Redriver::run)
    /// then waits the poll interval, doubled after every further failed round in a row, up to
    /// this. The first round that succeeds ends the back-off.
    #[must_use]
    pub const fn store_backoff(mut self, max: Duration) -> Self {
        self.store_backoff = Some(max);
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// A zero lease, batch, poll or janitor interval or retention, a lease under 1 ms, a rate
    /// that is not a positive number or whose interval overflows, or a store backoff shorter
    /// than the poll interval.
    pub fn build(self) -> Result<Redriver<S, C>, ConfigError> {
        self.check_durations()?;
        crate::metrics::describe();
        if self.batch == 0 {
            return Err(crate::error::config_error("batch must be at least 1"));
        }
        let store_backoff = self.checked_store_backoff()?;
        let rate_interval = self.checked_rate_interval()?;
        let parts = self.settings.into_parts(Stream::Worker);
        let worker_id = self.worker_id.unwrap_or_else(|| {
            let suffix = parts.scheduler.next_u64() as u32;
            format!("{}-{}-{suffix:08x}", parts.name, std::process::id())
        });
        Ok(Redriver::new(
            self.service,
            WorkerShared {
                name: parts.name,
                worker_id,
                queue: self.queue,
                classifier: parts.classifier,
                clock: parts.clock,
                scheduler: parts.scheduler,
                lease: self.lease,
                batch: self.batch,
                rate_interval,
                poll_interval: self.poll_interval,
                janitor_interval: self.janitor_interval,
                retention: self.retention,
                depth_threshold: self.depth_threshold,
                store_backoff,
                events: Publisher::new(EVENTS_CAPACITY),
                above_threshold: AtomicBool::new(false),
                failed_rounds: AtomicU32::new(0),
                unrecorded: Unrecorded::default(),
                next_slot: Mutex::new(None),
                next_janitor: Mutex::new(None),
                last_stats: Mutex::new(QueueStats::default()),
            },
        ))
    }

    /// Every duration is positive, and the lease is at least the queue's resolution.
    fn check_durations(&self) -> Result<(), ConfigError> {
        for (what, d) in [
            ("lease", self.lease),
            ("poll_interval", self.poll_interval),
            ("janitor_interval", self.janitor_interval),
            ("delivered retention", self.retention.delivered),
            ("dead-letter retention", self.retention.dead),
        ] {
            if d.is_zero() {
                return Err(crate::error::config_error(format!(
                    "{what} must be greater than zero"
                )));
            }
        }
        // Queue times are whole milliseconds: a shorter lease would end as it is taken (another
        // worker could claim the entry at once, and renewals would never extend it).
        if self.lease < Duration::from_millis(1) {
            return Err(crate::error::config_error(format!(
                "lease must be at least 1 ms (the queue's resolution), got {:?}",
                self.lease
            )));
        }
        Ok(())
    }

    /// The store backoff, given or the default; never shorter than the poll interval.
    fn checked_store_backoff(&self) -> Result<Duration, ConfigError> {
        match self.store_backoff {
            Some(max) if max < self.poll_interval => Err(crate::error::config_error(format!(
                "store_backoff ({max:?}) is shorter than poll_interval ({:?}): a failing store would be tried more often than a working one",
                self.poll_interval
            ))),
            Some(max) => Ok(max),
            None => Ok(DEFAULT_STORE_BACKOFF.max(self.poll_interval)),
        }
    }

    /// The interval between deliveries that `max_rate` sets, if any.
    fn checked_rate_interval(&self) -> Result<Option<Duration>, ConfigError> {
        let Some(r) = self.max_rate else {
            return Ok(None);
        };
        if !(r.is_finite() && r > 0.0) {
            return Err(crate::error::config_error(format!(
                "max_rate must be a positive number of deliveries per second, got {r}"
            )));
        }
        // `try_from`: a tiny rate (1e-30/s) is a valid float whose interval overflows.
        Duration::try_from_secs_f64(1.0 / r).map(Some).map_err(|_| {
            crate::error::config_error(format!(
                "max_rate {r} per second is too small: the interval between deliveries overflows"
            ))
        })
    }
}
