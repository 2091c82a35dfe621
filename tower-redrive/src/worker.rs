//! [`Redriver`]: the worker that delivers queued requests on a schedule.

use std::{
    fmt,
    future::{Future, poll_fn},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::sync::{broadcast, oneshot};
use tower_fault::{
    BoxError, Class, Classify, HttpClassifier, IDEMPOTENCY_KEY, IdempotencyKey, SeededRng,
};
use tower_service::Service;
use tracing::Instrument;

use crate::{
    ConfigError, QueueError,
    clock::{Clock, SystemClock, Timestamp},
    entry::{AttemptRecord, Claimed, EntryId, PurgeReport, QueueStats},
    events::RedriveEvent,
    layer::{describe, retry_after_at},
    lease::{self, HeldLeases},
    metrics as m,
    panic::{self, CatchPanic, DeliveryPanicked},
    queue::{Claim, RedriveQueue},
    schedule::Schedule,
};

/// How long finished entries are kept before the janitor deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Delivered entries (default 48 hours).
    pub delivered: Duration,
    /// Dead letters (default 30 days).
    pub dead: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            delivered: Duration::from_secs(48 * 3600),
            dead: Duration::from_secs(30 * 86_400),
        }
    }
}

/// What one claim round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunReport {
    /// Entries claimed.
    pub claimed: usize,
    /// Delivered.
    pub delivered: usize,
    /// Failed transiently and rescheduled.
    pub rescheduled: usize,
    /// Moved to the dead-letter queue.
    pub dead_lettered: usize,
    /// Outcomes discarded because the lease was lost, or not recorded because the store failed;
    /// also entries not delivered at all because another worker took them over while they waited
    /// their turn in the batch.
    pub unrecorded: usize,
}

struct WorkerShared<C> {
    name: Arc<str>,
    worker_id: String,
    queue: Arc<dyn RedriveQueue>,
    classifier: C,
    clock: Arc<dyn Clock>,
    schedule: Schedule,
    rng: Mutex<SeededRng>,
    lease: Duration,
    batch: usize,
    rate_interval: Option<Duration>,
    poll_interval: Duration,
    janitor_interval: Duration,
    retention: Retention,
    depth_threshold: Option<u64>,
    events: broadcast::Sender<RedriveEvent>,
    above_threshold: AtomicBool,
    next_slot: Mutex<Option<tokio::time::Instant>>,
    next_janitor: Mutex<Option<Timestamp>>,
    last_stats: Mutex<QueueStats>,
}

/// Delivers queued requests through a client stack, on a [`Schedule`].
///
/// Each round it claims due entries (at most one per ordering key, with a lease), sends each
/// through the service — normally the same stack the [`RedriveLayer`](crate::RedriveLayer) wraps,
/// without the layer — and records the outcome:
///
/// * success → delivered (kept for the janitor's retention);
/// * transient failure → rescheduled on the schedule (jittered; a longer `Retry-After` wins), or
///   dead-lettered with its last error once the schedule is over;
/// * permanent failure → dead-lettered with the reason;
/// * an entry whose request cannot be read back → dead-lettered as corrupt (`corrupt entry:
///   <why>`), never dropped;
/// * an entry whose attempt history is corrupt (not a JSON array) is delivered as usual: the
///   queue starts a fresh history when it records the outcome, its first record (class
///   `corrupt`) noting what the column held — recording never fails on it, so the entry is not
///   re-delivered forever.
///
/// Leases: the claimed entries are reserved for this worker, and their leases are renewed every
/// third of the [lease](RedriverBuilder::lease) while the round runs — a slow delivery is not
/// taken over by another worker. If a renewal finds that another worker took an entry over
/// anyway (a renewal failed for a whole lease, say), the entry is not delivered if its turn has
/// not come, and its outcome is not recorded if it was in flight (`lease_lost`).
///
/// Delivery is at least once: if a worker dies mid-delivery its lease expires and another worker
/// takes the entry over. Every delivery carries the entry's `Idempotency-Key`, so a server running
/// an idempotency layer executes it once.
///
/// Run it as a background task with [`spawn`](Self::spawn) or [`run`](Self::run), or drive it
/// yourself with [`run_once`](Self::run_once) and [`run_janitor`](Self::run_janitor).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::{convert::Infallible, sync::Arc, time::Duration};
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::service_fn;
/// use tower_redrive::{NewEntry, RedriveQueue, Redriver, SqliteQueue, StoredRequest, SystemClock, Clock};
///
/// let queue = Arc::new(SqliteQueue::open_in_memory()?);
/// let request = StoredRequest::new(http::Method::POST, "http://upstream/orders".parse()?);
/// queue.enqueue(NewEntry::new(request, SystemClock.now())).await?;
///
/// let upstream = service_fn(|_req: http::Request<Full<Bytes>>| async {
///     Ok::<_, Infallible>(http::Response::new(String::from("ok")))
/// });
/// let mut worker = Redriver::builder(queue.clone(), upstream)
///     .name("orders")
///     .lease(Duration::from_secs(60))
///     .build()?;
/// let report = worker.run_once().await?;
/// assert_eq!(report.delivered, 1);
/// # Ok(()) }
/// ```
pub struct Redriver<S, C = HttpClassifier> {
    service: S,
    shared: Arc<WorkerShared<C>>,
}

impl<S: Clone, C> Clone for Redriver<S, C> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C> fmt::Debug for Redriver<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redriver")
            .field("name", &self.shared.name)
            .field("worker_id", &self.shared.worker_id)
            .field("queue", &self.shared.queue)
            .field("lease", &self.shared.lease)
            .field("batch", &self.shared.batch)
            .finish_non_exhaustive()
    }
}

impl<S> Redriver<S> {
    /// A builder over a queue and the service that delivers.
    pub fn builder(queue: Arc<dyn RedriveQueue>, service: S) -> RedriverBuilder<S> {
        RedriverBuilder {
            service,
            queue,
            name: "default".into(),
            worker_id: None,
            classifier: HttpClassifier::default(),
            clock: Arc::new(SystemClock),
            schedule: Schedule::default(),
            rng: None,
            lease: Duration::from_secs(300),
            batch: 32,
            max_rate: None,
            poll_interval: Duration::from_secs(1),
            janitor_interval: Duration::from_secs(600),
            retention: Retention::default(),
            depth_threshold: None,
        }
    }
}

/// Builds a [`Redriver`].
pub struct RedriverBuilder<S, C = HttpClassifier> {
    service: S,
    queue: Arc<dyn RedriveQueue>,
    name: Arc<str>,
    worker_id: Option<String>,
    classifier: C,
    clock: Arc<dyn Clock>,
    schedule: Schedule,
    rng: Option<SeededRng>,
    lease: Duration,
    batch: usize,
    max_rate: Option<f64>,
    poll_interval: Duration,
    janitor_interval: Duration,
    retention: Retention,
    depth_threshold: Option<u64>,
}

impl<S, C> fmt::Debug for RedriverBuilder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedriverBuilder")
            .field("name", &self.name)
            .field("lease", &self.lease)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl<S, C> RedriverBuilder<S, C> {
    /// The instance name: the `name` label of the metrics and events.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// This worker's id, recorded as the lease owner (default: name, process id and a random
    /// suffix).
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Classifies delivery outcomes (default [`HttpClassifier`]).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> RedriverBuilder<S, C2> {
        RedriverBuilder {
            service: self.service,
            queue: self.queue,
            name: self.name,
            worker_id: self.worker_id,
            classifier,
            clock: self.clock,
            schedule: self.schedule,
            rng: self.rng,
            lease: self.lease,
            batch: self.batch,
            max_rate: self.max_rate,
            poll_interval: self.poll_interval,
            janitor_interval: self.janitor_interval,
            retention: self.retention,
            depth_threshold: self.depth_threshold,
        }
    }

    /// The clock (default [`SystemClock`]).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The re-delivery schedule (default [`Schedule::default`]).
    #[must_use]
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Seeds the jitter (tests).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(SeededRng::new(seed));
        self
    }

    /// How long a claimed entry is reserved for this worker (default 5 minutes).
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

    /// Entries claimed per round (default 32).
    #[must_use]
    pub const fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// At most this many deliveries per second, across clones of this worker (default
    /// unlimited): load levelling for an upstream that just recovered.
    #[must_use]
    pub const fn max_rate(mut self, per_second: f64) -> Self {
        self.max_rate = Some(per_second);
        self
    }

    /// The longest pause between rounds when nothing is due (default 1 s); the worker wakes
    /// earlier when it knows an entry falls due.
    #[must_use]
    pub const fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How often [`run`](Redriver::run) runs the janitor (default 10 minutes).
    #[must_use]
    pub const fn janitor_interval(mut self, interval: Duration) -> Self {
        self.janitor_interval = interval;
        self
    }

    /// How long finished entries are kept.
    #[must_use]
    pub const fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Emits [`RedriveEvent::DepthAboveThreshold`] when the queue depth reaches `threshold` (and
    /// [`RedriveEvent::DepthBelowThreshold`] when it falls back).
    #[must_use]
    pub const fn depth_alert(mut self, threshold: u64) -> Self {
        self.depth_threshold = Some(threshold);
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// An empty name, a zero lease, batch, poll or janitor interval or retention, or a rate that
    /// is not a positive number.
    pub fn build(self) -> Result<Redriver<S, C>, ConfigError> {
        if self.name.is_empty() {
            return Err(crate::error::config_error(
                "the worker name must not be empty",
            ));
        }
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
        if self.batch == 0 {
            return Err(crate::error::config_error("batch must be at least 1"));
        }
        let rate_interval = match self.max_rate {
            None => None,
            // `try_from`: a tiny rate (1e-30/s) is a valid float whose interval overflows.
            Some(r) if r.is_finite() && r > 0.0 => match Duration::try_from_secs_f64(1.0 / r) {
                Ok(interval) => Some(interval),
                Err(_) => {
                    return Err(crate::error::config_error(format!(
                        "max_rate {r} per second is too small: the interval between deliveries overflows"
                    )));
                }
            },
            Some(r) => {
                return Err(crate::error::config_error(format!(
                    "max_rate must be a positive number of deliveries per second, got {r}"
                )));
            }
        };
        let mut rng = self.rng.unwrap_or_else(SeededRng::from_entropy);
        let worker_id = self.worker_id.unwrap_or_else(|| {
            format!(
                "{}-{}-{:08x}",
                self.name,
                std::process::id(),
                rng.next_u64() as u32
            )
        });
        Ok(Redriver {
            service: self.service,
            shared: Arc::new(WorkerShared {
                name: self.name,
                worker_id,
                queue: self.queue,
                classifier: self.classifier,
                clock: self.clock,
                schedule: self.schedule,
                rng: Mutex::new(rng),
                lease: self.lease,
                batch: self.batch,
                rate_interval,
                poll_interval: self.poll_interval,
                janitor_interval: self.janitor_interval,
                retention: self.retention,
                depth_threshold: self.depth_threshold,
                events: broadcast::channel(256).0,
                above_threshold: AtomicBool::new(false),
                next_slot: Mutex::new(None),
                next_janitor: Mutex::new(None),
                last_stats: Mutex::new(QueueStats::default()),
            }),
        })
    }
}

enum Recorded {
    Delivered,
    Rescheduled,
    DeadLettered,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S, C, ResB> Redriver<S, C>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
{
    /// Receives [`RedriveEvent`]s from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<RedriveEvent> {
        self.shared.events.subscribe()
    }

    /// This worker's lease-owner id.
    #[must_use]
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// One round: claims due entries, delivers them, records the outcomes, refreshes the gauges.
    ///
    /// # Errors
    /// If the queue cannot be read. Failures to record an outcome are logged and counted
    /// (`store_error`); the entry's lease then expires and it is delivered again.
    pub async fn run_once(&mut self) -> Result<RunReport, QueueError> {
        let shared = Arc::clone(&self.shared);
        let claimed_at = shared.clock.now();
        let claimed = shared
            .queue
            .claim(Claim {
                worker: &shared.worker_id,
                now: claimed_at,
                lease: shared.lease,
                limit: shared.batch,
            })
            .await?;
        let mut report = RunReport {
            claimed: claimed.len(),
            ..RunReport::default()
        };
        let leases = HeldLeases::new(
            claimed.iter().map(|c| (c.id, c.lease)),
            claimed_at.plus(shared.lease),
        );
        let deliveries = async {
            for entry in claimed {
                let id = entry.id;
                let delivered = if leases.is_lost(id, shared.clock.now()) {
                    None
                } else {
                    self.deliver(entry, &leases).await
                };
                match delivered {
                    Some((result, recorded)) => self.count(&mut report, id, result, recorded),
                    None => {
                        // Taken over while it waited its turn in the batch (or its pacing),
                        // or its lease ran out with no renewal accepted (another worker may
                        // have claimed it): that worker delivers it.
                        leases.finish(id);
                        tracing::warn!(name = %shared.name, %id, "lease lost before delivery; another worker owns the entry");
                        report.unrecorded += 1;
                    }
                }
            }
        };
        // The leases of the whole batch are renewed while its entries are delivered; the
        // renewal loop stops when the deliveries end.
        tokio::select! {
            biased;
            () = deliveries => {}
            never = lease::keep_alive(&shared.name, &*shared.queue, &*shared.clock, shared.lease, &leases) => match never {},
        }
        refresh_gauges(&shared).await?;
        Ok(report)
    }

    fn count(
        &self,
        report: &mut RunReport,
        id: EntryId,
        result: &'static str,
        recorded: Result<Recorded, QueueError>,
    ) {
        let shared = &self.shared;
        // An outcome that was not recorded is labelled by why (as `metrics::RESULTS` says):
        // the entry will be delivered again, so counting it as delivered would overstate.
        let result = match &recorded {
            Ok(_) => result,
            Err(QueueError::LeaseLost { .. }) => "lease_lost",
            Err(_) => "store_error",
        };
        metrics::counter!(m::DELIVERIES_TOTAL, "name" => shared.name.to_string(), "result" => result)
            .increment(1);
        match recorded {
            Ok(Recorded::Delivered) => report.delivered += 1,
            Ok(Recorded::Rescheduled) => report.rescheduled += 1,
            Ok(Recorded::DeadLettered) => report.dead_lettered += 1,
            Err(QueueError::LeaseLost { .. }) => {
                tracing::warn!(name = %shared.name, %id, "lease lost before the outcome was recorded; another worker owns the entry");
                report.unrecorded += 1;
            }
            Err(e) => {
                tracing::error!(name = %shared.name, %id, error = %e, "could not record a delivery outcome; the entry will be delivered again");
                report.unrecorded += 1;
            }
        }
    }

    /// Delivers one entry and records its outcome; `None` if its lease was found lost before
    /// it was sent (after pacing).
    async fn deliver(
        &mut self,
        entry: Claimed,
        leases: &HeldLeases,
    ) -> Option<(&'static str, Result<Recorded, QueueError>)> {
        let shared = Arc::clone(&self.shared);
        let attempt = entry.attempts + 1;
        let request = match entry.request {
            Ok(request) => request,
            Err(reason) => {
                if !leases.finish(entry.id) {
                    return Some(("corrupt", Err(QueueError::LeaseLost { id: entry.id })));
                }
                let now = shared.clock.now();
                let record = AttemptRecord::new(attempt, now, "corrupt", reason.clone());
                let reason = format!("corrupt entry: {reason}");
                let r = dead_letter(&shared, entry.id, entry.lease, record, reason, attempt).await;
                return Some(("corrupt", r));
            }
        };
        let mut req = request.to_request();
        if !req.headers().contains_key(IDEMPOTENCY_KEY) {
            if let Ok(key) = IdempotencyKey::parse_str(&entry.idempotency_key) {
                req.headers_mut()
                    .insert(IDEMPOTENCY_KEY, key.to_header_value());
            }
        }
        pace(&shared).await;
        // Pacing may have waited long: the lease must still be ours to deliver on it.
        if leases.is_lost(entry.id, shared.clock.now()) {
            return None;
        }
        let span =
            tracing::debug_span!("redrive_delivery", name = %shared.name, id = %entry.id, attempt);
        // A panic in the service (its readiness, its call or its future) is this attempt's
        // error: the entry is rescheduled, and the worker goes on with the next one.
        let service = &mut self.service;
        let ready: Result<(), BoxError> =
            match CatchPanic::new(poll_fn(|cx| service.poll_ready(cx))).await {
                Ok(ready) => ready.map_err(Into::into),
                Err(panicked) => Err(panicked.into()),
            };
        let result: Result<Response<ResB>, BoxError> = match ready {
            Ok(()) => match panic::catch(|| service.call(req)) {
                Ok(future) => match CatchPanic::new(future).instrument(span).await {
                    Ok(result) => result.map_err(Into::into),
                    Err(panicked) => Err(panicked.into()),
                },
                Err(panicked) => Err(panicked.into()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            if let Some(panicked) = e.downcast_ref::<DeliveryPanicked>() {
                tracing::error!(name = %shared.name, id = %entry.id, attempt, error = %panicked, "delivery service panicked; the entry is rescheduled");
            }
        }
        let now = shared.clock.now();
        let class = shared.classifier.classify(result.as_ref());
        let outcome = describe(&result);
        let retry_after = match class {
            Class::Transient { retry_after, .. } => retry_after_at(retry_after, &result, now),
            _ => None,
        };
        drop(result);
        if !leases.finish(entry.id) {
            // A renewal found the entry taken over mid-delivery: its outcome is not ours to
            // record (the store would refuse it anyway).
            return Some((class.as_str(), Err(QueueError::LeaseLost { id: entry.id })));
        }
        let record = AttemptRecord::new(attempt, now, class.as_str(), outcome.clone());
        Some(match class {
            Class::Success => {
                tracing::debug!(name = %shared.name, id = %entry.id, attempt, "delivered");
                let r = shared.queue.complete(entry.id, entry.lease, record).await;
                ("delivered", r.map(|()| Recorded::Delivered))
            }
            Class::Permanent => {
                let reason = format!("permanent failure: {outcome}");
                let r = dead_letter(&shared, entry.id, entry.lease, record, reason, attempt).await;
                ("permanent", r)
            }
            Class::Transient { .. } => {
                let age = now.since(entry.enqueued_at);
                let delay = {
                    let mut rng = lock(&shared.rng);
                    shared.schedule.next_delay(age, retry_after, &mut rng)
                };
                if let Some(delay) = delay {
                    tracing::debug!(name = %shared.name, id = %entry.id, attempt, %outcome, delay_secs = delay.as_secs(), "delivery failed; rescheduled");
                    let r = shared
                        .queue
                        .reschedule(entry.id, entry.lease, record, now.plus(delay))
                        .await;
                    ("transient", r.map(|()| Recorded::Rescheduled))
                } else {
                    let reason = format!(
                        "schedule exhausted after {attempt} attempts over {}; last error: {outcome}",
                        humanize(age)
                    );
                    let r =
                        dead_letter(&shared, entry.id, entry.lease, record, reason, attempt).await;
                    ("exhausted", r)
                }
            }
        })
    }

    /// Reads the queue's counts, updates the gauges, and emits depth-threshold events.
    ///
    /// # Errors
    /// If the queue cannot be read.
    pub async fn refresh_gauges(&self) -> Result<QueueStats, QueueError> {
        refresh_gauges(&self.shared).await
    }

    /// Deletes finished entries past their retention.
    ///
    /// # Errors
    /// If the queue fails.
    pub async fn run_janitor(&self) -> Result<PurgeReport, QueueError> {
        run_janitor(&self.shared).await
    }

    /// Runs rounds until `shutdown` resolves: claims and delivers, sleeps until the next entry is
    /// due (at most the poll interval), and runs the janitor every janitor interval.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let shared = Arc::clone(&self.shared);
            let mut pause = shared.poll_interval;
            // A panic that escapes a round (in the queue or the classifier: the delivery
            // service's own are caught per entry) must not end the task silently: the round's
            // entries are delivered again when their leases expire.
            match CatchPanic::new(self.run_once()).await {
                Ok(Ok(report)) if report.claimed >= shared.batch => pause = Duration::ZERO,
                Ok(Ok(_)) => {
                    let now = shared.clock.now();
                    if let Some(due) = lock(&shared.last_stats).next_due {
                        if due > now {
                            pause = pause.min(due.since(now));
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(name = %shared.name, error = %e, "redrive round failed");
                }
                Err(panicked) => {
                    tracing::error!(name = %shared.name, panic = panicked.message(), "redrive round panicked; its entries are delivered again when their leases expire");
                }
            }
            let now = shared.clock.now();
            let janitor_due = lock(&shared.next_janitor).is_none_or(|at| at <= now);
            if janitor_due {
                if let Err(e) = run_janitor(&shared).await {
                    tracing::warn!(name = %shared.name, error = %e, "redrive janitor failed");
                }
                *lock(&shared.next_janitor) = Some(now.plus(shared.janitor_interval));
            }
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

impl<S, C, ResB> Redriver<S, C>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
    ResB: Send + 'static,
{
    /// Spawns [`run`](Self::run) on the current tokio runtime.
    #[must_use]
    pub fn spawn(self) -> RedriverHandle {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            // A dropped handle detaches the worker (like a dropped `JoinHandle`): only
            // `shutdown` stops it.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }));
        RedriverHandle {
            shutdown: Some(tx),
            task,
        }
    }
}

/// A running [`Redriver`] task.
///
/// [`shutdown`](Self::shutdown) stops it after its current round, [`abort`](Self::abort) at
/// once; dropping the handle detaches the worker, which keeps running with the runtime.
#[derive(Debug)]
pub struct RedriverHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RedriverHandle {
    /// Stops the worker after its current round and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Kills the worker at once, mid-delivery if need be (what a crash does; its leases expire).
    pub fn abort(self) {
        self.task.abort();
    }
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 {
        format!("{:.1} days", secs as f64 / 86_400.0)
    } else if secs >= 3600 {
        format!("{:.1} hours", secs as f64 / 3600.0)
    } else {
        format!("{secs} s")
    }
}

async fn refresh_gauges<C>(shared: &WorkerShared<C>) -> Result<QueueStats, QueueError> {
    let stats = shared.queue.stats().await?;
    let now = shared.clock.now();
    let name = shared.name.to_string();
    metrics::gauge!(m::QUEUE_DEPTH, "name" => name.clone()).set(stats.pending as f64);
    metrics::gauge!(m::DEAD_LETTERS, "name" => name.clone()).set(stats.dead as f64);
    let age = stats
        .oldest_pending
        .map_or(0.0, |t| now.since(t).as_secs_f64());
    metrics::gauge!(m::OLDEST_AGE_SECONDS, "name" => name).set(age);
    if let Some(threshold) = shared.depth_threshold {
        let above = stats.pending >= threshold;
        if shared.above_threshold.swap(above, Ordering::SeqCst) != above {
            let name = Arc::clone(&shared.name);
            let depth = stats.pending;
            let event = if above {
                tracing::warn!(%name, depth, threshold, "redrive queue depth above threshold");
                RedriveEvent::DepthAboveThreshold {
                    name,
                    depth,
                    threshold,
                }
            } else {
                tracing::info!(%name, depth, threshold, "redrive queue depth back below threshold");
                RedriveEvent::DepthBelowThreshold {
                    name,
                    depth,
                    threshold,
                }
            };
            let _ = shared.events.send(event);
        }
    }
    *lock(&shared.last_stats) = stats;
    Ok(stats)
}

async fn run_janitor<C>(shared: &WorkerShared<C>) -> Result<PurgeReport, QueueError> {
    let now = shared.clock.now();
    let report = shared
        .queue
        .purge_finished(
            now.minus(shared.retention.delivered),
            now.minus(shared.retention.dead),
        )
        .await?;
    if report.delivered + report.dead > 0 {
        tracing::info!(name = %shared.name, delivered = report.delivered, dead = report.dead, "janitor removed finished entries");
    }
    Ok(report)
}

async fn dead_letter<C>(
    shared: &WorkerShared<C>,
    id: EntryId,
    lease: crate::entry::LeaseToken,
    record: AttemptRecord,
    reason: String,
    attempts: u32,
) -> Result<Recorded, QueueError> {
    let now = shared.clock.now();
    shared
        .queue
        .dead_letter(id, lease, Some(record), reason.clone(), now)
        .await?;
    tracing::warn!(name = %shared.name, %id, attempts, %reason, "entry dead-lettered");
    let _ = shared.events.send(RedriveEvent::DeadLettered {
        name: Arc::clone(&shared.name),
        id,
        reason,
        attempts,
    });
    Ok(Recorded::DeadLettered)
}

async fn pace<C>(shared: &WorkerShared<C>) {
    let Some(interval) = shared.rate_interval else {
        return;
    };
    let slot = {
        let mut next = lock(&shared.next_slot);
        let now = tokio::time::Instant::now();
        let slot = next.map_or(now, |n| n.max(now));
        // Saturating: a tiny `max_rate` is an interval no instant can be added to.
        *next = Some(tower_fault::time::saturating_after(slot, interval));
        slot
    };
    tokio::time::sleep_until(slot).await;
}
