//! [`Redriver`]: the worker that delivers queued requests on a schedule.

use std::{
    fmt,
    future::{Future, poll_fn},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
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
    record::{Decision, Record, Unrecorded},
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
    /// Outcomes discarded because the lease was lost; also entries not delivered at all because
    /// another worker took them over while they waited their turn in the batch.
    pub unrecorded: usize,
    /// Outcomes of earlier rounds that the store failed to record, recorded at the start of this
    /// one.
    pub recorded_late: usize,
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
    store_backoff: Duration,
    events: broadcast::Sender<RedriveEvent>,
    above_threshold: AtomicBool,
    /// Rounds in a row that failed on the store.
    failed_rounds: AtomicU32,
    unrecorded: Unrecorded,
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
/// Store errors: the round stops at the first one, and an outcome the store failed to record is
/// recorded before anything else is claimed, so its entry is not delivered again meanwhile (see
/// [`run_once`](Self::run_once)); [`run`](Self::run) backs off.
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
            store_backoff: None,
        }
    }
}

/// The longest pause between rounds while the store fails, unless the poll interval is longer
/// (see [`RedriverBuilder::store_backoff`]): short enough that a store back from an outage is
/// used again within a minute, long enough that a broken one is not hammered (nor the log
/// filled).
pub const DEFAULT_STORE_BACKOFF: Duration = Duration::from_secs(60);

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
    store_backoff: Option<Duration>,
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
            store_backoff: self.store_backoff,
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
    /// An empty name, a zero lease, batch, poll or janitor interval or retention, a rate that
    /// is not a positive number, or a store backoff shorter than the poll interval.
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
        let store_backoff = match self.store_backoff {
            Some(max) if max < self.poll_interval => {
                return Err(crate::error::config_error(format!(
                    "store_backoff ({max:?}) is shorter than poll_interval ({:?}): a failing store would be tried more often than a working one",
                    self.poll_interval
                )));
            }
            Some(max) => max,
            None => DEFAULT_STORE_BACKOFF.max(self.poll_interval),
        };
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
        m::describe();
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
                store_backoff,
                events: broadcast::channel(256).0,
                above_threshold: AtomicBool::new(false),
                failed_rounds: AtomicU32::new(0),
                unrecorded: Unrecorded::default(),
                next_slot: Mutex::new(None),
                next_janitor: Mutex::new(None),
                last_stats: Mutex::new(QueueStats::default()),
            }),
        })
    }
}

/// What became of one claimed entry's delivery.
enum Delivery {
    /// Its lease was found lost before it was sent: another worker delivers it.
    NotSent,
    /// Another worker took it over while it was in flight: the outcome is not this worker's
    /// to record (the store would refuse it anyway).
    TakenOver,
    /// Delivered (or found unreadable): the outcome to record.
    Decided(Decision),
}

/// A store operation that stopped a round.
struct StoreFailure {
    /// One of [`m::OPERATIONS`].
    operation: &'static str,
    error: QueueError,
}

fn failed(operation: &'static str) -> impl FnOnce(QueueError) -> StoreFailure {
    move |error| StoreFailure { operation, error }
}

impl<C> WorkerShared<C> {
    /// The pause after `consecutive` failed rounds: the poll interval, doubled for every
    /// further one, up to the store backoff.
    fn backoff(&self, consecutive: u32) -> Duration {
        let doublings = consecutive.saturating_sub(1).min(31);
        self.poll_interval
            .saturating_mul(1 << doublings)
            .min(self.store_backoff)
    }

    /// Tells of an outcome the store recorded (a dead letter is logged and sent as an event).
    fn recorded(&self, decision: &Decision) {
        if let Record::DeadLetter { attempt, reason } = &decision.record {
            let (id, attempts) = (decision.id, attempt.attempt);
            tracing::warn!(name = %self.name, %id, attempts, %reason, "entry dead-lettered");
            let _ = self.events.send(RedriveEvent::DeadLettered {
                name: Arc::clone(&self.name),
                id,
                reason: reason.clone(),
                attempts,
            });
        }
    }
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

    /// One round: records the outcomes earlier rounds could not record, claims due entries,
    /// delivers them, records the outcomes, refreshes the gauges.
    ///
    /// A store error stops the round. An outcome the store failed to record is kept in memory
    /// and recorded, with the entry's lease, before this worker (or a clone) claims anything
    /// else, so the entry is not delivered again meanwhile; the batch's entries not delivered
    /// yet are left to their leases. The failure is logged at ERROR, counted in
    /// `redrive_store_errors_total` and sent as [`RedriveEvent::StoreFailed`], and
    /// [`run`](Self::run) backs off (see [`RedriverBuilder::store_backoff`]).
    ///
    /// The kept outcomes live in this process: a worker restarted meanwhile, or another worker
    /// that claims the entry once its lease ran out, delivers it again (its `Idempotency-Key`
    /// makes that harmless to a server that dedups).
    ///
    /// # Errors
    /// The store's error when claiming, recording an outcome or reading the statistics failed.
    pub async fn run_once(&mut self) -> Result<RunReport, QueueError> {
        let result = self.round().await;
        let shared = &self.shared;
        match result {
            Ok(report) => {
                let failed_rounds = shared.failed_rounds.swap(0, Ordering::Relaxed);
                if failed_rounds > 0 {
                    tracing::info!(name = %shared.name, failed_rounds, "the redrive store works again");
                    let _ = shared.events.send(RedriveEvent::StoreRecovered {
                        name: Arc::clone(&shared.name),
                        failed_rounds,
                    });
                }
                Ok(report)
            }
            Err(StoreFailure { operation, error }) => {
                let consecutive = shared
                    .failed_rounds
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                let retry_in = shared.backoff(consecutive);
                m::store_error(&shared.name, operation);
                tracing::error!(
                    name = %shared.name, operation, %error, consecutive,
                    retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
                    "the redrive store failed; the round stopped"
                );
                let _ = shared.events.send(RedriveEvent::StoreFailed {
                    name: Arc::clone(&shared.name),
                    operation,
                    error: error.to_string(),
                    consecutive,
                    retry_in,
                });
                Err(error)
            }
        }
    }

    async fn round(&mut self) -> Result<RunReport, StoreFailure> {
        let shared = Arc::clone(&self.shared);
        let recorded_late = record_unrecorded(&shared).await?;
        let claimed_at = shared.clock.now();
        let claimed = shared
            .queue
            .claim(Claim {
                worker: &shared.worker_id,
                now: claimed_at,
                lease: shared.lease,
                limit: shared.batch,
            })
            .await
            .map_err(failed("claim"))?;
        let mut report = RunReport {
            claimed: claimed.len(),
            recorded_late,
            ..RunReport::default()
        };
        let leases = HeldLeases::new(
            claimed.iter().map(|c| (c.id, c.lease)),
            claimed_at.plus(shared.lease),
        );
        let mut stopped = None;
        let deliveries = async {
            for entry in claimed {
                let id = entry.id;
                let delivery = if leases.is_lost(id, shared.clock.now()) {
                    Delivery::NotSent
                } else {
                    self.deliver(entry, &leases).await
                };
                let decision = match delivery {
                    Delivery::Decided(decision) => decision,
                    Delivery::NotSent => {
                        // Taken over while it waited its turn in the batch (or its pacing),
                        // or its lease ran out with no renewal accepted (another worker may
                        // have claimed it): that worker delivers it.
                        leases.finish(id);
                        tracing::warn!(name = %shared.name, %id, "lease lost before delivery; another worker owns the entry");
                        report.unrecorded += 1;
                        continue;
                    }
                    Delivery::TakenOver => {
                        count(&shared, id, Err(&QueueError::LeaseLost { id }));
                        tracing::warn!(name = %shared.name, %id, "lease lost before the outcome was recorded; another worker owns the entry");
                        report.unrecorded += 1;
                        continue;
                    }
                };
                match decision.record(&*shared.queue, shared.clock.now()).await {
                    Ok(()) => {
                        count(&shared, id, Ok(&decision));
                        shared.recorded(&decision);
                        match decision.record {
                            Record::Complete(_) => report.delivered += 1,
                            Record::Reschedule { .. } => report.rescheduled += 1,
                            Record::DeadLetter { .. } => report.dead_lettered += 1,
                        }
                    }
                    Err(lost @ QueueError::LeaseLost { .. }) => {
                        count(&shared, id, Err(&lost));
                        tracing::warn!(name = %shared.name, %id, "lease lost before the outcome was recorded; another worker owns the entry");
                        report.unrecorded += 1;
                    }
                    Err(error) => {
                        // The store is failing: stop delivering, keep the outcome to record
                        // it before anything else is claimed.
                        count(&shared, id, Err(&error));
                        shared.unrecorded.keep(decision);
                        stopped = Some(error);
                        return;
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
        if let Some(error) = stopped {
            return Err(StoreFailure {
                operation: "record",
                error,
            });
        }
        refresh_gauges(&shared)
            .await
            .map_err(failed("read_stats"))?;
        Ok(report)
    }

    /// Delivers one entry and decides its outcome (recorded by the caller).
    async fn deliver(&mut self, entry: Claimed, leases: &HeldLeases) -> Delivery {
        let shared = Arc::clone(&self.shared);
        let attempt = entry.attempts + 1;
        let decided = |result, record| {
            Delivery::Decided(Decision {
                id: entry.id,
                lease: entry.lease,
                result,
                record,
            })
        };
        let request = match entry.request {
            Ok(request) => request,
            Err(reason) => {
                if !leases.finish(entry.id) {
                    return Delivery::TakenOver;
                }
                let now = shared.clock.now();
                let record = AttemptRecord::new(attempt, now, "corrupt", reason.clone());
                let reason = format!("corrupt entry: {reason}");
                return decided(
                    "corrupt",
                    Record::DeadLetter {
                        attempt: record,
                        reason,
                    },
                );
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
            return Delivery::NotSent;
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
            return Delivery::TakenOver;
        }
        let record = AttemptRecord::new(attempt, now, class.as_str(), outcome.clone());
        match class {
            Class::Success => {
                tracing::debug!(name = %shared.name, id = %entry.id, attempt, "delivered");
                decided("delivered", Record::Complete(record))
            }
            Class::Permanent => decided(
                "permanent",
                Record::DeadLetter {
                    attempt: record,
                    reason: format!("permanent failure: {outcome}"),
                },
            ),
            Class::Transient { .. } => {
                let age = now.since(entry.enqueued_at);
                let delay = {
                    let mut rng = lock(&shared.rng);
                    shared.schedule.next_delay(age, retry_after, &mut rng)
                };
                if let Some(delay) = delay {
                    tracing::debug!(name = %shared.name, id = %entry.id, attempt, %outcome, delay_secs = delay.as_secs(), "delivery failed; rescheduled");
                    decided(
                        "transient",
                        Record::Reschedule {
                            attempt: record,
                            next: now.plus(delay),
                        },
                    )
                } else {
                    let reason = format!(
                        "schedule exhausted after {attempt} attempts over {}; last error: {outcome}",
                        humanize(age)
                    );
                    decided(
                        "exhausted",
                        Record::DeadLetter {
                            attempt: record,
                            reason,
                        },
                    )
                }
            }
        }
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
    /// due (at most the poll interval), and runs the janitor every janitor interval. After a
    /// round that failed on the store it waits the poll interval, doubled for every further
    /// failed round in a row, up to [`store_backoff`](RedriverBuilder::store_backoff).
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
                // Logged, counted and sent as an event by `run_once`.
                Ok(Err(_)) => {
                    pause = shared.backoff(shared.failed_rounds.load(Ordering::Relaxed));
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
    let age = stats
        .oldest_pending
        .map_or(0.0, |t| now.since(t).as_secs_f64());
    m::queue(&shared.name, stats.pending, stats.dead, age);
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
        .await
        .inspect_err(|_| m::store_error(&shared.name, "purge"))?;
    if report.delivered + report.dead > 0 {
        tracing::info!(name = %shared.name, delivered = report.delivered, dead = report.dead, "janitor removed finished entries");
    }
    Ok(report)
}

/// Counts one delivery in `redrive_deliveries_total`: by its decided result when recorded, and
/// as `lease_lost` or `store_error` when not (the entry will be delivered again by whoever
/// holds it, or recorded later: counting it as delivered would overstate).
fn count<C>(shared: &WorkerShared<C>, id: EntryId, recorded: Result<&Decision, &QueueError>) {
    let result = match recorded {
        Ok(decision) => decision.result,
        Err(QueueError::LeaseLost { .. }) => "lease_lost",
        Err(_) => "store_error",
    };
    tracing::trace!(name = %shared.name, %id, result, "delivery counted");
    m::delivery(&shared.name, result);
}

/// Records the outcomes earlier rounds could not record, oldest first, each with its own
/// lease; how many were recorded. The first that fails again stops the round.
async fn record_unrecorded<C>(shared: &WorkerShared<C>) -> Result<usize, StoreFailure> {
    let mut recorded = 0;
    while let Some(decision) = shared.unrecorded.take() {
        let id = decision.id;
        match decision.record(&*shared.queue, shared.clock.now()).await {
            Ok(()) => {
                tracing::info!(name = %shared.name, %id, result = decision.result, "recorded an outcome the store had failed to record");
                shared.recorded(&decision);
                recorded += 1;
            }
            Err(QueueError::LeaseLost { .. }) => {
                // Recorded after all (an operation that timed out may have completed), or
                // taken over by another worker once the lease ran out.
                tracing::warn!(name = %shared.name, %id, "an outcome the store had failed to record was refused: the entry was recorded or taken over meanwhile");
            }
            Err(error) => {
                shared.unrecorded.put_back(decision);
                return Err(StoreFailure {
                    operation: "record",
                    error,
                });
            }
        }
    }
    Ok(recorded)
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
