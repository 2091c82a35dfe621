//! Health-checked failover for tower: priority tiers of endpoints, power-of-two-choices inside
//! a tier, active probes with hysteresis, passive ejection, and an explicit all-down policy.
//!
//! A [`Failover`] is built from **tiers** of **endpoints**. Tier 0 holds the primaries; later
//! tiers are standbys that take traffic only when no primary is usable (or, with
//! [`spill`](FailoverBuilder::spill), Envoy-style partial spill). Inside a tier, requests are
//! spread by power of two choices on in-flight requests (or round-robin). An endpoint is a name,
//! a base URI and a tower service; requests are rewritten to the endpoint's scheme, authority
//! and optional path prefix, so one shared hyper or reqwest client can serve all of them.
//!
//! Health has two sources:
//!
//! * **active probes** ([`Probe`], [`HttpProbe`] shallow or deep) run by a background task
//!   with interval, jitter, timeout, a separate unhealthy interval and bounded concurrency;
//!   `unhealthy_threshold` failures in a row take an endpoint down and `healthy_threshold`
//!   passes bring it back (no flapping on intermittent probe loss);
//! * **passive ejection**: a streak of `Transient` outcomes of live traffic (as classified
//!   by tower-fault's [`HttpClassifier`](tower_fault::HttpClassifier)) ejects an endpoint for
//!   a jittered, exponentially growing time that decays while it stays healthy. It returns
//!   after that time once a probe or one trial request passes.
//!
//! # Noise is not an outage
//!
//! An upstream that fails a quarter of its requests at random is not down: every retry has
//! three chances in four. Live traffic is evidence only as far as it tells such noise from an
//! outage, so passive detection is built to keep serving through noise and still catch a dead
//! endpoint quickly:
//!
//! * **A streak, not a count.** A run of failures ejects only when it is at least
//!   [`eject_after`](FailoverBuilder::eject_after) long *and* longer than the endpoint's recent
//!   failure rate explains: noise at that rate would make it less than once in a million calls
//!   ([`tower_fault::evidence::required_streak`]). Each endpoint keeps its last 64 to 128
//!   outcomes before the current run in one atomic word. A dead endpoint with a clean past is
//!   ejected at `eject_after` failures; one with 5 % recent failures a couple of calls later;
//!   an endpoint failing 40 % of its calls at random needs a run of about 20, which such noise
//!   makes less than once in ten million calls (a fixed "5 in a row" would eject it about once
//!   every 160 calls). Until an endpoint's window holds a failure, nothing suggests noise and
//!   `eject_after` alone decides.
//! * **Never all of them.** Passive ejection keeps at most
//!   [`max_ejected_fraction`](FailoverBuilder::max_ejected_fraction) of the endpoints out of
//!   rotation (half by default, always at least one), counting endpoints out for any reason. A
//!   fault every endpoint shares (heavy noise, a blip in the network in front of them) cannot
//!   turn into "no healthy endpoint" through passive ejection; active probes and a failed
//!   `poll_ready` are verdicts and may take every endpoint down.
//! * **A breaker's verdict steers traffic.** Give each endpoint its own circuit breaker (a
//!   tower-breaker layer inside its service) to judge its failure *rate*. While it refuses
//!   requests it answers with a local rejection ([`tower_fault::Rejected`]) saying when to come
//!   back; failover then holds the endpoint out of rotation until then (at most the maximum
//!   ejection time), without counting a failure or growing the ejection backoff, and brings it
//!   back like an ejected endpoint, with one trial request or a passing probe
//!   ([`Cause::HeldOut`]). A rejection that names no time keeps the endpoint in rotation. When
//!   every endpoint is out, [`error::NoHealthyEndpoint`] carries the earliest return as its
//!   `retry_after`.
//!
//! When nothing is usable the call fails fast with [`error::NoHealthyEndpoint`] (a
//! `Transient`, *not processed* rejection for an outer retry), or waits a bounded time for a
//! recovery, or ignores health ([`AllDown`]). Under tower-retry-plus, a retried request goes
//! to an endpoint it has not tried yet: failover names the endpoint behind every failure (a
//! [`ServedBy`](tower_fault::ServedBy) on a transient response, an
//! [`EndpointError`](tower_fault::EndpointError) around an endpoint's error) and reads the
//! [`AttemptContext`](tower_fault::AttemptContext) the retry layer builds from them.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_failover::{Endpoint, Failover};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_fault::BoxError> {
//! // One "client" for every endpoint: it just echoes the URI it was sent to.
//! let client = service_fn(|req: Request<()>| async move {
//!     Ok::<_, Infallible>(Response::new(req.uri().to_string()))
//! });
//! let mut failover = Failover::builder()
//!     .tier([Endpoint::new("primary", "http://10.0.0.1:8080", client)])
//!     .tier([Endpoint::new("standby", "http://10.0.0.2:8080/v1", client)])
//!     .build()?;
//! let res = failover.ready().await?.call(Request::get("/orders").body(())?).await?;
//! assert_eq!(res.body(), "http://10.0.0.1:8080/orders");
//!
//! // Take the primary out of rotation: traffic fails over to the standby.
//! let _drain = failover.handle().remove("primary");
//! let res = failover.ready().await?.call(Request::get("/orders").body(())?).await?;
//! assert_eq!(res.body(), "http://10.0.0.2:8080/v1/orders");
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! With the default `metrics` feature: `failover_endpoint_healthy{name,endpoint}` (1/0),
//! `failover_requests_total{name,endpoint}`, `failover_ejections_total{name,endpoint,cause}`
//! (`consecutive_failures`, `trial_failed`, `readiness_failed`, `held_out`),
//! `failover_ejections_refused_total{name,endpoint}` (passive ejections the max-ejected guard
//! refused: once per failure run, and each failed trial it returned to rotation),
//! `failover_active_tier{name}` (-1 when none); the names, label values and help text are in
//! [`metrics`]. Handles are registered with the recorder that is current when the failover is
//! built (or an endpoint added).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod config;
mod endpoint;
pub mod error;
mod events;
pub mod future;
mod handle;
pub mod metrics;
mod observe;
mod outcomes;
mod probe;
mod prober;
mod server;
mod service;
mod shared;

pub use builder::FailoverBuilder;
pub use config::{AllDown, Balance, InitialState, TierPolicy};
pub use endpoint::{Endpoint, EndpointInfo, EndpointSnapshot, EndpointStatus};
pub use events::{Cause, HealthEvent, HealthEvents};
pub use handle::{Drain, FailoverHandle};
pub use probe::{HttpProbe, Probe, ProbeFn, ProbeFuture, ProbeOutcome, probe_fn};
pub use server::{NO_HEALTHY_ENDPOINT_TYPE, ServerMode, ServerModeFuture};
pub use service::Failover;
pub use tower_fault::EndpointId;
