//! [`Redriver`]: the worker that delivers queued requests on a schedule.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::sync::oneshot;
use tower_fault::{BoxError, Classify, HttpClassifier, events::Publisher};
use tower_service::Service;

use crate::{
    QueueError,
    clock::{Clock, Timestamp},
    entry::{Claimed, EntryId, PurgeReport, QueueStats},
    events::{RedriveEvent, RedriveEvents},
    lease::{self, HeldLeases},
    metrics as m,
    panic::CatchPanic,
    queue::{Claim, RedriveQueue},
    record::{Decision, Record, Unrecorded},
    schedule::Scheduler,
    settings::RedriveSettings,
};

mod builder;
mod deliver;

pub use builder::{DEFAULT_STORE_BACKOFF, RedriverBuilder};
use deliver::Delivery;

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

/// What every clone of a worker shares.
struct WorkerShared<C> {
    name: Arc<str>,
    worker_id: String,
    queue: Arc<dyn RedriveQueue>,
    classifier: C,
    clock: Arc<dyn Clock>,
    scheduler: Scheduler,
    lease: Duration,
    batch: usize,
    rate_interval: Option<Duration>,
    poll_interval: Duration,
    janitor_interval: Duration,
    retention: Retention,
    depth_threshold: Option<u64>,
    store_backoff: Duration,
    events: Publisher<RedriveEvent>,
    above_threshold: AtomicBool,
    /// Rounds in a row that failed on the store.
    failed_rounds: AtomicU32,
    unrecorded: Unrecorded,
    next_slot: Mutex<Option<tokio::time::Instant>>,
    next_janitor: Mutex<Option<Timestamp>>,
    last_stats: Mutex<QueueStats>,
}

/// Delivers queued requests through a client stack, on the settings' [`Schedule`](crate::Schedule).
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
/// use tower_redrive::{
///     Clock, NewEntry, RedriveQueue, RedriveSettings, Redriver, SqliteQueue, StoredRequest,
///     SystemClock,
/// };
///
/// let queue = Arc::new(SqliteQueue::open_in_memory()?);
/// let request = StoredRequest::new(http::Method::POST, "http://upstream/orders".parse()?);
/// queue.enqueue(NewEntry::new(request, SystemClock.now())).await?;
///
/// let upstream = service_fn(|_req: http::Request<Full<Bytes>>| async {
///     Ok::<_, Infallible>(http::Response::new(String::from("ok")))
/// });
/// let settings = RedriveSettings::builder().name("orders").build()?;
/// let mut worker = Redriver::builder(queue.clone(), upstream, settings)
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

impl<S, C> Redriver<S, C> {
    /// A builder over a queue, the service that delivers (normally the stack the
    /// [`RedriveLayer`](crate::RedriveLayer) wraps) and the settings the worker shares with
    /// the layer.
    pub fn builder(
        queue: Arc<dyn RedriveQueue>,
        service: S,
        settings: RedriveSettings<C>,
    ) -> RedriverBuilder<S, C> {
        RedriverBuilder::new(queue, service, settings)
    }

    fn new(service: S, shared: WorkerShared<C>) -> Self {
        Self {
            service,
            shared: Arc::new(shared),
        }
    }
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

    /// Records a delivery's outcome with the entry's lease and counts it in `report`.
    ///
    /// # Errors
    /// The store's error, other than a lost lease: the outcome is kept, to be recorded before
    /// anything else is claimed.
    async fn record_outcome(
        &self,
        decision: Decision,
        report: &mut RunReport,
    ) -> Result<(), QueueError> {
        let id = decision.id;
        match decision.record(&*self.queue, self.clock.now()).await {
            Ok(()) => {
                count(self, id, Ok(&decision));
                self.recorded(&decision);
                match decision.record {
                    Record::Complete(_) => report.delivered += 1,
                    Record::Reschedule { .. } => report.rescheduled += 1,
                    Record::DeadLetter { .. } => report.dead_lettered += 1,
                }
            }
            Err(lost @ QueueError::LeaseLost { .. }) => {
                count(self, id, Err(&lost));
                tracing::warn!(name = %self.name, %id, "lease lost before the outcome was recorded; another worker owns the entry");
                report.unrecorded += 1;
            }
            Err(error) => {
                // The store is failing: stop delivering, keep the outcome to record it before
                // anything else is claimed.
                count(self, id, Err(&error));
                self.unrecorded.keep(decision);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Tells of an outcome the store recorded (a dead letter is logged and sent as an event).
    fn recorded(&self, decision: &Decision) {
        if let Record::DeadLetter { attempt, reason } = &decision.record {
            let (id, attempts) = (decision.id, attempt.attempt);
            tracing::warn!(name = %self.name, %id, attempts, %reason, "entry dead-lettered");
            self.events.publish(RedriveEvent::DeadLettered {
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
    /// Receives [`RedriveEvent`]s from now on, the suite's bounded subscription: the worker
    /// never waits for a slow subscriber, which misses the newest events while it holds 256
    /// unread ones ([`RedriveEvents::missed`] counts them).
    #[must_use]
    pub fn subscribe(&self) -> RedriveEvents {
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
                    shared.events.publish(RedriveEvent::StoreRecovered {
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
                shared.events.publish(RedriveEvent::StoreFailed {
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
        // The leases of the whole batch are renewed while its entries are delivered; the
        // renewal loop stops when the deliveries end.
        let delivered = tokio::select! {
            biased;
            delivered = self.deliver_batch(claimed, &leases, &mut report) => delivered,
            never = lease::keep_alive(&shared.name, &*shared.queue, &*shared.clock, shared.lease, &leases) => match never {},
        };
        delivered.map_err(failed("record"))?;
        refresh_gauges(&shared)
            .await
            .map_err(failed("read_stats"))?;
        Ok(report)
    }

    /// Delivers a claimed batch, one entry after the other, and records each outcome in the
    /// queue and in `report`.
    ///
    /// # Errors
    /// The store's error when it failed to record an outcome: the batch stops there, and the
    /// outcome is kept, to be recorded before anything else is claimed.
    async fn deliver_batch(
        &mut self,
        claimed: Vec<Claimed>,
        leases: &HeldLeases,
        report: &mut RunReport,
    ) -> Result<(), QueueError> {
        let shared = Arc::clone(&self.shared);
        for entry in claimed {
            let id = entry.id;
            let delivery = if leases.is_lost(id, shared.clock.now()) {
                Delivery::NotSent
            } else {
                self.deliver(entry, leases).await
            };
            match delivery {
                Delivery::Decided(decision) => shared.record_outcome(decision, report).await?,
                Delivery::NotSent => {
                    // Taken over while it waited its turn in the batch (or its pacing), or its
                    // lease ran out with no renewal accepted (another worker may have claimed
                    // it): that worker delivers it.
                    leases.finish(id);
                    tracing::warn!(name = %shared.name, %id, "lease lost before delivery; another worker owns the entry");
                    report.unrecorded += 1;
                }
                Delivery::TakenOver => {
                    count(&shared, id, Err(&QueueError::LeaseLost { id }));
                    tracing::warn!(name = %shared.name, %id, "lease lost before the outcome was recorded; another worker owns the entry");
                    report.unrecorded += 1;
                }
            }
        }
        Ok(())
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
                    if let Some(due) = lock(&shared.last_stats).next_due
                        && due > now
                    {
                        pause = pause.min(due.since(now));
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
            shared.events.publish(event);
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
