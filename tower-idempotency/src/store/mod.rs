//! Where records live: the [`IdempotencyStore`] trait, the in-process [`MemoryStore`] and (feature
//! `redis`) the shared `RedisStore`.
//!
//! A record goes through two states. A **claim** (in flight) holds the request's fingerprint and
//! a fencing token, and expires with its lease unless renewed. A **completed** record holds the
//! fingerprint and the [`Outcome`](crate::record::Outcome) and expires after the TTL. Every
//! write after the claim (renew, complete, release) is a compare-and-set on the fencing token.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use crate::{
    error::StoreError,
    key::{FencingToken, Fingerprint, RecordKey},
    record::CompletedRecord,
};

mod memory;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// The boxed future a store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The answer to a claim.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The key was free: this request owns it until it completes, releases, or its lease
    /// expires.
    Acquired(FencingToken),
    /// Another request holds the key.
    InFlight {
        /// The fingerprint of the request holding it.
        fingerprint: Fingerprint,
        /// How long its lease still runs, if the store knows.
        lease_remaining: Option<Duration>,
    },
    /// The key completed: replay (or refuse, if the fingerprint differs).
    Completed(Arc<CompletedRecord>),
}

/// A store of idempotency records.
///
/// Implementations must make [`claim`](IdempotencyStore::claim) atomic (one winner among
/// concurrent claims, on every server that shares the store) and make
/// [`renew`](IdempotencyStore::renew), [`complete`](IdempotencyStore::complete) and
/// [`release`](IdempotencyStore::release) compare-and-set operations on the claim's token that
/// answer `false` (and change nothing) when the token is no longer the owner.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint` and a lease, or reports who holds it.
    /// One round trip for a networked store.
    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> StoreFuture<'a, Claim>;

    /// Extends the lease of the claim `token` holds. `false` if it no longer holds it.
    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        lease: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Turns the claim `token` holds into a completed record kept for `ttl`. `false` (nothing
    /// written) if the token no longer holds the claim.
    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        record: &'a CompletedRecord,
        ttl: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Deletes the claim `token` holds, so the next request executes. `false` if it no longer
    /// holds it.
    fn release<'a>(&'a self, key: &'a RecordKey, token: FencingToken) -> StoreFuture<'a, bool>;
}

impl<T: IdempotencyStore + ?Sized> IdempotencyStore for Arc<T> {
    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> StoreFuture<'a, Claim> {
        (**self).claim(key, fingerprint, lease)
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        lease: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).renew(key, token, lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        record: &'a CompletedRecord,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).complete(key, token, record, ttl)
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: FencingToken) -> StoreFuture<'a, bool> {
        (**self).release(key, token)
    }
}
