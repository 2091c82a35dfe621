//! Typed events a program can subscribe to (see [`Redriver::subscribe`](crate::Redriver::subscribe)),
//! so that alerting does not have to scrape logs.

use std::sync::Arc;

use crate::entry::EntryId;

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
}
