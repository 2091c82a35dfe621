//! [`RedriveLayer`] and the [`Redrive`] service: persist what could not be delivered.

use std::{
    fmt, mem,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderName, Request, Response, request::Parts};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower_fault::{BoxError, Class, Classify, HttpClassifier, SeededRng};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    ConfigError,
    clock::{Clock, SystemClock, Timestamp},
    entry::{AttemptRecord, NewEntry, StoredRequest, stamp_key, truncate},
    error::{BodyError, BodyTooLarge, EnqueueFailed},
    future::ResponseFuture,
    gateway::RedriveGatewayLayer,
    outcome::{Deferred, Outcome},
    queue::RedriveQueue,
    schedule::Schedule,
};

/// Extracts the ordering key of a request.
pub type OrderingKeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The default body cap: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

pub(crate) struct Shared<C> {
    pub(crate) name: Arc<str>,
    pub(crate) queue: Arc<dyn RedriveQueue>,
    pub(crate) classifier: C,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) schedule: Schedule,
    pub(crate) rng: Mutex<SeededRng>,
    pub(crate) max_body: usize,
    pub(crate) ordering_key: Option<OrderingKeyFn>,
    pub(crate) strict_order: bool,
    pub(crate) record_permanent: bool,
}

/// Keeps what a client stack could not deliver.
///
/// Put it outermost on a client stack (`RedriveLayer -> RetryLayer -> BreakerLayer -> ...`).
/// For each request it:
///
/// 1. buffers the body (up to a cap — a larger body is refused with [`BodyTooLarge`] before
///    anything is sent, never truncated) and stamps an `Idempotency-Key` if there is none, so the
///    first attempt and every re-delivery carry the same key;
/// 2. if the request has an ordering key and an older entry with that key is still queued,
///    queues it behind that entry without sending it (FIFO per key, for what is queued: see
///    [`ordering_key`](RedriveLayerBuilder::ordering_key));
/// 3. calls the inner stack and classifies the outcome with the [`Classify`] it was given
///    ([`HttpClassifier`] by default):
///    * success → [`Outcome::Answered`];
///    * permanent failure → returned as it is (a response as `Answered`, an error as `Err`),
///      and recorded in the dead-letter queue when [`record_permanent`](RedriveLayerBuilder::record_permanent) is on;
///    * transient failure (retries exhausted, breaker open, no healthy endpoint, 503…) →
///      written to the queue, and only *then* answered with [`Outcome::Deferred`]. If the write
///      fails the caller gets [`EnqueueFailed`]: nothing is acknowledged that is not persisted.
///
/// The inner service takes `Request<Full<Bytes>>`, the same type the [`Redriver`](crate::Redriver)
/// sends, so one stack serves both. For a gateway that answers `202 Accepted`, see
/// [`RedriveLayer::gateway`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use std::{convert::Infallible, sync::Arc};
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_redrive::{Outcome, RedriveLayer, RedriveQueue, SqliteQueue};
///
/// let queue = Arc::new(SqliteQueue::open_in_memory()?);
/// let client = ServiceBuilder::new()
///     .layer(RedriveLayer::builder(queue.clone()).name("payments").build()?)
///     .service(service_fn(|_req: http::Request<Full<Bytes>>| async {
///         // The upstream is down.
///         Ok::<_, Infallible>(http::Response::builder().status(503).body(String::new()).unwrap())
///     }));
///
/// let req = http::Request::post("http://payments.internal/charges").body(Full::new(Bytes::from("{}")))?;
/// match client.oneshot(req).await? {
///     Outcome::Deferred(receipt) => println!("queued as {}", receipt.id),
///     Outcome::Answered(res) => println!("answered {}", res.status()),
/// }
/// assert_eq!(queue.stats().await?.pending, 1);
/// # Ok(()) }
/// ```
pub struct RedriveLayer<C = HttpClassifier> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for RedriveLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for RedriveLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_shared(&self.shared, f.debug_struct("RedriveLayer"))
    }
}

fn debug_shared<C>(shared: &Shared<C>, mut d: fmt::DebugStruct<'_, '_>) -> fmt::Result {
    d.field("name", &shared.name)
        .field("queue", &shared.queue)
        .field("max_body", &shared.max_body)
        .field("ordered", &shared.ordering_key.is_some())
        .finish_non_exhaustive()
}

impl RedriveLayer {
    /// A builder over a queue.
    #[must_use]
    pub fn builder(queue: Arc<dyn RedriveQueue>) -> RedriveLayerBuilder {
        RedriveLayerBuilder {
            name: "default".into(),
            queue,
            classifier: HttpClassifier::default(),
            clock: Arc::new(SystemClock),
            schedule: Schedule::default(),
            rng: None,
            max_body: DEFAULT_MAX_BODY,
            ordering_key: None,
            strict_order: true,
            record_permanent: false,
        }
    }
}

impl<C> RedriveLayer<C> {
    /// The same layer in gateway mode: answers `202 Accepted` for a deferred request and
    /// problem+json responses for its own errors, with `Error = Infallible` (axum-ready).
    #[must_use]
    pub fn gateway(self) -> RedriveGatewayLayer<C> {
        RedriveGatewayLayer::new(self)
    }
}

impl<S, C> Layer<S> for RedriveLayer<C> {
    type Service = Redrive<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Redrive {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`RedriveLayer`].
pub struct RedriveLayerBuilder<C = HttpClassifier> {
    name: Arc<str>,
    queue: Arc<dyn RedriveQueue>,
    classifier: C,
    clock: Arc<dyn Clock>,
    schedule: Schedule,
    rng: Option<SeededRng>,
    max_body: usize,
    ordering_key: Option<OrderingKeyFn>,
    strict_order: bool,
    record_permanent: bool,
}

impl<C> fmt::Debug for RedriveLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedriveLayerBuilder")
            .field("name", &self.name)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl<C> RedriveLayerBuilder<C> {
    /// The instance name (logs; match it with the worker's name).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Classifies outcomes (default [`HttpClassifier`]).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> RedriveLayerBuilder<C2> {
        RedriveLayerBuilder {
            name: self.name,
            queue: self.queue,
            classifier,
            clock: self.clock,
            schedule: self.schedule,
            rng: self.rng,
            max_body: self.max_body,
            ordering_key: self.ordering_key,
            strict_order: self.strict_order,
            record_permanent: self.record_permanent,
        }
    }

    /// The clock (default [`SystemClock`]).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The schedule that sets a deferred entry's first re-delivery time (default
    /// [`Schedule::default`]; give the worker the same one).
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

    /// The largest body the layer accepts, in bytes (default 1 MiB).
    #[must_use]
    pub const fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Orders delivery per key: entries with the same key are delivered in the order they were
    /// queued, and a new request is queued behind a pending entry with its key instead of
    /// overtaking it.
    ///
    /// What is ordered is what the queue holds. Two requests with the same key that are both
    /// in flight at once (neither queued yet: the first still going through its retries) are
    /// sent as they come, and either may reach the upstream first; a caller that needs strict
    /// order across those sends them one after the other.
    #[must_use]
    pub fn ordering_key(
        mut self,
        extract: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.ordering_key = Some(Arc::new(extract));
        self
    }

    /// Orders delivery per value of a request header (e.g. a tenant id).
    #[must_use]
    pub fn ordering_key_header(self, header: HeaderName) -> Self {
        self.ordering_key(move |parts| {
            parts
                .headers
                .get(&header)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        })
    }

    /// Whether a new request is queued behind a pending entry with the same ordering key without
    /// being sent (default `true`). With `false`, requests are sent at once and only the queue's
    /// own deliveries are ordered.
    #[must_use]
    pub const fn strict_order(mut self, strict: bool) -> Self {
        self.strict_order = strict;
        self
    }

    /// Records permanent failures in the dead-letter queue (default `false`); the caller still
    /// gets the failure as it is.
    #[must_use]
    pub const fn record_permanent(mut self, record: bool) -> Self {
        self.record_permanent = record;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// An empty name or a zero body cap.
    pub fn build(self) -> Result<RedriveLayer<C>, ConfigError> {
        if self.name.is_empty() {
            return Err(crate::error::config_error(
                "the layer name must not be empty",
            ));
        }
        if self.max_body == 0 {
            return Err(crate::error::config_error(
                "max_body_bytes must be greater than zero",
            ));
        }
        Ok(RedriveLayer {
            shared: Arc::new(Shared {
                name: self.name,
                queue: self.queue,
                classifier: self.classifier,
                clock: self.clock,
                schedule: self.schedule,
                rng: Mutex::new(self.rng.unwrap_or_else(SeededRng::from_entropy)),
                max_body: self.max_body,
                ordering_key: self.ordering_key,
                strict_order: self.strict_order,
                record_permanent: self.record_permanent,
            }),
        })
    }
}

/// The service [`RedriveLayer`] produces.
pub struct Redrive<S, C = HttpClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Redrive<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Redrive<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Redrive");
        d.field("inner", &self.inner);
        debug_shared(&self.shared, d)
    }
}

impl<S, C> Redrive<S, C> {
    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, B, ResB> Service<Request<B>> for Redrive<S, C>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResB: Send + 'static,
{
    type Response = Outcome<Response<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture::new(Box::pin(handle(inner, Arc::clone(&self.shared), req)))
    }
}

async fn handle<S, C, B, ResB>(
    mut inner: S,
    shared: Arc<Shared<C>>,
    req: Request<B>,
) -> Result<Outcome<Response<ResB>>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let body = collect(body, shared.max_body).await?;
    let idempotency_key = stamp_key(&mut parts.headers);
    let ordering_key = shared.ordering_key.as_ref().and_then(|f| f(&parts));
    let stored = StoredRequest::from_parts(&parts, body.clone());

    if shared.strict_order
        && let Some(key) = &ordering_key
    {
        let behind = shared.queue.has_pending(key).await.map_err(|e| {
            EnqueueFailed::new(
                "could not check the ordering key's queue".to_owned(),
                idempotency_key.clone(),
                e,
            )
        })?;
        if behind {
            let cause = "an older request with the same ordering key is queued".to_owned();
            let now = shared.clock.now();
            let entry = NewEntry {
                request: stored,
                idempotency_key,
                ordering_key,
                enqueued_at: now,
                available_at: now,
                first_attempt: None,
            };
            return defer(&shared, entry, cause).await;
        }
    }

    let result = inner
        .call(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(Into::into);
    let class = shared.classifier.classify(result.as_ref());
    match class {
        Class::Success => result.map(Outcome::Answered),
        Class::Permanent => {
            if shared.record_permanent {
                let now = shared.clock.now();
                let outcome = describe(&result);
                let attempt = AttemptRecord::new(1, now, class.as_str(), outcome.clone());
                let entry = NewEntry {
                    request: stored,
                    idempotency_key,
                    ordering_key,
                    enqueued_at: now,
                    available_at: now,
                    first_attempt: Some(attempt),
                };
                let reason = format!("permanent failure: {outcome}");
                match shared.queue.enqueue_dead(entry, reason).await {
                    Ok(id) => {
                        tracing::info!(name = %shared.name, %id, "permanent failure recorded in the dead-letter queue");
                    }
                    Err(e) => {
                        tracing::error!(name = %shared.name, error = %e, "could not record a permanent failure");
                    }
                }
            }
            result.map(Outcome::Answered)
        }
        Class::Transient { retry_after, .. } => {
            let now = shared.clock.now();
            let outcome = describe(&result);
            let retry_after = retry_after_at(retry_after, &result, now);
            drop(result);
            let delay = {
                let mut rng = shared.rng.lock().unwrap_or_else(PoisonError::into_inner);
                shared
                    .schedule
                    .next_delay(std::time::Duration::ZERO, retry_after, &mut rng)
            }
            .unwrap_or_default();
            let entry = NewEntry {
                request: stored,
                idempotency_key,
                ordering_key,
                enqueued_at: now,
                available_at: now.plus(delay),
                first_attempt: Some(AttemptRecord::new(1, now, class.as_str(), outcome.clone())),
            };
            defer(&shared, entry, outcome).await
        }
    }
}

async fn defer<C, R>(
    shared: &Shared<C>,
    entry: NewEntry,
    cause: String,
) -> Result<Outcome<R>, BoxError> {
    let idempotency_key = entry.idempotency_key.clone();
    let next_attempt_at = entry.available_at;
    match shared.queue.enqueue(entry).await {
        Ok(id) => {
            tracing::info!(name = %shared.name, %id, %cause, next_attempt_at = next_attempt_at.as_millis(), "request deferred for re-delivery");
            Ok(Outcome::Deferred(Deferred {
                id,
                idempotency_key,
                cause,
                next_attempt_at,
            }))
        }
        Err(e) => {
            tracing::error!(name = %shared.name, error = %e, %cause, "request failed and could not be queued");
            Err(EnqueueFailed::new(cause, idempotency_key, e).into())
        }
    }
}

async fn collect<B>(body: B, limit: usize) -> Result<Bytes, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyTooLarge { limit }.into());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyTooLarge { limit }.into()),
        Err(e) => Err(BodyError::new(e).into()),
    }
}

/// A short description of an outcome for the attempt history: the status line, or the error
/// and its sources.
pub(crate) fn describe<ResB>(result: &Result<Response<ResB>, BoxError>) -> String {
    match result {
        Ok(res) => res.status().to_string(),
        Err(e) => describe_error(&**e),
    }
}

/// The server's `Retry-After` as the classifier reported it, with an HTTP-date read against
/// `now` — the layer's or the worker's own clock — instead of the system clock the classifier
/// reads it against. The two differ only under an injected clock (tests, replays), where a date
/// read against the system clock would be far in the past or the future.
pub(crate) fn retry_after_at<ResB>(
    hint: Option<std::time::Duration>,
    result: &Result<Response<ResB>, BoxError>,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let hint = hint?;
    let Ok(res) = result else {
        return Some(hint);
    };
    Some(
        tower_fault::retry_after::from_headers(res.headers(), now.to_system_time()).unwrap_or(hint),
    )
}

pub(crate) fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = tower_fault::DisplayChain(e).to_string();
    truncate(&mut out, 1_000);
    out
}
