//! A durable queue, timed re-drive and a dead-letter queue for the requests a tower client stack
//! could not deliver.
//!
//! Retries cover seconds; outages last hours. This crate is the *queue* of
//! retry → queue → failover: what the client stack could not deliver is kept durably and
//! delivered later, and what can never be delivered is kept for a person to inspect.
//!
//! * [`RedriveLayer`] (outermost on a client stack): a request that ends in a transient failure —
//!   retries exhausted, breaker open, no healthy endpoint, a 503 — is written to a
//!   [`RedriveQueue`] *before* the caller is answered, and the caller gets
//!   [`Outcome::Deferred`] (or, in [gateway mode](RedriveLayer::gateway), `202 Accepted`).
//!   Permanent failures are returned as they are. Nothing is acknowledged that is not persisted.
//! * [`Redriver`]: a worker that delivers queued requests through the same stack on a
//!   [`Schedule`] (default: every 10 minutes for an hour, then 5 times a day for 5 days), with
//!   jitter, a rate cap, FIFO per ordering key and leases; then dead-letters them with their
//!   history. Its janitor deletes finished entries past their [`Retention`].
//! * Stores: [`SqliteQueue`] (feature `sqlite`, default — one file, WAL, no server) and
//!   [`PostgresQueue`] (feature `postgres` — many workers on many machines, `FOR UPDATE SKIP
//!   LOCKED` claims). Schema migrations ship with the crate and are applied on open; a queue is
//!   made only when asked to ([`SqliteQueue::open_or_create`], [`PostgresQueue::connect`]), so a
//!   mistyped path is [`QueueError::NoQueue`], not a new, empty queue.
//! * The dead-letter API is on the queue ([`RedriveQueue::list`], [`get`](RedriveQueue::get),
//!   [`requeue`](RedriveQueue::requeue), [`purge`](RedriveQueue::purge)); the
//!   `redrive-admin` example is a small CLI over it.
//! * A failing store stops the worker's round: an outcome it could not record is kept and
//!   recorded before anything else is claimed (the entry is not delivered again meanwhile), and
//!   [`Redriver::run`] backs off.
//! * Observability: the [`metrics`] listed there, [`RedriveEvent`]s for dead-lettering, the
//!   queue depth crossing a threshold and the store failing, and Prometheus alert rules for
//!   the metrics in the repository's `alerts/redrive.rules.yml`.
//!
//! Delivery is at least once and made effectively once by the `Idempotency-Key` the layer stamps
//! before the first attempt: a server running an idempotency layer replays instead of executing
//! twice.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::{convert::Infallible, sync::{Arc, atomic::{AtomicBool, Ordering}}};
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_redrive::{ManualClock, RedriveLayer, Redriver, SqliteQueue, Timestamp};
//!
//! let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
//! let queue = Arc::new(SqliteQueue::open_in_memory()?);
//! let up = Arc::new(AtomicBool::new(false));
//! let upstream = {
//!     let up = up.clone();
//!     service_fn(move |_req: http::Request<Full<Bytes>>| {
//!         let status = if up.load(Ordering::SeqCst) { 200 } else { 503 };
//!         async move { Ok::<_, Infallible>(http::Response::builder().status(status).body(String::new()).unwrap()) }
//!     })
//! };
//!
//! let client = ServiceBuilder::new()
//!     .layer(RedriveLayer::builder(queue.clone()).clock(clock.clone()).build()?)
//!     .service(upstream.clone());
//! let req = http::Request::post("http://upstream/orders").body(Full::new(Bytes::from("{}")))?;
//! let receipt = client.oneshot(req).await?.deferred().expect("upstream is down");
//!
//! // Eleven minutes later the upstream is back, and the entry is due (the first tier of the
//! // default schedule is every 10 minutes, ±10 %).
//! up.store(true, Ordering::SeqCst);
//! clock.advance(std::time::Duration::from_secs(11 * 60));
//! let mut worker = Redriver::builder(queue.clone(), upstream).clock(clock.clone()).build()?;
//! assert_eq!(worker.run_once().await?.delivered, 1);
//! # let _ = receipt;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
mod codec;
pub mod entry;
pub mod error;
pub mod events;
pub mod future;
mod gateway;
mod layer;
mod lease;
pub mod metrics;
mod outcome;
mod panic;
pub mod queue;
mod record;
pub mod schedule;
mod worker;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp, TokioClock};
pub use entry::{
    AttemptRecord, Claimed, EntryId, EntryRecord, EntryState, LeaseToken, NewEntry, PurgeReport,
    QueueStats, StoredRequest,
};
pub use error::{BodyError, BodyTooLarge, ConfigError, EnqueueFailed, QueueError};
pub use events::RedriveEvent;
pub use gateway::{
    PROBLEM_BAD_BODY, PROBLEM_NOT_QUEUED, PROBLEM_TOO_LARGE, PROBLEM_UPSTREAM, REDRIVE_ENTRY_ID,
    RedriveGateway, RedriveGatewayLayer,
};
pub use layer::{DEFAULT_MAX_BODY, OrderingKeyFn, Redrive, RedriveLayer, RedriveLayerBuilder};
pub use outcome::{Deferred, Outcome};
pub use panic::DeliveryPanicked;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use queue::postgres::PostgresQueue;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use queue::sqlite::SqliteQueue;
pub use queue::{Claim, QueueFuture, RedriveQueue};
pub use schedule::{Schedule, ScheduleBuilder, Tier};
pub use worker::{
    DEFAULT_STORE_BACKOFF, Redriver, RedriverBuilder, RedriverHandle, Retention, RunReport,
};
