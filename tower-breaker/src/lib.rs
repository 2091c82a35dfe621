#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod clock;
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
pub use clock::Clock;
pub use config::{
    BreakerBuilder, DEFAULT_OPEN_BACKOFF, DEFAULT_OPEN_JITTER, MIN_COARSE_SLOW_CALL, Outcome,
    Window,
};
pub use events::{Cause, Transition, Transitions};
pub use keyed::KeyedBreakerLayer;
pub use layer::BreakerLayer;
pub use server::{KeyedServerBreakerLayer, ServerBreakerLayer};
pub use service::CircuitBreaker;
pub use state::State;
pub use window::WindowCounts;

// What a user of this crate needs of tower-fault: the error type, the classifier and its
// vocabulary (to change what counts as a failure), the rejection hint, and the backoff
// vocabulary of open periods.
pub use tower_fault::{
    BoxError, Class, Classify, HttpClassifier, HttpClassifierBuilder, RetryAfterHint, Verdict,
    backoff::{Backoff, Jitter},
    classify_fn,
};
