//! The in-process store: sharded, bounded by records and by bytes, with TTL expiry.

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

use http::{HeaderName, HeaderValue};
use tokio::time::Instant;
use tower_fault::time::saturating_after;

use super::{Claim, IdempotencyStore, StoreFuture};
use crate::{
    error::{ConfigError, StoreError, StoreErrorKind, config_error},
    key::{FencingToken, Fingerprint, RecordKey},
    record::{CompletedRecord, Outcome},
};

const MAX_SHARDS: usize = 64;

/// The shard count leaves each shard at least this much of the byte budget (four times the
/// layer's default response limit), so a shard holds several of the largest responses the
/// layer keeps by default; a smaller budget gets fewer shards.
const MIN_SHARD_BYTES: usize = 4 * 1024 * 1024;

/// The smallest byte budget [`MemoryStore::with_limits`] accepts: room for about 250 records
/// with small responses. Less would refuse claims (503) for want of room, not for traffic.
const MIN_MAX_BYTES: usize = 64 * 1024;

/// A full shard evicts down to `capacity - capacity / EVICTION_BATCH_DIVISOR` records (and as
/// far under its byte budget) at once (see `Shard::make_room`).
const EVICTION_BATCH_DIVISOR: usize = 16;

/// An in-process store: the default, right for a single server instance.
///
/// Records live in up to 64 independently locked shards (a request locks one shard for a
/// hash-map operation; there is no global lock). The store is bounded twice, each bound split
/// evenly between the shards:
///
/// * by **records**: [`MemoryStore::DEFAULT_CAPACITY`] (100 000) unless given;
/// * by **bytes**: [`MemoryStore::DEFAULT_MAX_BYTES`] (256 MiB) unless given. A record weighs
///   what it stores (body, header and trailer names and values) plus a fixed amount for its
///   entry; a claim weighs that fixed amount. The default is a decision about a server's
///   memory, not about traffic: at the layer's 1 MiB response limit, the record bound alone
///   would allow about 100 GiB.
///
/// When a shard is over either bound it drops expired records, then the completed records
/// closest to expiry — a sixteenth of the shard at once (and as far under its byte budget), so
/// the scan this takes is paid once per that many inserts, not on each. A live claim is never
/// evicted: a shard full of claims refuses the next claim with [`StoreErrorKind::Full`], which
/// the layer answers like an outage (503 when failing closed) and counts as
/// `idempotency_requests_total{result="store_full"}`, rather than risk a second execution. A
/// single response heavier than a shard's byte budget (`max_bytes / shards`, 4 MiB by default)
/// is kept as a record that it ran (`Outcome::TooLarge`): its replays get 409, never a second
/// execution.
///
/// So a completed key is remembered for the TTL *or* until the store has taken about
/// `capacity` newer keys, or their bytes, whichever comes first: 100 000 records at 100 new
/// keys per second is about 17 minutes, and a duplicate arriving later executes again. Size
/// the bounds for your traffic (new keys per second × TTL × response size), or use the Redis
/// store; [`MemoryStore::evicted`] and the `idempotency_memory_evictions_total` counter count
/// the completed records dropped before their TTL, and the first such eviction is logged at
/// WARN.
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
///
/// // 50 000 records or 64 MiB, whichever fills first.
/// let small = MemoryStore::with_limits(50_000, 64 * 1024 * 1024)?;
/// assert_eq!(small.max_bytes(), 64 * 1024 * 1024);
/// # Ok::<_, tower_idempotency::error::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    limits: Limits,
    capacity: usize,
    max_bytes: usize,
    next_token: AtomicU64,
    /// Completed records dropped before their TTL to make room.
    evicted: AtomicU64,
}

/// One shard's bounds and the low-water marks a full shard evicts down to.
#[derive(Debug, Clone, Copy)]
struct Limits {
    records: usize,
    bytes: usize,
    records_low: usize,
    bytes_low: usize,
}

impl Limits {
    fn new(records: usize, bytes: usize) -> Self {
        Self {
            records,
            bytes,
            records_low: records - (records / EVICTION_BATCH_DIVISOR).max(1),
            bytes_low: bytes - bytes / EVICTION_BATCH_DIVISOR,
        }
    }
}

#[derive(Default)]
struct Shard {
    // Keyed by the record key's raw digest: inline (no allocation per record, nothing to chase
    // when comparing) and hashed in one 16-byte write.
    map: HashMap<Digest, Entry>,
    /// The weight of every entry in `map`.
    bytes: usize,
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

/// What every entry weighs: its map slot and a completed record's shared allocation. A claim
/// is charged this too (it becomes a completed record), so turning a claim into a record that
/// stores nothing more never grows a shard.
const FIXED_WEIGHT: usize = size_of::<(Digest, Entry)>() + 2 * size_of::<usize>() // the `Arc`'s counts
    + size_of::<CompletedRecord>();

/// What one stored header or trailer weighs besides its name and value bytes.
const FIELD_WEIGHT: usize = size_of::<(HeaderName, HeaderValue)>();

/// How much memory a completed record holds, approximately: what it stores plus its fixed cost.
fn weight(record: &CompletedRecord) -> usize {
    let fields = |fields: &[(HeaderName, HeaderValue)]| -> usize {
        fields
            .iter()
            .map(|(name, value)| FIELD_WEIGHT + name.as_str().len() + value.len())
            .sum()
    };
    FIXED_WEIGHT
        + match &record.outcome {
            Outcome::Response(stored) => {
                stored.body.len() + fields(&stored.headers) + fields(&stored.trailers)
            }
            Outcome::TooLarge { .. } | Outcome::BodyFailed { .. } | Outcome::TooSlow { .. } => 0,
        }
}

impl Entry {
    fn weight(&self) -> usize {
        match &self.state {
            State::Claimed { .. } => FIXED_WEIGHT,
            State::Completed(record) => weight(record),
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.inner.capacity)
            .field("max_bytes", &self.inner.max_bytes)
            .field("shards", &self.inner.shards.len())
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// The default bound on records: 100 000.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// The default bound on bytes: 256 MiB — a few hundred MiB is what a server can set aside
    /// for deduplication without its operator planning for it; about 250 records of the
    /// layer's largest kept response (1 MiB), or the full 100 000 records of responses up to
    /// about 2 KiB.
    pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

    /// A store keeping at most about `capacity` records (at least 1) and
    /// [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity.max(1), Self::DEFAULT_MAX_BYTES)
    }

    /// A store keeping at most about `capacity` records and `max_bytes` bytes of them, whichever
    /// fills first.
    ///
    /// # Errors
    /// A [`ConfigError`] if `capacity` is zero or `max_bytes` is under 64 KiB.
    pub fn with_limits(capacity: usize, max_bytes: usize) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(config_error("MemoryStore capacity must be at least 1"));
        }
        if max_bytes < MIN_MAX_BYTES {
            return Err(config_error(format!(
                "MemoryStore max_bytes must be at least {MIN_MAX_BYTES} (got {max_bytes})"
            )));
        }
        Ok(Self::build(capacity, max_bytes))
    }

    fn build(capacity: usize, max_bytes: usize) -> Self {
        let shards = (capacity / 16)
            .min(max_bytes / MIN_SHARD_BYTES)
            .clamp(1, MAX_SHARDS);
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
                limits: Limits::new(capacity.div_ceil(shards), max_bytes / shards),
                capacity,
                max_bytes,
                next_token: AtomicU64::new(1),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// How many completed records were dropped before their TTL because the store was full, by
    /// records or by bytes (their keys would execute again); see the type's documentation.
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

    /// The weight of the records held, in bytes (see the type's documentation): never more
    /// than [`max_bytes`](Self::max_bytes).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).bytes).sum()
    }

    /// The bound on [`bytes`](Self::bytes).
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.inner.max_bytes
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
            let freed = entry.weight() - FIXED_WEIGHT;
            let token = token();
            *entry = Entry::claim(now, lease, token, *fingerprint);
            shard.bytes -= freed;
            return Ok(Claim::Acquired(token));
        }
        let limits = &self.inner.limits;
        if shard.map.len() >= limits.records || shard.bytes + FIXED_WEIGHT > limits.bytes {
            let evicted = shard.make_room(now, limits, true, FIXED_WEIGHT);
            self.count_evictions(evicted);
            if shard.map.len() >= limits.records || shard.bytes + FIXED_WEIGHT > limits.bytes {
                return Err(StoreError::from_kind(StoreErrorKind::Full));
            }
        }
        let token = token();
        shard
            .map
            .insert(digest, Entry::claim(now, lease, token, *fingerprint));
        shard.bytes += FIXED_WEIGHT;
        Ok(Claim::Acquired(token))
    }

    /// Turns the live claim `token` holds into `record`, making room for its weight; `false`
    /// if there is no such claim.
    fn complete_now(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: &CompletedRecord,
        ttl: Duration,
    ) -> bool {
        let now = Instant::now();
        let digest = Digest::of(key);
        let mut guard = lock(self.shard(key));
        let shard = &mut *guard;
        let limits = &self.inner.limits;
        // The claim's fixed weight is counted already; a record adds what it stores.
        let mut grows = weight(record) - FIXED_WEIGHT;
        let mut kept = None;
        if shard.bytes + grows > limits.bytes {
            let owned = shard
                .map
                .get(&digest)
                .is_some_and(|e| e.is_claimed_by(token, now));
            if !owned {
                return false;
            }
            // The claim being completed is not a candidate: claims are never evicted.
            let evicted = shard.make_room(now, limits, false, grows);
            self.count_evictions(evicted);
            if shard.bytes + grows > limits.bytes {
                kept = Some(too_heavy(key, record, grows, limits.bytes));
                grows = 0;
            }
        }
        // One lookup on the common path (the record fits): the ownership check and the write.
        match shard.map.get_mut(&digest) {
            Some(entry) if entry.is_claimed_by(token, now) => {
                // The record is cloned once, into the `Arc` replays share (the trait lends it).
                let kept = kept.unwrap_or_else(|| Arc::new(record.clone()));
                *entry = Entry {
                    expires: saturating_after(now, ttl),
                    state: State::Completed(kept),
                };
                shard.bytes += grows;
                true
            }
            _ => false,
        }
    }

    fn count_evictions(&self, evicted: usize) {
        if evicted == 0 {
            return;
        }
        crate::telemetry::evictions(evicted as u64);
        let before = self
            .inner
            .evicted
            .fetch_add(evicted as u64, Ordering::Relaxed);
        if before == 0 {
            tracing::warn!(
                capacity = self.inner.capacity,
                max_bytes = self.inner.max_bytes,
                evicted,
                "idempotency memory store is full: completed records are dropped before their \
                 TTL, and their keys would execute again; raise its bounds or use a shared store"
            );
        }
    }
}

/// What is kept of a record heavier than a shard can hold: that it ran, which weighs no more
/// than its claim did. Only a stored response can be that heavy.
fn too_heavy(
    key: &RecordKey,
    record: &CompletedRecord,
    grows: usize,
    budget: usize,
) -> Arc<CompletedRecord> {
    let status = match &record.outcome {
        Outcome::Response(stored) => stored.status,
        Outcome::TooLarge { status, .. }
        | Outcome::BodyFailed { status }
        | Outcome::TooSlow { status, .. } => *status,
    };
    tracing::warn!(
        key = key.short(),
        bytes = grows + FIXED_WEIGHT,
        shard_budget = budget,
        "response too heavy for the idempotency memory store; replays will be refused"
    );
    Arc::new(CompletedRecord {
        fingerprint: record.fingerprint,
        outcome: Outcome::TooLarge {
            status,
            limit: budget as u64,
        },
    })
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
    /// Frees room in a shard over one of its bounds: drops expired records, then the completed
    /// records closest to expiry until the shard is at its low-water marks — for records when
    /// `inserting` a new entry, and for bytes with `incoming` more to come. A live claim is
    /// never evicted. Returns how many live completed records it evicted.
    ///
    /// Both steps scan the shard (at most `capacity / shards` records) under its lock, so they
    /// free a batch (`1 / EVICTION_BATCH_DIVISOR` of the shard) rather than one slot: a store at
    /// its bound (the steady state of a busy server with a long TTL) pays the scan once per
    /// batch of inserts, not on every insert, where a scan of a full 100 000-record store costs
    /// tens of microseconds. Sweeping here keeps the store free of a background task.
    fn make_room(
        &mut self,
        now: Instant,
        limits: &Limits,
        inserting: bool,
        incoming: usize,
    ) -> usize {
        // Weights are read (a walk over each record's headers) only when bytes may be short:
        // freeing expired records only lowers them.
        let bytes_short = self.bytes + incoming > limits.bytes_low;
        let completed = self.sweep_expired(now, bytes_short);
        let records_over = if inserting {
            self.map.len().saturating_sub(limits.records_low)
        } else {
            0
        };
        let bytes_over = (self.bytes + incoming).saturating_sub(limits.bytes_low);
        if (records_over == 0 && bytes_over == 0) || completed.expiries.is_empty() {
            return 0;
        }
        let (cutoff, ties) = completed.cutoff(records_over, bytes_over);
        self.evict_completed(cutoff, ties)
    }

    /// One pass: drops expired records and notes the expiry (and, with `weighed`, the weight)
    /// of every completed one.
    fn sweep_expired(&mut self, now: Instant, weighed: bool) -> Completed {
        // Sized up front: a shard's worth of pushes would otherwise reallocate a dozen times.
        // Two lists, not one of pairs: the common case (records short, not bytes) selects
        // among expiries alone.
        let mut completed = Completed {
            expiries: Vec::with_capacity(self.map.len()),
            weights: Vec::with_capacity(if weighed { self.map.len() } else { 0 }),
        };
        let mut expired = 0;
        self.map.retain(|_, e| {
            if e.expires <= now {
                expired += e.weight();
                return false;
            }
            if matches!(e.state, State::Completed(_)) {
                completed.expiries.push(e.expires);
                if weighed {
                    completed.weights.push(e.weight());
                }
            }
            true
        });
        self.bytes -= expired;
        completed
    }

    /// Evicts the completed records expiring before `cutoff`, and `ties` of those expiring at
    /// it. Returns how many it evicted.
    fn evict_completed(&mut self, cutoff: Instant, mut ties: usize) -> usize {
        let (mut evicted, mut freed) = (0, 0);
        self.map.retain(|_, e| {
            if !matches!(e.state, State::Completed(_)) || e.expires > cutoff {
                return true;
            }
            if e.expires == cutoff {
                if ties == 0 {
                    return true;
                }
                ties -= 1;
            }
            freed += e.weight();
            evicted += 1;
            false
        });
        self.bytes -= freed;
        evicted
    }
}

/// The live completed records of a shard: their expiries, and their weights when bytes are
/// short (in the same order).
struct Completed {
    expiries: Vec<Instant>,
    weights: Vec<usize>,
}

impl Completed {
    /// Which records go to free `records_over` records and `bytes_over` bytes: the earliest to
    /// expire, those before a cutoff and `ties` of those at it (ties are common under a paused
    /// clock). Needs at least one record.
    fn cutoff(mut self, records_over: usize, bytes_over: usize) -> (Instant, usize) {
        if bytes_over == 0 {
            // Just the first `records_over`: a selection, linear.
            let n = records_over.min(self.expiries.len());
            let (before, cutoff, _) = self.expiries.select_nth_unstable(n - 1);
            let cutoff = *cutoff;
            return (cutoff, n - before.iter().filter(|&&e| e < cutoff).count());
        }
        // In order until enough bytes are freed: a sort. Every record at the last expiry goes
        // (which of those the count included is not known, and their weights differ).
        let mut completed: Vec<(Instant, usize)> =
            self.expiries.into_iter().zip(self.weights).collect();
        completed.sort_unstable_by_key(|c| c.0);
        let (mut n, mut freed) = (0, 0);
        while n < completed.len() && (n < records_over || freed < bytes_over) {
            freed += completed[n].1;
            n += 1;
        }
        (completed[n - 1].0, usize::MAX)
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
        let now = Instant::now();
        let mut shard = lock(self.shard(key));
        let ok = match shard.map.get_mut(&Digest::of(key)) {
            Some(entry) if entry.is_claimed_by(token, now) => {
                entry.expires = saturating_after(now, lease);
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(ok)))
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        record: &'a CompletedRecord,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let ok = self.complete_now(key, token, record, ttl);
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
            shard.bytes -= FIXED_WEIGHT;
        }
        Box::pin(std::future::ready(Ok(owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Outcome, StoredResponse};
    use bytes::Bytes;
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

    /// A stored response with a body of `len` bytes and one header.
    fn response(len: usize) -> CompletedRecord {
        CompletedRecord {
            fingerprint: Fingerprint::from_bytes([0; 32]),
            outcome: Outcome::Response(StoredResponse {
                status: http::StatusCode::CREATED,
                headers: vec![(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                )],
                body: Bytes::from(vec![b'x'; len]),
                trailers: vec![],
            }),
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

    impl Shard {
        fn put(&mut self, digest: Digest, entry: Entry) {
            self.bytes += entry.weight();
            self.map.insert(digest, entry);
        }

        fn weighed(&self) -> usize {
            self.map.values().map(Entry::weight).sum()
        }
    }

    /// Bounds of `records` and plenty of bytes.
    fn by_records(records: usize) -> Limits {
        Limits::new(records, usize::MAX / 2)
    }

    fn acquire(store: &MemoryStore, i: u16) -> FencingToken {
        let fp = Fingerprint::from_bytes([0; 32]);
        match now(store.claim(&key(i), &fp, Duration::from_secs(60))).unwrap() {
            Claim::Acquired(token) => token,
            other => panic!("fresh key {i}: {other:?}"),
        }
    }

    /// A full store counts the completed records it drops before their TTL.
    #[test]
    fn evictions_before_the_ttl_are_counted() {
        let store = MemoryStore::new(16); // one shard of 16
        for i in 0..16 {
            let token = acquire(&store, i);
            now(store.complete(&key(i), token, &done(), Duration::from_secs(3600))).unwrap();
        }
        assert_eq!(store.evicted(), 0);
        // The 17th key finds the shard full of live completed records: one batch goes.
        acquire(&store, 16);
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
            shard.put(d(i), claimed(now + Duration::from_secs(1)));
        }
        for i in 4..64 {
            let expires = now + Duration::from_secs(100 + u64::from(i));
            shard.put(d(i), completed(expires));
        }
        let limits = by_records(capacity);
        assert_eq!(
            shard.make_room(now, &limits, true, FIXED_WEIGHT),
            4,
            "live completed records evicted"
        );
        assert_eq!(shard.map.len(), capacity - 4);
        assert_eq!(shard.bytes, shard.weighed());
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
        shard.put(d(0), completed(now + Duration::from_secs(5)));
        for i in 1..64 {
            shard.put(d(i), completed(now + Duration::from_secs(10)));
        }
        shard.make_room(now, &by_records(capacity), true, FIXED_WEIGHT);
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
            shard.put(d(i), completed(expires));
        }
        assert_eq!(
            shard.make_room(now, &by_records(capacity), true, FIXED_WEIGHT),
            0
        );
        assert_eq!(shard.map.len(), 54);
        assert_eq!(shard.bytes, shard.weighed());
        assert!((10..64).all(|i| shard.map.contains_key(&d(i))));
    }

    /// A shard full of claims frees nothing more (the claim is refused) and keeps every claim.
    #[test]
    fn shard_full_of_claims_is_full() {
        let capacity = 64;
        let now = Instant::now();
        let mut shard = Shard::default();
        for i in 0..63 {
            shard.put(d(i), claimed(now + Duration::from_secs(60)));
        }
        shard.put(d(63), completed(now + Duration::from_secs(1)));
        // One completed record is all it can free: enough for this insert.
        let limits = by_records(capacity);
        assert_eq!(shard.make_room(now, &limits, true, FIXED_WEIGHT), 1);
        assert_eq!(shard.map.len(), 63);
        shard.put(d(64), claimed(now + Duration::from_secs(60)));
        assert_eq!(shard.make_room(now, &limits, true, FIXED_WEIGHT), 0);
        assert_eq!(shard.map.len(), 64, "a claim was evicted");
    }

    /// Over its byte budget, a shard drops the completed records closest to expiry until it is
    /// under the low-water mark with the incoming bytes, however few records it holds.
    #[test]
    fn a_shard_over_its_byte_budget_evicts_the_earliest_until_it_fits() {
        let now = Instant::now();
        let mut shard = Shard::default();
        let heavy = |expires| Entry {
            expires,
            state: State::Completed(Arc::new(response(100_000))),
        };
        for i in 0..10 {
            shard.put(d(i), heavy(now + Duration::from_secs(100 + u64::from(i))));
        }
        shard.put(d(10), claimed(now + Duration::from_secs(1)));
        let limits = Limits::new(1000, 1_000_000);
        let incoming = 100_000;
        assert!(shard.bytes + incoming > limits.bytes);
        let evicted = shard.make_room(now, &limits, false, incoming);
        assert!(
            shard.bytes + incoming <= limits.bytes_low,
            "{} bytes",
            shard.bytes
        );
        assert_eq!(shard.bytes, shard.weighed());
        assert_eq!(evicted, 2);
        assert!(!shard.map.contains_key(&d(0)) && !shard.map.contains_key(&d(1)));
        assert!((2..11).all(|i| shard.map.contains_key(&d(i))));
    }

    /// Large responses fill the byte budget long before the record bound: the store evicts to
    /// stay within it and counts what it evicted; the latest records are the ones kept.
    #[test]
    fn large_responses_are_bounded_by_bytes() {
        let store = MemoryStore::with_limits(1000, 1024 * 1024).unwrap(); // one shard
        let mib = 1024 * 1024;
        for i in 0..40 {
            let token = acquire(&store, i);
            let kept =
                now(store.complete(&key(i), token, &response(100_000), Duration::from_secs(60)));
            assert!(kept.unwrap());
            assert!(store.bytes() <= mib, "{} bytes after {i}", store.bytes());
        }
        assert!(
            store.len() < 11,
            "{} records of 100 kB in 1 MiB",
            store.len()
        );
        assert_eq!(store.evicted() as usize, 40 - store.len());
        let fp = Fingerprint::from_bytes([0; 32]);
        let latest = now(store.claim(&key(39), &fp, Duration::from_secs(60))).unwrap();
        assert!(matches!(latest, Claim::Completed(_)), "{latest:?}");
    }

    /// A response heavier than a whole shard's budget is kept as a record that it ran (its
    /// replays are refused), not stored, and not dropped either.
    #[test]
    fn a_response_heavier_than_a_shard_is_kept_as_not_replayable() {
        let store = MemoryStore::with_limits(1000, 64 * 1024).unwrap();
        let token = acquire(&store, 1);
        let kept = now(store.complete(&key(1), token, &response(100_000), Duration::from_secs(60)));
        assert!(kept.unwrap());
        assert!(store.bytes() <= store.max_bytes());
        let fp = Fingerprint::from_bytes([0; 32]);
        match now(store.claim(&key(1), &fp, Duration::from_secs(60))).unwrap() {
            Claim::Completed(record) => assert!(
                matches!(
                    record.outcome,
                    Outcome::TooLarge { status, limit } if status == 201 && limit == 64 * 1024
                ),
                "{record:?}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nonsense_limits_are_refused() {
        let err = MemoryStore::with_limits(0, 1 << 30).unwrap_err();
        assert!(err.message().contains("capacity"), "{err}");
        let err = MemoryStore::with_limits(10, 1000).unwrap_err();
        assert!(err.message().contains("max_bytes"), "{err}");
        let store = MemoryStore::default();
        assert_eq!(store.max_bytes(), MemoryStore::DEFAULT_MAX_BYTES);
        assert_eq!(store.inner.shards.len(), 64);
        assert_eq!(store.inner.limits.bytes, 4 * 1024 * 1024);
    }

    proptest! {
        /// Whatever the traffic and response sizes, the store stays within both bounds, its
        /// byte count is the weight of what it holds, and it never evicts a live claim: a key
        /// claimed and not finished is always still claimed.
        #[test]
        fn bounded_and_never_evicts_claims(
            capacity in 1usize..40,
            max_kib in 64usize..200,
            ops in proptest::collection::vec((0u16..64, any::<bool>(), 0usize..40_000), 1..300),
        ) {
            let max_bytes = max_kib * 1024;
            let store = MemoryStore::with_limits(capacity, max_bytes).unwrap();
            let fp = Fingerprint::from_bytes([0; 32]);
            let lease = Duration::from_secs(600);
            let mut live: HashMap<u16, FencingToken> = HashMap::new();
            for (k, finish, len) in ops {
                match now(store.claim(&key(k), &fp, lease)) {
                    Ok(Claim::Acquired(token)) => {
                        if finish {
                            let record = response(len);
                            prop_assert!(now(store.complete(&key(k), token, &record, lease)).unwrap());
                        } else {
                            live.insert(k, token);
                        }
                    }
                    Ok(Claim::InFlight { .. }) => prop_assert!(live.contains_key(&k)),
                    Ok(Claim::Completed(_)) => prop_assert!(!live.contains_key(&k)),
                    Err(e) => prop_assert_eq!(e.kind(), StoreErrorKind::Full),
                }
                let limits = store.inner.limits;
                prop_assert!(store.len() <= limits.records * store.inner.shards.len());
                prop_assert!(store.len() <= capacity + store.inner.shards.len());
                prop_assert!(store.bytes() <= max_bytes);
                for shard in &*store.inner.shards {
                    let shard = lock(shard);
                    prop_assert!(shard.bytes <= limits.bytes);
                    prop_assert_eq!(shard.bytes, shard.weighed());
                }
            }
            for (k, token) in live {
                prop_assert!(now(store.renew(&key(k), token, lease)).unwrap(), "claim {} was evicted", k);
            }
        }
    }
}
