//! The suite's recommended client stack over reqwest, as the demo and the end-to-end tests use it.
//!
//! ```text
//! RedriveLayer "chaos"            what the live path could not deliver is queued (SQLite) and
//!                                 re-driven later, with the same Idempotency-Key
//!  -> BreakerLayer "chaos-upstream"  sheds load when payments fail even after their retries
//!   -> RetryLayer "chaos"         retries transient failures, stamps one Idempotency-Key per payment
//!    -> FailoverLayer "chaos"     primary tier, then standby; probes /healthz; ejects an
//!                                 endpoint on a real failure streak (its per-endpoint breaker)
//!       ReqwestService            one client for both endpoints, each request rewritten to
//!                                 the endpoint's base URI
//! ```
//!
//! Every layer reads the same classification (tower-fault's `HttpClassifier`): a 503 or a reset
//! is transient, a 422 permanent, a connect error transient *and not processed*, a local
//! rejection (breaker open, no healthy endpoint) transient, not processed, and no evidence
//! against the upstream. How the settings interact is written next to each of them below and in
//! the README's "recommended stack".

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_breaker::{Breaker, BreakerLayer, CircuitBreaker, Window, error::BreakerError};
use tower_failover::{
    Failover, FailoverHandle, FailoverLayer, HttpProbe, error::NoHealthyEndpoint,
};
use tower_fault::{BoxError, reqwest::ReqwestService};
use tower_redrive::{
    Outcome, Redrive, RedriveLayer, RedriveQueue, RedriveSettings, Redriver, Schedule, SqliteQueue,
};
use tower_retry_plus::{
    Backoff, Retry, RetryInfo, RetryLayer, RetryOutcome,
    error::{AttemptTimedOut, DeadlineExceeded},
};

use crate::{
    load::Sent,
    naive::status_label,
    payments::{Payment, Receipt},
};

/// The `name` label of the stack's retry, failover and redrive metrics.
pub const NAME: &str = "chaos";

/// The client of one endpoint: a reqwest client shared by every endpoint.
pub type EndpointClient = ReqwestService;

/// The live path's type: retry, breaker, failover.
pub type PaymentsStack = CircuitBreaker<Retry<Failover<EndpointClient>>>;

/// Knobs of the stack (the rest are the defaults the demo documents).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// Seed of every jitter generator (retry, breaker, failover, redrive).
    pub seed: u64,
    /// Attempts per payment, the first included.
    pub max_attempts: u32,
    /// Time budget of one payment, attempts and waits included.
    pub deadline: Duration,
    /// Time budget of one attempt.
    pub attempt_timeout: Duration,
    /// How often failover probes each endpoint's `/healthz`.
    pub probe_interval: Duration,
    /// How often a queued payment is re-driven (for up to [`ClientSettings::redrive_for`]).
    pub redrive_every: Duration,
    /// How long a queued payment is re-driven before it is dead-lettered.
    pub redrive_for: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            seed: 42,
            max_attempts: 8,
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(2),
            probe_interval: Duration::from_millis(200),
            redrive_every: Duration::from_millis(500),
            redrive_for: Duration::from_secs(120),
        }
    }
}

/// The protected client: the stack, plus handles on its breaker, failover and queue.
#[derive(Debug, Clone)]
pub struct ProtectedClient {
    stack: PaymentsStack,
    deferring: Redrive<PaymentsStack>,
    queue: Arc<SqliteQueue>,
    redrive: RedriveSettings,
    settings: ClientSettings,
    failover: FailoverHandle<EndpointClient>,
    breakers: Vec<Breaker>,
}

/// What re-driving the queue achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Entries delivered by the worker.
    pub delivered: u64,
    /// Entries the worker gave up on (dead letters).
    pub dead_lettered: u64,
    /// Entries still pending when the drain stopped.
    pub pending: u64,
    /// Delivery attempts the worker made.
    pub attempts: u64,
}

impl ProtectedClient {
    /// A stack sending to `primary` (e.g. `http://127.0.0.1:8080`) and failing over to `standby`,
    /// with an in-memory SQLite queue behind its redrive layer.
    ///
    /// Requests are written with a path only (`/payments`); failover completes the URI.
    ///
    /// # Errors
    /// A configuration the layers reject, or a reqwest client that cannot be built.
    pub fn new(primary: &str, standby: &str, settings: &ClientSettings) -> Result<Self, BoxError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let http = ReqwestService::new(client);
        // One breaker for the whole upstream, outside retry and failover: it judges payments,
        // not attempts. An attempt that failed on one endpoint is failover's business (it
        // ejects that endpoint and the retry goes to another); a breaker counting attempts
        // would open on one endpoint's outage mixed with noise on the other. Counting what
        // is left once retries and failover did their work, it opens only when payments fail
        // anyway — then it sheds the load an outage would otherwise attract. Per endpoint there
        // is no breaker: failover's passive ejection is one (it routes around an endpoint
        // instead of rejecting the request). A time window holds enough payments at any rate
        // for its confidence-judged rate rule to tell noise from an outage.
        let upstream = Breaker::builder()
            .name(format!("{NAME}-upstream"))
            .window(Window::time(Duration::from_secs(10)))
            .failure_rate_threshold(0.5)
            .minimum_calls(100)
            .open_backoff(Backoff::exponential(
                Duration::from_millis(250),
                2.0,
                Duration::from_secs(2),
            ))
            .seed(settings.seed.wrapping_add(2))
            .build()?;
        // One client for both endpoints: failover rewrites each request to its endpoint.
        let failover = FailoverLayer::builder()
            .name(NAME)
            .tier([("primary", primary)])
            .tier([("standby", standby)])
            .probe(HttpProbe::shallow(http.clone(), "/healthz"))
            .probe_interval(settings.probe_interval)
            .unhealthy_interval(settings.probe_interval)
            .probe_timeout(Duration::from_millis(500))
            .thresholds(2, 2)
            .ejection_backoff(Backoff::exponential(
                Duration::from_millis(250),
                2.0,
                Duration::from_secs(2),
            ))
            .seed(settings.seed.wrapping_add(3))
            .build()?
            .layer(http);
        let handle = failover.handle();
        let retry = RetryLayer::builder()
            .name(NAME)
            .max_attempts(settings.max_attempts)
            .backoff(Backoff::exponential(
                Duration::from_millis(20),
                2.0,
                Duration::from_millis(800),
            ))
            .deadline(settings.deadline)
            .attempt_timeout(settings.attempt_timeout)
            .max_retry_after(Duration::from_secs(2))
            .idempotency_key(true)
            .seed(settings.seed)
            .build()?;
        let stack = ServiceBuilder::new()
            .layer(BreakerLayer::new(upstream.clone()))
            .layer(retry)
            .service(failover);
        let queue = Arc::new(SqliteQueue::open_in_memory()?);
        // The redrive layer and its worker share one name, schedule and seed: the layer draws
        // its jitter from the seed, the worker from the next one.
        let redrive = RedriveSettings::builder()
            .name(NAME)
            .schedule(
                Schedule::builder()
                    .tier(settings.redrive_every, settings.redrive_for)
                    .build()?,
            )
            .seed(settings.seed.wrapping_add(4))
            .build()?;
        let deferring =
            RedriveLayer::new(Arc::clone(&queue) as Arc<dyn RedriveQueue>, redrive.clone())
                .layer(stack.clone());
        Ok(Self {
            stack,
            deferring,
            queue,
            redrive,
            settings: settings.clone(),
            failover: handle,
            breakers: vec![upstream],
        })
    }

    /// The stack, to call directly.
    #[must_use]
    pub fn stack(&self) -> PaymentsStack {
        self.stack.clone()
    }

    /// The failover's handle (endpoint health, events).
    #[must_use]
    pub const fn failover(&self) -> &FailoverHandle<EndpointClient> {
        &self.failover
    }

    /// The breakers (one, for the whole upstream).
    #[must_use]
    pub fn breakers(&self) -> &[Breaker] {
        &self.breakers
    }

    /// Sends one payment through the whole stack: the live path, and the queue for what it
    /// could not deliver.
    pub async fn send(&self, payment: &Payment) -> Sent {
        let body = serde_json::to_vec(payment).expect("a payment serializes");
        let req = Request::post("/payments")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        match self.deferring.clone().oneshot(req).await {
            Ok(Outcome::Answered(res)) => {
                let info = RetryInfo::of(&res);
                let status = res.status();
                // Read the body (the receipt) so the connection goes back to the pool.
                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                let attempts = Some(info.attempts);
                if status.is_success() {
                    let sent = Sent::ok(attempts);
                    return match body.map(|b| serde_json::from_slice::<Receipt>(&b)) {
                        Ok(Ok(receipt)) => sent.served_by(receipt.server),
                        _ => sent,
                    };
                }
                let label = status_label(status);
                match info.outcome {
                    RetryOutcome::Success | RetryOutcome::Permanent => {
                        Sent::failed(label, attempts)
                    }
                    outcome => {
                        Sent::failed(format!("gave up ({}): {label}", outcome.as_str()), attempts)
                    }
                }
            }
            Ok(Outcome::Deferred(_)) => Sent::deferred(),
            Err(err) => Sent::failed(error_label(err.as_ref()), None),
        }
    }

    /// The queue behind the redrive layer.
    #[must_use]
    pub fn queue(&self) -> &Arc<SqliteQueue> {
        &self.queue
    }

    /// Re-drives the queued payments through the live path until the queue is empty (every
    /// entry delivered or dead-lettered) or `limit` has passed.
    ///
    /// # Errors
    /// A worker that cannot be built, or a queue that cannot be read.
    pub async fn drain(&self, limit: Duration) -> Result<DrainReport, BoxError> {
        let mut worker = Redriver::builder(
            Arc::clone(&self.queue) as Arc<dyn RedriveQueue>,
            self.stack.clone(),
            self.redrive.clone(),
        )
        .poll_interval(self.settings.redrive_every)
        .build()?;
        let mut report = DrainReport::default();
        let until = Instant::now() + limit;
        loop {
            let stats = self.queue.stats().await?;
            report.pending = stats.pending;
            if stats.pending == 0 || Instant::now() >= until {
                return Ok(report);
            }
            let round = worker.run_once().await?;
            report.attempts += round.claimed as u64;
            report.delivered += round.delivered as u64;
            report.dead_lettered += round.dead_lettered as u64;
            if round.claimed == 0 {
                tokio::time::sleep(self.settings.redrive_every / 5).await;
            }
        }
    }
}

/// A short label for an error the stack returned.
#[must_use]
pub fn error_label(err: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    // Anywhere in the chain: an endpoint's breaker error comes wrapped in failover's
    // `EndpointError`.
    let err: &(dyn std::error::Error + 'static) = err;
    if tower_fault::find::<BreakerError>(err).is_some() {
        return "breaker open".to_owned();
    }
    if tower_fault::find::<NoHealthyEndpoint>(err).is_some() {
        return "no healthy endpoint".to_owned();
    }
    if tower_fault::find::<DeadlineExceeded>(err).is_some() {
        return "deadline exceeded".to_owned();
    }
    if tower_fault::find::<AttemptTimedOut>(err).is_some() {
        return "attempt timed out".to_owned();
    }
    format!("error: {}", tower_fault::inspect(err).kind.as_str())
}
