#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

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

pub use body::ReplayBody;
pub use body_timeout::{BodyTimeout, BodyTimeoutFuture, BodyTimeoutLayer, TimeoutBody};
pub use budget::{BudgetSnapshot, RetryBudget, RetryBudgetBuilder};
pub use layer::{DEFAULT_DEADLINE, DEFAULT_MAX_REPLAY_BYTES, RetryLayer, RetryLayerBuilder};
pub use policy::{RetryInfo, RetryOutcome, RetryOverride, is_idempotent};
pub use service::Retry;
// What a user of this crate needs of tower-fault: the error type, the classifier and its
// vocabulary (to change what is retried), the backoff vocabulary, and the key and attempt
// context a retried request carries.
pub use tower_fault::{
    AttemptContext, BoxError, Class, Classify, HttpClassifier, HttpClassifierBuilder,
    IDEMPOTENCY_KEY, IdempotencyKey, Verdict,
    backoff::{Backoff, Jitter},
    classify_fn,
};
