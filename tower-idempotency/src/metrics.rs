//! The names of the metrics this crate records, and [`describe`] for their help text.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`REQUESTS_TOTAL`] `idempotency_requests_total` | counter | `name`, `result` ([`RESULTS`]) |
//! | [`STORE_SECONDS`] `idempotency_store_seconds` | histogram | `name`, `op` ([`STORE_OPERATIONS`]) |
//! | [`MEMORY_EVICTIONS_TOTAL`] `idempotency_memory_evictions_total` | counter | none (a store may serve several layers) |
//!
//! Recording needs the `metrics` feature (on by default). A layer builds its metric keys when
//! it is built and looks the series up in the current recorder as it records, so a recorder
//! installed after the router was built still gets them; building a layer also calls
//! [`describe`] (call it again after installing a recorder later).
//!
//! ```
//! use tower_idempotency::metrics;
//!
//! assert_eq!(metrics::REQUESTS_TOTAL, "idempotency_requests_total");
//! assert!(metrics::RESULTS.contains(&"store_error"));
//! metrics::describe(); // with no recorder installed, a no-op
//! ```

/// `idempotency_requests_total{name,result}`: requests seen by the layer, by result.
pub const REQUESTS_TOTAL: &str = "idempotency_requests_total";
/// `idempotency_store_seconds{name,op}`: store operation latency.
pub const STORE_SECONDS: &str = "idempotency_store_seconds";
/// `idempotency_memory_evictions_total`: completed records a
/// [`MemoryStore`](crate::MemoryStore) dropped before their TTL to stay within its bounds (see
/// [`MemoryStore::evicted`](crate::MemoryStore::evicted)). A retry of an evicted key executes
/// again.
pub const MEMORY_EVICTIONS_TOTAL: &str = "idempotency_memory_evictions_total";

/// The values of the `result` label of [`REQUESTS_TOTAL`]: `executed`; `replayed`; `conflict`
/// (409, the key is in flight); `mismatch` (422, the key was used with another request);
/// `missing_key`, `invalid_key` (400); `missing_principal` (401); `too_large` (413, or a replay
/// of a response that was too large to keep, 409); `not_replayable` (409, a replay of a
/// response whose body failed or did not end in time); `store_error` (the claim failed, or
/// `complete`/`release` failed after an execution, which then also counts as `executed`);
/// `store_full` (a [`MemoryStore`](crate::MemoryStore) full of live claims refused the claim).
pub const RESULTS: [&str; 11] = [
    "executed",
    "replayed",
    "conflict",
    "mismatch",
    "missing_key",
    "invalid_key",
    "missing_principal",
    "too_large",
    "not_replayable",
    "store_error",
    "store_full",
];

/// The values of the `op` label of [`STORE_SECONDS`].
pub const STORE_OPERATIONS: [&str; 4] = ["claim", "renew", "complete", "release"];

/// Registers the help text and unit of every metric above with the installed recorder
/// (nothing without the `metrics` feature).
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_histogram};
        describe_counter!(
            REQUESTS_TOTAL,
            Unit::Count,
            "Requests seen by the idempotency layer, by result."
        );
        describe_histogram!(
            STORE_SECONDS,
            Unit::Seconds,
            "Idempotency store operation latency, by operation."
        );
        describe_counter!(
            MEMORY_EVICTIONS_TOTAL,
            Unit::Count,
            "Completed idempotency records a memory store dropped before their TTL to stay within its bounds."
        );
    }
}
