//! Error-class-aware HTTP retry for tower that never duplicates a side effect.
//!
//! [`RetryLayer`] retries what the [tower-fault](tower_fault) classifier calls *transient* —
//! and only when sending the request again is safe:
//!
//! * **Method safety.** `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT` and `DELETE` are retried on
//!   every transient failure. `POST`, `PATCH` and other non-idempotent methods only on failures
//!   that prove the request was not processed (connect errors, `REFUSED_STREAM`, 429, a local
//!   rejection) — unless the request carries an `Idempotency-Key`.
//!   [`RetryLayerBuilder::idempotency_key`] stamps one (a UUID v7, the same on every attempt),
//!   which makes them fully retryable against a server running tower-idempotency.
//! * **Backoff** ([`Backoff`]: exponential, constant, decorrelated) with [`Jitter`] (full by
//!   default), seedable for tests.
//! * **Limits**: `max_attempts` (counting the first, default 4), a total deadline covering
//!   attempts and sleeps (default 30 s, so an upstream that never answers cannot hold a caller
//!   forever; `no_deadline()` turns it off), an optional per-attempt timeout. The deadline ends
//!   when the response head is returned; [`BodyTimeoutLayer`] bounds reading the body.
//! * **Retry-After** of the upstream (429, 503): the next delay is at least the server's, up to
//!   `max_retry_after` (default 60 s). A wait that would pass the deadline or the cap is not
//!   slept: the last outcome is returned at once.
//! * **Local rejections** (a breaker open, failover with no healthy endpoint: a layer of this
//!   client refusing the request unsent) do not block the caller: their hint is waited only up
//!   to `max_local_rejection_wait` (default: the backoff's maximum delay), and a longer one
//!   returns the rejection at once ([`RetryOutcome::Rejected`]). One endpoint's own rejection
//!   under failover is not waited: the next attempt goes to another endpoint.
//! * **A retry budget** ([`RetryBudget`]) shared by every clone of the layer, which tells an
//!   outage from a partial failure: over a sliding 10 s window, retries are at most 20% of
//!   requests plus 2 for every retry that was answered (a success or a permanent failure), plus
//!   a floor of 10 per second held as one second's worth of tokens. In a partial failure retries
//!   flow while at least half of them are answered; in a total outage none is, and a burst of
//!   requests gets its 20% and about one second of floor.
//! * **Body replay** ([`ReplayBody`]) for any `http_body::Body`: up to 64 KiB is kept and
//!   replayed byte-identical; `Bytes` frames cost a reference count. A larger body is sent once,
//!   whole and in order, and not retried.
//! * The final response carries [`RetryInfo`] when the layer retried or gave up
//!   ([`RetryInfo::of`] reads a response without one as a first-attempt success); under
//!   failover, a retry goes to an endpoint not tried yet ([`tower_fault::AttemptContext`],
//!   built from the endpoints failover reports). Discarded responses are drained while the layer
//!   sleeps, so their connections can be reused. Per-request settings come from a
//!   [`RetryOverride`] extension. Every attempt runs in a `retry_attempt` tracing span and the
//!   `retry_*` [`metrics`] are recorded (with the default `metrics` feature).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_retry_plus::{ReplayBody, RetryInfo, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_fault::BoxError> {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let upstream = service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
//!     let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     let status = if n < 2 { 503 } else { 200 };
//!     async move { Ok::<_, Infallible>(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap()) }
//! });
//! let client = ServiceBuilder::new().layer(RetryLayer::default()).service(upstream);
//!
//! let req = Request::get("http://upstream/").body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(RetryInfo::of(&res).attempts, 3);
//! # Ok(()) }
//! ```
//!
//! The layer needs a tokio runtime with its time driver (for backoff sleeps and timeouts).
//! Its error type is [`BoxError`](tower_fault::BoxError): the inner service's error, or one of
//! the [`error`] module's (downcast to tell them apart).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod body;
mod body_timeout;
mod budget;
pub mod error;
pub mod future;
mod head;
mod layer;
pub mod metrics;
mod observe;
mod policy;
mod service;

pub use backoff::{Backoff, Jitter};
pub use body::ReplayBody;
pub use body_timeout::{BodyTimeout, BodyTimeoutFuture, BodyTimeoutLayer, TimeoutBody};
pub use budget::{BudgetSnapshot, RetryBudget, RetryBudgetBuilder};
pub use layer::{DEFAULT_BODY_LIMIT, DEFAULT_DEADLINE, RetryLayer, RetryLayerBuilder};
pub use policy::{RetryInfo, RetryOutcome, RetryOverride, is_idempotent};
pub use service::Retry;
