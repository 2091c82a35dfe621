//! The [`RedriveQueue`] trait and its stores.
//!
//! A queue keeps entries in three states — pending, delivered, dead — in one table, so an
//! entry's whole life (attempt history, reason, times) is in one row. Workers *claim* due entries
//! with a lease; an outcome is accepted only with the lease token, so a worker whose lease
//! expired cannot overwrite what the worker that took the entry over recorded. While a delivery
//! is in flight the worker [renews](RedriveQueue::renew_lease) its leases with the same token, so
//! a delivery that takes longer than the lease is not taken over by another worker.
//!
//! Ordering: a pending entry with an ordering key is not claimable while an older pending entry
//! (smaller id) has the same key — FIFO per key, across any number of workers.

use std::{future::Future, pin::Pin, time::Duration};

use crate::{
    QueueError,
    clock::Timestamp,
    entry::{
        AttemptRecord, Claimed, EntryId, EntryRecord, EntryState, LeaseToken, NewEntry,
        PurgeReport, QueueStats,
    },
};

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod row;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// The boxed future a queue operation returns.
pub type QueueFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueueError>> + Send + 'a>>;

/// A claim request.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Who claims (recorded as the lease owner, for inspection).
    pub worker: &'a str,
    /// The current time: entries due at or before it are claimable, and leases that ended at
    /// or before it are void.
    pub now: Timestamp,
    /// How long the lease lasts.
    pub lease: Duration,
    /// At most this many entries.
    pub limit: usize,
}

/// A durable store of queued requests.
///
/// Implemented by [`SqliteQueue`](crate::SqliteQueue) and [`PostgresQueue`](crate::PostgresQueue);
/// the layer and the worker take an `Arc<dyn RedriveQueue>`.
pub trait RedriveQueue: std::fmt::Debug + Send + Sync + 'static {
    /// Persists a pending entry. When the future resolves `Ok`, the entry is durable.
    fn enqueue(&self, entry: NewEntry) -> QueueFuture<'_, EntryId>;

    /// Persists an entry straight into the dead-letter queue (a permanent failure the layer was
    /// configured to record).
    fn enqueue_dead(&self, entry: NewEntry, reason: String) -> QueueFuture<'_, EntryId>;

    /// Whether a pending entry has this ordering key.
    fn has_pending(&self, ordering_key: &str) -> QueueFuture<'_, bool>;

    /// Claims due entries, oldest due first, at most one per ordering key.
    fn claim(&self, claim: Claim<'_>) -> QueueFuture<'_, Vec<Claimed>>;

    /// Extends the lease of a claimed entry to `until` (a lease is never shortened: the later of
    /// `until` and the current end is kept).
    ///
    /// A compare-and-set on the lease token: it succeeds only while the entry is pending and
    /// still carries `lease`. A lease that ran out but was not claimed by anyone else is still
    /// this worker's and is extended; once another worker has claimed the entry (or it was
    /// finished, requeued or purged) the renewal fails with [`QueueError::LeaseLost`] and
    /// changes nothing — a worker that lost its lease cannot take it back.
    fn renew_lease(&self, id: EntryId, lease: LeaseToken, until: Timestamp) -> QueueFuture<'_, ()>;

    /// Marks a claimed entry delivered.
    fn complete(
        &self,
        id: EntryId,
        lease: LeaseToken,
        attempt: AttemptRecord,
    ) -> QueueFuture<'_, ()>;

    /// Records a failed attempt of a claimed entry and releases it until `next`.
    fn reschedule(
        &self,
        id: EntryId,
        lease: LeaseToken,
        attempt: AttemptRecord,
        next: Timestamp,
    ) -> QueueFuture<'_, ()>;

    /// Moves a claimed entry to the dead-letter queue.
    fn dead_letter(
        &self,
        id: EntryId,
        lease: LeaseToken,
        attempt: Option<AttemptRecord>,
        reason: String,
        now: Timestamp,
    ) -> QueueFuture<'_, ()>;

    /// One entry, whatever its state.
    fn get(&self, id: EntryId) -> QueueFuture<'_, Option<EntryRecord>>;

    /// Entries in a state, by id, starting after `after`.
    fn list(
        &self,
        state: EntryState,
        after: Option<EntryId>,
        limit: usize,
    ) -> QueueFuture<'_, Vec<EntryRecord>>;

    /// Moves a dead letter back to pending, due at `now`, with a fresh schedule (its history is
    /// kept). `false` if there is no such dead letter.
    fn requeue(&self, id: EntryId, now: Timestamp) -> QueueFuture<'_, bool>;

    /// Deletes a dead letter. `false` if there is no such dead letter.
    fn purge(&self, id: EntryId) -> QueueFuture<'_, bool>;

    /// Deletes delivered entries finished before `delivered_before` and dead letters finished
    /// before `dead_before` (the janitor).
    fn purge_finished(
        &self,
        delivered_before: Timestamp,
        dead_before: Timestamp,
    ) -> QueueFuture<'_, PurgeReport>;

    /// Counts and ages.
    fn stats(&self) -> QueueFuture<'_, QueueStats>;
}
