#![doc = include_str!("../README.md")]
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
