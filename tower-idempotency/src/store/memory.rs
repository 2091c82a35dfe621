//! The in-process store: sharded, bounded, with TTL expiry.

use std::{
    collections::HashMap,
    fmt,
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tower_fault::time::saturating_after;

use super::{Claim, IdempotencyStore, StoreFuture};
use crate::{
    error::{StoreError, StoreErrorKind},
    key::{FencingToken, Fingerprint, RecordKey},
    record::CompletedRecord,
};

/// The default number of records a [`MemoryStore`] keeps.
pub const DEFAULT_CAPACITY: usize = 100_000;

const MAX_SHARDS: usize = 64;

/// A full shard evicts down to `capacity - capacity / EVICTION_BATCH_DIVISOR` records at once
/// (see `Shard::make_room`).
const EVICTION_BATCH_DIVISOR: usize = 16;

/// An in-process store: the default, right for a single server instance.
///
/// Records live in up to 64 independently locked shards (a request locks one shard for a
/// hash-map operation; there is no global lock). The store is bounded: when a shard is full it
/// drops expired records, then the completed records closest to expiry — a sixteenth of the
/// shard at once, so the scan this takes is paid once per that many inserts, not on each; if it
/// is full of in-flight claims, the claim fails with [`StoreErrorKind::Full`] (so the outage policy
/// applies) rather than evicting a claim and risking a second execution.
///
/// So a completed key is remembered for the TTL *or* until the store has taken about
/// `capacity` newer keys, whichever comes first: 100 000 records at 100 new keys per second
/// is about 17 minutes, and a duplicate arriving later executes again. Size the capacity for
/// your traffic (new keys per second × TTL), or use the Redis store; [`MemoryStore::evicted`]
/// counts the completed records dropped before their TTL, and the first such eviction is
/// logged at WARN.
///
/// Expiry follows tokio's clock, so tests can use paused time. Clones share the records.
///
/// ```
/// use tower_idempotency::{IdempotencyLayer, MemoryStore};
///
/// let store = MemoryStore::new(10_000);
/// // Two layers (say, two routers) sharing one store.
/// let a = IdempotencyLayer::builder().store(store.clone()).build().unwrap();
/// let b = IdempotencyLayer::builder().store(store).name("admin").build().unwrap();
/// # let _ = (a, b);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    capacity: usize,
    next_token: AtomicU64,
    /// Completed records dropped before their TTL to make room.
    evicted: AtomicU64,
}

#[derive(Default)]
struct Shard {
    // Keyed by the record key's raw digest: inline (no allocation per record, nothing to chase
    // when comparing) and hashed in one 16-byte write.
    map: HashMap<Digest, Entry>,
}

/// A record key's 128-bit digest, as the map key.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digest([u8; 16]);

impl Digest {
    fn of(key: &RecordKey) -> Self {
        Self(*key.digest())
    }
}

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

struct Entry {
    expires: Instant,
    state: State,
}

enum State {
    Claimed {
        token: FencingToken,
        fingerprint: Fingerprint,
    },
    Completed(Arc<CompletedRecord>),
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .field("len", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// A store keeping at most about `capacity` records (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let shards = (capacity / 16).clamp(1, MAX_SHARDS);
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
                shard_capacity: capacity.div_ceil(shards),
                capacity,
                next_token: AtomicU64::new(1),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// How many completed records were dropped before their TTL because the store was full
    /// (their keys would execute again); see the type's documentation.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// The number of records held (including expired ones not yet swept).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether the store holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &RecordKey) -> &Mutex<Shard> {
        // Record keys are digests: their first bytes are uniformly distributed. (The first two
        // bytes are the value of the first four hex digits of the key's text.)
        let digest = key.digest();
        let prefix = u16::from_be_bytes([digest[0], digest[1]]);
        &self.inner.shards[usize::from(prefix) % self.inner.shards.len()]
    }

    fn claim_now(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let digest = Digest::of(key);
        let mut shard = lock(self.shard(key));
        let token = || FencingToken::new(self.inner.next_token.fetch_add(1, Ordering::Relaxed));
        // One lookup answers a live record and reuses an expired one's slot; only a new key
        // hashes a second time (to insert it).
        if let Some(entry) = shard.map.get_mut(&digest) {
            if entry.expires > now {
                return Ok(match &entry.state {
                    State::Claimed { fingerprint, .. } => Claim::InFlight {
                        fingerprint: *fingerprint,
                        lease_remaining: Some(entry.expires - now),
                    },
                    State::Completed(record) => Claim::Completed(Arc::clone(record)),
                });
            }
            let token = token();
            *entry = Entry::claim(now, lease, token, *fingerprint);
            return Ok(Claim::Acquired(token));
        }
        if shard.map.len() >= self.inner.shard_capacity {
            let evicted = shard.make_room(now, self.inner.shard_capacity)?;
            if evicted > 0 {
                let before = self
                    .inner
                    .evicted
                    .fetch_add(evicted as u64, Ordering::Relaxed);
                if before == 0 {
                    tracing::warn!(
                        capacity = self.inner.capacity,
                        evicted,
                        "idempotency memory store is full: completed records are dropped before \
                         their TTL, and their keys would execute again; raise the capacity or \
                         use a shared store"
                    );
                }
            }
        }
        let token = token();
        shard
            .map
            .insert(digest, Entry::claim(now, lease, token, *fingerprint));
        Ok(Claim::Acquired(token))
    }

    /// Runs `f` on the live claim `token` holds (one lookup); `false` if there is none.
    fn with_claim(
        &self,
        key: &RecordKey,
        token: FencingToken,
        f: impl FnOnce(&mut Entry, Instant),
    ) -> bool {
        let now = Instant::now();
        let mut shard = lock(self.shard(key));
        match shard.map.get_mut(&Digest::of(key)) {
            Some(entry) if entry.is_claimed_by(token, now) => {
                f(entry, now);
                true
            }
            _ => false,
        }
    }
}

impl Entry {
    fn is_claimed_by(&self, token: FencingToken, now: Instant) -> bool {
        matches!(self.state, State::Claimed { token: t, .. } if t == token) && self.expires > now
    }

    fn claim(now: Instant, lease: Duration, token: FencingToken, fingerprint: Fingerprint) -> Self {
        Entry {
            expires: saturating_after(now, lease),
            state: State::Claimed { token, fingerprint },
        }
    }
}

impl Shard {
    /// Frees room for an insert into a full shard: drops expired records, then, if the shard is
    /// still above its low-water mark, the completed records closest to expiry down to it.
    ///
    /// Both steps scan the shard (at most `capacity / shards` records) under its lock, so they
    /// free a batch (`1 / EVICTION_BATCH_DIVISOR` of the shard) rather than one slot: a store at
    /// its bound (the steady state of a busy server with a long TTL) pays the scan once per
    /// batch of inserts, not on every insert (freeing one slot per scan cost ~60 µs per first
    /// request once a 100 000-record store was full). Sweeping here keeps the store free of a
    /// background task. In-flight claims are never evicted.
    /// Returns how many live completed records it evicted.
    fn make_room(&mut self, now: Instant, capacity: usize) -> Result<usize, StoreError> {
        let low_water = capacity - (capacity / EVICTION_BATCH_DIVISOR).max(1);
        // One pass: drop expired records, and note the expiry of every completed one. Sized up
        // front: growing it by doubling meant a dozen reallocations of up to a shard's worth.
        let mut completed = Vec::with_capacity(self.map.len());
        self.map.retain(|_, e| {
            let live = e.expires > now;
            if live && matches!(e.state, State::Completed(_)) {
                completed.push(e.expires);
            }
            live
        });
        let excess = self.map.len().saturating_sub(low_water);
        let before = self.map.len();
        if excess > 0 && !completed.is_empty() {
            self.evict_earliest_completed(&mut completed, excess);
        }
        if self.map.len() < capacity {
            Ok(before - self.map.len())
        } else {
            Err(StoreError::from_kind(StoreErrorKind::Full))
        }
    }

    /// Removes the `excess` completed records (or all of them, if fewer) closest to expiry;
    /// `expiries` holds the expiry of every completed record.
    fn evict_earliest_completed(&mut self, expiries: &mut [Instant], excess: usize) {
        let n = excess.min(expiries.len());
        // The n-th earliest expiry: everything strictly before it goes, then ties at it until
        // n records are gone (ties are common under a paused clock).
        let (before, cutoff, _) = expiries.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let mut ties = n - before.iter().filter(|&&e| e < cutoff).count();
        self.map.retain(|_, e| {
            if !matches!(e.state, State::Completed(_)) || e.expires > cutoff {
                return true;
            }
            if e.expires < cutoff {
                return false;
            }
            if ties > 0 {
                ties -= 1;
                return false;
            }
            true
        });
    }
}

fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> StoreFuture<'a, Claim> {
        let result = self.claim_now(key, fingerprint, lease);
        Box::pin(std::future::ready(result))
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        lease: Duration,
    ) -> StoreFuture<'a, bool> {
        let ok = self.with_claim(key, token, |entry, now| {
            entry.expires = saturating_after(now, lease);
        });
        Box::pin(std::future::ready(Ok(ok)))
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        record: &'a CompletedRecord,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        // The record is cloned once, into the `Arc` replays share (the trait lends it).
        let ok = self.with_claim(key, token, |entry, now| {
            *entry = Entry {
                expires: saturating_after(now, ttl),
                state: State::Completed(Arc::new(record.clone())),
            };
        });
        Box::pin(std::future::ready(Ok(ok)))
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: FencingToken) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let digest = Digest::of(key);
        let mut shard = lock(self.shard(key));
        let owned = shard
            .map
            .get(&digest)
            .is_some_and(|e| e.is_claimed_by(token, now));
        if owned {
            shard.map.remove(&digest);
        }
        Box::pin(std::future::ready(Ok(owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Outcome;
    use proptest::prelude::*;
    use tower_fault::IdempotencyKey;

    fn key(i: u16) -> RecordKey {
        RecordKey::new(
            &crate::Scope::anonymous(),
            &IdempotencyKey::parse_str(&format!("k{i}")).unwrap(),
        )
    }

    fn d(i: u16) -> Digest {
        Digest::of(&key(i))
    }

    fn done() -> CompletedRecord {
        CompletedRecord {
            fingerprint: Fingerprint::from_bytes([0; 32]),
            outcome: Outcome::TooLarge {
                status: http::StatusCode::OK,
                limit: 1,
            },
        }
    }

    fn now<T>(f: StoreFuture<'_, T>) -> Result<T, StoreError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn completed(expires: Instant) -> Entry {
        Entry {
            expires,
            state: State::Completed(Arc::new(done())),
        }
    }

    fn claimed(expires: Instant) -> Entry {
        Entry {
            expires,
            state: State::Claimed {
                token: FencingToken::new(1),
                fingerprint: Fingerprint::from_bytes([0; 32]),
            },
        }
    }

    /// A full store counts the completed records it drops before their TTL.
    #[test]
    fn evictions_before_the_ttl_are_counted() {
        let store = MemoryStore::new(16); // one shard of 16
        let fingerprint = Fingerprint::from_bytes([0; 32]);
        let lease = Duration::from_secs(60);
        for i in 0..16 {
            let Claim::Acquired(token) = now(store.claim(&key(i), &fingerprint, lease)).unwrap()
            else {
                panic!("fresh key {i}");
            };
            now(store.complete(&key(i), token, &done(), Duration::from_secs(3600))).unwrap();
        }
        assert_eq!(store.evicted(), 0);
        // The 17th key finds the shard full of live completed records: one batch goes.
        now(store.claim(&key(16), &fingerprint, lease)).unwrap();
        assert_eq!(store.evicted(), 1);
        assert_eq!(store.len(), 16);
    }

    /// A full shard frees a batch (down to its low-water mark), taking the completed records
    /// closest to expiry and never a claim, so the next inserts find room without a scan.
    #[test]
    fn full_shard_evicts_a_batch_of_the_earliest_completed() {
        let capacity = 64; // batch: 64 / 16 = 4
        let now = Instant::now();
        let mut shard = Shard::default();
        // Claims expiring first must survive; completed records expire at +100 s .. +159 s.
        for i in 0..4 {
            shard
                .map
                .insert(d(i), claimed(now + Duration::from_secs(1)));
        }
        for i in 4..64 {
            let expires = now + Duration::from_secs(100 + u64::from(i));
            shard.map.insert(d(i), completed(expires));
        }
        assert_eq!(
            shard.make_room(now, capacity).unwrap(),
            4,
            "live completed records evicted"
        );
        assert_eq!(shard.map.len(), capacity - 4);
        for i in 0..4 {
            assert!(shard.map.contains_key(&d(i)), "claim {i} evicted");
        }
        for i in 4..8 {
            assert!(!shard.map.contains_key(&d(i)), "record {i} kept");
        }
        for i in 8..64 {
            assert!(shard.map.contains_key(&d(i)), "record {i} evicted");
        }
    }

    /// Under a paused clock many records share one expiry: exactly a batch goes, not all ties.
    #[test]
    fn eviction_takes_exactly_a_batch_among_ties() {
        let capacity = 64;
        let now = Instant::now();
        let mut shard = Shard::default();
        shard
            .map
            .insert(d(0), completed(now + Duration::from_secs(5)));
        for i in 1..64 {
            shard
                .map
                .insert(d(i), completed(now + Duration::from_secs(10)));
        }
        shard.make_room(now, capacity).unwrap();
        assert_eq!(shard.map.len(), capacity - 4);
        assert!(
            !shard.map.contains_key(&d(0)),
            "the earliest record is evicted first"
        );
    }

    /// Expired records are swept first; when they free enough, nothing live is evicted.
    #[test]
    fn expired_records_go_before_live_ones() {
        let capacity = 64;
        let now = Instant::now();
        let mut shard = Shard::default();
        for i in 0..64 {
            let expires = if i < 10 {
                now // expired: `expires > now` is false
            } else {
                now + Duration::from_secs(u64::from(i))
            };
            shard.map.insert(d(i), completed(expires));
        }
        shard.make_room(now, capacity).unwrap();
        assert_eq!(shard.map.len(), 54);
        assert!((10..64).all(|i| shard.map.contains_key(&d(i))));
    }

    /// A shard full of claims refuses (the outage policy applies) and keeps every claim.
    #[test]
    fn shard_full_of_claims_is_full() {
        let capacity = 64;
        let now = Instant::now();
        let mut shard = Shard::default();
        for i in 0..63 {
            shard
                .map
                .insert(d(i), claimed(now + Duration::from_secs(60)));
        }
        shard
            .map
            .insert(d(63), completed(now + Duration::from_secs(1)));
        // One completed record is all it can free: enough for this insert.
        shard.make_room(now, capacity).unwrap();
        assert_eq!(shard.map.len(), 63);
        shard
            .map
            .insert(d(64), claimed(now + Duration::from_secs(60)));
        let err = shard.make_room(now, capacity).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Full);
        assert_eq!(shard.map.len(), 64);
    }

    proptest! {
        /// Whatever the traffic, the store stays within its bound and never evicts a live claim:
        /// a key claimed and not finished is always still claimed.
        #[test]
        fn bounded_and_never_evicts_claims(
            capacity in 1usize..40,
            ops in proptest::collection::vec((0u16..64, any::<bool>()), 1..300),
        ) {
            let store = MemoryStore::new(capacity);
            let fp = Fingerprint::from_bytes([0; 32]);
            let lease = Duration::from_secs(600);
            let mut live: HashMap<u16, FencingToken> = HashMap::new();
            for (k, finish) in ops {
                match now(store.claim(&key(k), &fp, lease)) {
                    Ok(Claim::Acquired(token)) => {
                        if finish {
                            prop_assert!(now(store.complete(&key(k), token, &done(), lease)).unwrap());
                        } else {
                            live.insert(k, token);
                        }
                    }
                    Ok(Claim::InFlight { .. }) => prop_assert!(live.contains_key(&k)),
                    Ok(Claim::Completed(_)) => prop_assert!(!live.contains_key(&k)),
                    Err(e) => prop_assert_eq!(e.kind(), StoreErrorKind::Full),
                }
                prop_assert!(store.len() <= store.inner.shard_capacity * store.inner.shards.len());
                prop_assert!(store.len() <= capacity + store.inner.shards.len());
            }
            for (k, token) in live {
                prop_assert!(now(store.renew(&key(k), token, lease)).unwrap(), "claim {} was evicted", k);
            }
        }
    }
}
