//! [`RedriveLayer`]: keeps what a client stack could not deliver.

use std::{fmt, sync::Arc};

use tower_fault::HttpClassifier;
use tower_layer::Layer;

use crate::{
    clock::Clock, gateway::RedriveGatewayLayer, queue::RedriveQueue, schedule::Scheduler,
    service::Redrive, settings::RedriveSettings,
};

mod builder;

pub use builder::{DEFAULT_MAX_BODY_BYTES, OrderingKeyFn, RedriveLayerBuilder};

/// What every clone of a layer and every service it made share.
pub(crate) struct Shared<C> {
    pub(crate) name: Arc<str>,
    pub(crate) classifier: C,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) scheduler: Scheduler,
    pub(crate) queue: Arc<dyn RedriveQueue>,
    pub(crate) max_body_bytes: usize,
    pub(crate) ordering_key: Option<OrderingKeyFn>,
    pub(crate) strict_order: bool,
    pub(crate) record_permanent: bool,
}

impl<C> Shared<C> {
    pub(crate) fn debug(&self, mut d: fmt::DebugStruct<'_, '_>) -> fmt::Result {
        d.field("name", &self.name)
            .field("queue", &self.queue)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("ordered", &self.ordering_key.is_some())
            .finish_non_exhaustive()
    }
}

/// Keeps what a client stack could not deliver.
///
/// Put it outermost on a client stack (`RedriveLayer -> RetryLayer -> BreakerLayer -> ...`).
/// For each request it:
///
/// 1. buffers the body (up to [`max_body_bytes`](RedriveLayerBuilder::max_body_bytes) — a
///    larger body is refused with [`BodyTooLarge`](crate::BodyTooLarge) before anything is
///    sent, never truncated) and stamps an `Idempotency-Key` if there is none, so the first
///    attempt and every re-delivery carry the same key;
/// 2. if the request has an ordering key and an older entry with that key is still queued,
///    queues it behind that entry without sending it (FIFO per key, for what is queued: see
///    [`ordering_key`](RedriveLayerBuilder::ordering_key));
/// 3. calls the inner stack and classifies the outcome with the settings' classifier
///    ([`HttpClassifier`] by default):
///    * success → [`Outcome::Answered`](crate::Outcome::Answered);
///    * permanent failure → returned as it is (a response as `Answered`, an error as `Err`),
///      and recorded in the dead-letter queue when
///      [`record_permanent`](RedriveLayerBuilder::record_permanent) is on;
///    * transient failure (retries exhausted, breaker open, no healthy endpoint, 503…) →
///      written to the queue, and only *then* answered with
///      [`Outcome::Deferred`](crate::Outcome::Deferred). If the write fails the caller gets
///      [`EnqueueFailed`](crate::EnqueueFailed): nothing is acknowledged that is not persisted.
///
/// The inner service takes `Request<Full<Bytes>>`, the same type the
/// [`Redriver`](crate::Redriver) sends, so one stack serves both; give both the same
/// [`RedriveSettings`]. For a gateway that answers `202 Accepted`, see
/// [`RedriveLayer::gateway`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use std::{convert::Infallible, sync::Arc};
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_redrive::{Outcome, RedriveLayer, RedriveQueue, RedriveSettings, SqliteQueue};
///
/// let queue = Arc::new(SqliteQueue::open_in_memory()?);
/// let settings = RedriveSettings::builder().name("payments").build()?;
/// let client = ServiceBuilder::new()
///     .layer(RedriveLayer::new(queue.clone(), settings))
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

impl<C> RedriveLayer<C> {
    /// A layer over `queue` with `settings` and the defaults of the layer's own settings (see
    /// [`RedriveLayerBuilder`]).
    #[must_use]
    pub fn new(queue: Arc<dyn RedriveQueue>, settings: RedriveSettings<C>) -> Self {
        Self::builder(queue, settings).finish()
    }

    /// A builder over a queue and the settings the layer shares with the worker.
    #[must_use]
    pub fn builder(
        queue: Arc<dyn RedriveQueue>,
        settings: RedriveSettings<C>,
    ) -> RedriveLayerBuilder<C> {
        RedriveLayerBuilder::new(queue, settings)
    }

    pub(crate) const fn from_shared(shared: Arc<Shared<C>>) -> Self {
        Self { shared }
    }

    /// The same layer in gateway mode: answers `202 Accepted` for a deferred request and
    /// problem+json responses for its own errors, with `Error = Infallible` (axum-ready).
    #[must_use]
    pub fn gateway(self) -> RedriveGatewayLayer<C> {
        RedriveGatewayLayer::new(self)
    }
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
        self.shared.debug(f.debug_struct("RedriveLayer"))
    }
}

impl<S, C> Layer<S> for RedriveLayer<C> {
    type Service = Redrive<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Redrive::new(inner, Arc::clone(&self.shared))
    }
}
