//! The outcome the worker decided for a claimed entry, recording it, and the outcomes the store
//! failed to record, kept until it records them.
//!
//! An outcome is decided once, when the delivery ends, and recorded with the lease the entry was
//! claimed with. When the store fails to record it (a damaged SQLite file, PostgreSQL down),
//! the decision is kept in memory and recorded again, with the same lease, before the worker
//! claims anything else — instead of the entry coming back when its lease runs out and being
//! delivered again. The store accepts an outcome with a lease that ran out as long as no other
//! worker claimed the entry since (see [`RedriveQueue::renew_lease`]).

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
};

use crate::{
    QueueError,
    clock::Timestamp,
    entry::{AttemptRecord, EntryId, LeaseToken},
    queue::RedriveQueue,
};

/// What to record for a claimed entry.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    /// Delivered.
    Complete(AttemptRecord),
    /// Failed transiently; due again at `next`.
    Reschedule {
        attempt: AttemptRecord,
        next: Timestamp,
    },
    /// Moved to the dead-letter queue.
    DeadLetter {
        attempt: AttemptRecord,
        reason: String,
    },
}

/// The outcome decided for one claimed entry.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub(crate) id: EntryId,
    pub(crate) lease: LeaseToken,
    /// The `result` label of `redrive_deliveries_total`.
    pub(crate) result: &'static str,
    pub(crate) record: Record,
}

impl Decision {
    /// Records the outcome with the entry's lease (`finished_at` of a dead letter is `now`).
    ///
    /// # Errors
    /// [`QueueError::LeaseLost`] when another worker claimed the entry since (or it was
    /// requeued or purged), or the store's error.
    pub(crate) async fn record(
        &self,
        queue: &dyn RedriveQueue,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let (id, lease) = (self.id, self.lease);
        match &self.record {
            Record::Complete(attempt) => queue.complete(id, lease, attempt.clone()).await,
            Record::Reschedule { attempt, next } => {
                queue.reschedule(id, lease, attempt.clone(), *next).await
            }
            Record::DeadLetter { attempt, reason } => {
                queue
                    .dead_letter(id, lease, Some(attempt.clone()), reason.clone(), now)
                    .await
            }
        }
    }
}

/// Outcomes the store failed to record, oldest first, shared by a worker's clones.
///
/// Bounded without a cap: a round stops at the first outcome the store fails to record, and
/// records these before it claims anything, so each round in progress adds at most one.
#[derive(Debug, Default)]
pub(crate) struct Unrecorded {
    decisions: Mutex<VecDeque<Decision>>,
}

impl Unrecorded {
    fn with<T>(&self, f: impl FnOnce(&mut VecDeque<Decision>) -> T) -> T {
        f(&mut self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Keeps an outcome the store failed to record.
    pub(crate) fn keep(&self, decision: Decision) {
        self.with(|d| d.push_back(decision));
    }

    /// Takes the oldest outcome to record it again (a clone running its own round does not
    /// take it as well).
    pub(crate) fn take(&self) -> Option<Decision> {
        self.with(VecDeque::pop_front)
    }

    /// Puts back an outcome that failed to record again, in front.
    pub(crate) fn put_back(&self, decision: Decision) {
        self.with(|d| d.push_front(decision));
    }
}
