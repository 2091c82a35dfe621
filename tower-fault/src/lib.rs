//! The shared fault contract of the tower resilience suite.
//!
//! Every layer of the suite (retry, breaker, failover, idempotency, redrive) reads the same answer
//! to one question: *what kind of failure was this?* That answer is a [`Class`]:
//!
//! * [`Class::Success`] — nothing to do;
//! * [`Class::Transient`] — worth trying again later (5xx, 408, 429, connect errors, timeouts,
//!   resets…), possibly with a server-provided `Retry-After`, and with the knowledge of whether
//!   the request was *possibly processed* ([`Delivery`]);
//! * [`Class::Permanent`] — trying again cannot help (most 4xx, body errors).
//!
//! The [`HttpClassifier`] implements the default table and can be reconfigured; any closure can
//! classify too ([`classify_fn`]).
//!
//! ```
//! use http::{Response, StatusCode};
//! use tower_fault::{BoxError, Class, Classify, HttpClassifier};
//!
//! let classifier = HttpClassifier::default();
//! let res = Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
//! let class = classifier.classify(Ok::<_, &BoxError>(&res));
//! assert!(class.is_transient());
//! assert_eq!(class.retry_after(), Some(std::time::Duration::from_secs(2)));
//! ```
//!
//! The crate also owns the HTTP header semantics the suite shares ([`retry_after`],
//! [`IdempotencyKey`]), where a request's attempts went ([`AttemptContext`] on a retried request,
//! written by retry and read by failover; [`ServedBy`] / [`EndpointError`] on what an endpoint
//! answered, written by failover and read by retry),
//! the concrete [`Rejected`] error that layers rejecting a request without sending it return (or
//! carry as a `source()`), a small problem+json helper for server modes, a seedable RNG for
//! jitter, and (feature `reqwest`) a tower adapter over `reqwest::Client`.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attempt;
pub mod backoff;
pub mod body;
mod chain;
mod class;
mod classify;
mod config_error;
mod error_source;
pub mod events;
pub mod evidence;
mod idempotency_key;
mod inspect;
pub mod problem;
mod rejected;
pub mod retry_after;
mod rng;
pub mod time;

#[cfg(feature = "reqwest")]
pub mod reqwest;

pub use attempt::{AttemptContext, EndpointError, EndpointId, SentTo, ServedBy};
pub use chain::{DisplayChain, chain, find};
pub use class::{Class, Delivery};
pub use classify::{
    Classify, ClassifyFn, HttpClassifier, HttpClassifierBuilder, Verdict, classify_fn,
};
pub use config_error::ConfigError;
pub use error_source::AsError;
pub use idempotency_key::{IDEMPOTENCY_KEY, IdempotencyKey, KeyError};
pub use inspect::{ErrorInfo, ErrorKind, inspect};
pub use rejected::{RejectReason, Rejected, RetryAfterHint};
pub use rng::SeededRng;

/// The boxed error type tower layers that add failures return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
