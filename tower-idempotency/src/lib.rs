#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
mod builder;
mod config;
mod detach;
pub mod error;
mod flow;
pub mod future;
mod key;
mod layer;
pub mod metrics;
pub mod problems;
pub mod record;
mod service;
pub mod store;
mod telemetry;
mod waiters;

pub use builder::IdempotencyLayerBuilder;
pub use config::{
    Concurrency, DEFAULT_CREDENTIAL_HEADERS, DEFAULT_LEASE, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_RESPONSE_BODY_TIMEOUT, DEFAULT_TTL, OutagePolicy,
};
pub use flow::REPLAYED_HEADER;
pub use key::{FencingToken, Fingerprint, RecordKey, Scope, authorization_principal};
pub use layer::IdempotencyLayer;
pub use service::Idempotency;
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{IdempotencyStore, MemoryStore};
// What a user of this crate needs of `tower-fault`: the classifier deciding which outcomes are
// kept, the key type and header, and the error type a custom store's errors box.
/// The `redis` crate this store is built on, for [`RedisStore::new`] over a connection of
/// your own and for its error type.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis;
pub use tower_fault::{
    BoxError, Class, HttpClassifier, HttpClassifierBuilder, IDEMPOTENCY_KEY, IdempotencyKey,
    KeyError, Verdict,
};
