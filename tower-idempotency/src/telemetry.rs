//! Metric names and recording helpers (see the crate docs for the series).

use std::{sync::Arc, time::Duration};

/// `idempotency_requests_total{name,result}`: requests seen by the layer, by result.
pub const REQUESTS_TOTAL: &str = "idempotency_requests_total";
/// `idempotency_store_seconds{name,op}`: store operation latency (`claim`, `renew`,
/// `complete`, `release`).
pub const STORE_SECONDS: &str = "idempotency_store_seconds";

/// The `result` label of [`REQUESTS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    Executed,
    Replayed,
    Conflict,
    Mismatch,
    MissingKey,
    InvalidKey,
    MissingPrincipal,
    TooLarge,
    StoreError,
}

impl Outcome {
    const fn as_str(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Replayed => "replayed",
            Outcome::Conflict => "conflict",
            Outcome::Mismatch => "mismatch",
            Outcome::MissingKey => "missing_key",
            Outcome::InvalidKey => "invalid_key",
            Outcome::MissingPrincipal => "missing_principal",
            Outcome::TooLarge => "too_large",
            Outcome::StoreError => "store_error",
        }
    }
}

// The counter is looked up per call (a small label vector; the name is an `Arc`, not copied)
// rather than registered once at `build()`: handles registered at build time would bind to
// whatever recorder was installed then, and servers commonly build their router before installing
// the exporter. One lookup is noise next to the SHA-256 and store round trip of a keyed request.
pub(crate) fn request(name: &Arc<str>, outcome: Outcome) {
    metrics::counter!(REQUESTS_TOTAL, "name" => Arc::clone(name), "result" => outcome.as_str())
        .increment(1);
}

pub(crate) fn store_op(name: &Arc<str>, op: &'static str, elapsed: Duration) {
    metrics::histogram!(STORE_SECONDS, "name" => Arc::clone(name), "op" => op)
        .record(elapsed.as_secs_f64());
}
