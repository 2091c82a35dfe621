#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attempt;
mod body;
pub mod clock;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod codec;
pub mod entry;
pub mod error;
pub mod events;
pub mod future;
mod gateway;
mod handle;
mod layer;
mod lease;
pub mod metrics;
mod outcome;
mod panic;
pub mod queue;
mod record;
pub mod schedule;
mod service;
mod settings;
mod worker;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp, TokioClock};
pub use entry::{
    AttemptRecord, Claimed, EntryId, EntryRecord, EntryState, LeaseToken, NewEntry, PurgeReport,
    QueueStats, StoredRequest,
};
pub use error::{
    BodyError, BodyTooLarge, ConfigError, DeliveryPanicked, EnqueueFailed, QueueError,
};
pub use events::{RedriveEvent, RedriveEvents};
pub use gateway::{
    PROBLEM_BAD_BODY, PROBLEM_NOT_QUEUED, PROBLEM_TOO_LARGE, PROBLEM_UPSTREAM, REDRIVE_ENTRY_ID,
    RedriveGateway, RedriveGatewayLayer,
};
pub use layer::{DEFAULT_MAX_BODY_BYTES, OrderingKeyFn, RedriveLayer, RedriveLayerBuilder};
pub use outcome::{Deferred, Outcome};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use queue::postgres::PostgresQueue;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use queue::sqlite::SqliteQueue;
pub use queue::{Claim, QueueFuture, RedriveQueue};
pub use schedule::{Schedule, ScheduleBuilder, Tier};
pub use service::Redrive;
pub use settings::{RedriveSettings, RedriveSettingsBuilder};
/// What a user of this crate needs of `tower-fault`: the error type, and the classification
/// the settings' classifier answers with.
pub use tower_fault::{
    BoxError, Class, Classify, Delivery, HttpClassifier, SeededRng, classify_fn,
};
pub use worker::{
    DEFAULT_STORE_BACKOFF, Redriver, RedriverBuilder, RedriverHandle, Retention, RunReport,
};
