//! Typed events a program can subscribe to (see [`Redriver::subscribe`](crate::Redriver::subscribe)),
//! so that alerting does not have to scrape logs.

use std::{sync::Arc, time::Duration};

use crate::entry::EntryId;

/// A subscription to a worker's [`RedriveEvent`]s ([`Redriver::subscribe`](crate::Redriver::subscribe)):
/// the suite's bounded subscription, in publish order; the worker never waits for it.
pub type RedriveEvents = tower_fault::events::Subscription<RedriveEvent>;

/// Something an operator may want to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedriveEvent {
    /// An entry was moved to the dead-letter queue.
    DeadLettered {
        /// The worker's instance name.
        name: Arc<str>,
        /// The entry.
        id: EntryId,
        /// Why.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The queue depth reached the configured threshold (after being below it).
    DepthAboveThreshold {
        /// The worker's instance name.
        name: Arc<str>,
        /// Pending entries.
        depth: u64,
        /// The threshold.
        threshold: u64,
    },
    /// The queue depth fell below the threshold again.
    DepthBelowThreshold {
        /// The worker's instance name.
        name: Arc<str>,
        /// Pending entries.
        depth: u64,
        /// The threshold.
        threshold: u64,
    },
    /// A store operation failed and the round stopped (emitted for every failed round).
    ///
    /// The worker delivers nothing more in the round; an outcome it could not record is
    /// recorded before it claims anything else.
    StoreFailed {
        /// The worker's instance name.
        name: Arc<str>,
        /// What failed: one of [`metrics::OPERATIONS`](crate::metrics::OPERATIONS).
        operation: &'static str,
        /// The store's error.
        error: String,
        /// Rounds in a row that failed, this one included.
        consecutive: u32,
        /// How long [`run`](crate::Redriver::run) waits before the next round: the poll
        /// interval, doubled for every further failed round in a row, up to
        /// [`store_backoff`](crate::RedriverBuilder::store_backoff).
        retry_in: Duration,
    },
    /// A round succeeded after rounds that failed on the store.
    StoreRecovered {
        /// The worker's instance name.
        name: Arc<str>,
        /// How many rounds in a row had failed.
        failed_rounds: u32,
    },
}
