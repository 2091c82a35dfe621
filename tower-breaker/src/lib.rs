//! A lock-free circuit breaker for tower, with true sliding windows and bounded half-open probes.
//!
//! A [`Breaker`] watches the outcomes of calls to one upstream and stops sending to it when it
//! fails too often, so callers fail fast and the upstream can recover:
//!
//! * **Closed** — calls flow; each outcome is classified by tower-fault ([`Classify`]):
//!   `Transient` is a failure, `Permanent` is ignored (a 404 says nothing about the upstream's
//!   health), and so is an inner layer's local rejection (another breaker, failover with no
//!   usable endpoint: that layer already counted the failures behind it); `Success` is a success.
//!   The breaker trips on any of: a failure rate at or above a threshold once `minimum_calls` are
//!   in the window; a slow-call rate at or above a threshold (with `slow_calls(duration,
//!   threshold)`, a call slower than `duration` is slow even if it succeeded); a streak of
//!   consecutive failures. The window is either the last N calls ([`Window::Count`], a true
//!   ring) or the last D ([`Window::Time`], fixed buckets).
//! * **Noise is not an outage** — rates are judged with confidence (by default the rate's
//!   lower bound, two standard errors down, must reach the threshold: 20 failures in 20 calls
//!   trip a 50 % threshold, 14 in 20 do not), and a consecutive-failure rule needs a run that
//!   the failure rate around it would make by chance less than once in a million calls. An
//!   upstream failing 40 % of calls at random keeps a default breaker closed; one failing every
//!   call opens it at `minimum_calls`.
//! * **Open** — calls are rejected at once with a [`BreakerError`](error::BreakerError) whose
//!   `retry_after()` is the remaining open time and whose `source()` is a
//!   [`tower_fault::Rejected`], so an outer retry knows when to come back and failover moves on.
//!   The open duration grows exponentially (with jitter) on re-opens whose probes all failed and
//!   falls back after the breaker stays closed; a longer upstream `Retry-After` (429/503)
//!   stretches it.
//! * **Half-open** — at most `half_open_permits` probes (default 5) are admitted, exactly,
//!   under any concurrency; a dropped probe frees its permit. The probes are judged together:
//!   the failure-rate threshold's share of them failing (or a half-open deadline with probes
//!   still in flight) re-opens the breaker, enough successes that the rest could not re-open it
//!   close it.
//!
//! An inner service that panics (in `call` or in its future) fails the call: the breaker
//! records a failure and the panic goes on to the caller unchanged.
//!
//! The closed path is atomics only: admitting a call is one load, recording a success after a
//! success is one `fetch_add` and one load. No mutex, no allocation, no boxed future.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{Breaker, State, Window};
//! use tower_fault::{BoxError, RetryAfterHint};
//!
//! let breaker = Breaker::builder()
//!     .name("inventory")
//!     .window(Window::count(20))
//!     .minimum_calls(10)
//!     .failure_rate_threshold(0.5)
//!     .open_duration(Duration::from_secs(5), Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//! let mut client = ServiceBuilder::new()
//!     .layer(breaker.layer())
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, BoxError>(http::Response::builder().status(502).body(()).unwrap())
//!     }));
//!
//! for _ in 0..10 {
//!     let _ = client.ready().await.unwrap().call(http::Request::new(())).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let err = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! let open = err.downcast_ref::<tower_breaker::error::BreakerError>().unwrap();
//! assert!(open.retry_after().unwrap() <= Duration::from_secs(5));
//! # }
//! ```
//!
//! Also here: manual control ([`Breaker::force_open`], [`Breaker::force_closed`],
//! [`Breaker::disable`], [`Breaker::reset`]), typed transition events
//! ([`Breaker::subscribe`]), keyed breakers in a bounded map with an open-fraction guard
//! ([`keyed::KeyedBreakerLayer`]), and a server mode answering `503` + `Retry-After` +
//! problem+json for axum routers ([`BreakerLayer::server_mode`],
//! [`KeyedBreakerLayer::server_mode`]).
//!
//! # Metrics
//!
//! With the default `metrics` feature: `breaker_state{name}` (0 closed, 1 half-open, 2 open),
//! `breaker_transitions_total{name,from,to}`, `breaker_calls_total{name,result}` (`success`,
//! `failure`, `slow`, `ignored`, `rejected`); the names, label values and help text are in
//! [`metrics`]. The call counters are registered when the breaker is built — install your
//! recorder first. Transitions are also logged with `tracing` at WARN.
//! Keyed breakers label their series `{name}/{key}` for the first
//! [`max_metric_keys`](keyed::KeyedBreakerBuilder::max_metric_keys) keys (default 100) and
//! `{name}/other` for the rest, so the series stay bounded whatever the keys.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod config;
mod core;
pub mod error;
mod events;
pub mod future;
mod guard;
pub mod keyed;
mod layer;
pub mod metrics;
pub mod server;
mod service;
mod state;
mod telemetry;
mod window;

pub use breaker::{Breaker, OwnedPermit, Permit};
pub use config::{BreakerBuilder, Outcome, Window};
pub use events::{Cause, SUBSCRIBER_CAPACITY, Transition, Transitions};
pub use keyed::KeyedBreakerLayer;
pub use layer::BreakerLayer;
pub use server::{KeyedServerBreakerLayer, ServerBreakerLayer};
pub use service::CircuitBreaker;
pub use state::State;
pub use window::WindowCounts;

#[doc(no_inline)]
pub use tower_fault::{Class, Classify, HttpClassifier};
