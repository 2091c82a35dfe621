#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod config;
mod ejection;
mod endpoint;
mod entry;
pub mod error;
mod events;
pub mod future;
mod handle;
mod health;
mod layer;
pub mod metrics;
mod observe;
mod outcomes;
mod passive;
mod pick;
mod probe;
mod prober;
mod server;
mod service;
mod settings;
mod shared;
mod snapshot;
mod trial;
mod waiters;

pub use builder::FailoverBuilder;
pub use config::{AllDown, Balance, InitialState, TierPolicy};
pub use endpoint::{Endpoint, EndpointInfo, EndpointSnapshot, EndpointStatus};
pub use events::{Cause, HealthEvent, HealthEvents};
pub use handle::{Drain, FailoverHandle};
pub use layer::{FailoverLayer, FailoverLayerBuilder, ServerFailoverLayer, Upstream};
pub use probe::{
    DEFAULT_MAX_BODY_BYTES, HttpProbe, Probe, ProbeFn, ProbeFuture, ProbeOutcome, probe_fn,
};
pub use server::{NO_HEALTHY_ENDPOINT_TYPE, ServerMode, ServerModeFuture};
pub use service::Failover;
pub use tower_fault::{
    AttemptContext, BoxError, Class, Classify, EndpointError, EndpointId, HttpClassifier,
    RetryAfterHint, SentTo, ServedBy,
    backoff::{Backoff, Jitter},
    classify_fn,
};
