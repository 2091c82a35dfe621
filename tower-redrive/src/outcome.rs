//! What the [`Redrive`](crate::Redrive) service answers: the upstream's response, or a receipt for
//! a request kept for later delivery.

use crate::{clock::Timestamp, entry::EntryId};

/// The outcome of a call through [`Redrive`](crate::Redrive).
#[derive(Debug)]
pub enum Outcome<R> {
    /// The upstream answered with a success or a permanent failure (returned as it is).
    Answered(R),
    /// The request failed transiently and was persisted; a [`Redriver`](crate::Redriver) will
    /// deliver it later.
    Deferred(Deferred),
}

impl<R> Outcome<R> {
    /// The response, if the upstream answered.
    pub fn answered(self) -> Option<R> {
        match self {
            Outcome::Answered(r) => Some(r),
            Outcome::Deferred(_) => None,
        }
    }

    /// The receipt, if the request was deferred.
    pub fn deferred(self) -> Option<Deferred> {
        match self {
            Outcome::Answered(_) => None,
            Outcome::Deferred(d) => Some(d),
        }
    }

    /// `true` if the request was deferred.
    pub const fn is_deferred(&self) -> bool {
        matches!(self, Outcome::Deferred(_))
    }
}

/// The receipt for a persisted request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deferred {
    /// The queue entry.
    pub id: EntryId,
    /// The idempotency key every delivery of this request carries.
    pub idempotency_key: String,
    /// Why it was deferred: the transient failure (`503 Service Unavailable`, an error chain), or
    /// that an older entry with the same ordering key is still pending.
    pub cause: String,
    /// The earliest time of the next delivery.
    pub next_attempt_at: Timestamp,
}
