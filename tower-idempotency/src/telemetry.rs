//! Metric names and recording helpers (see the crate docs for the series).

use std::{sync::Arc, time::Duration};

use metrics::{Key, Label, Level, Metadata, SharedString};

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
    NotReplayable,
    StoreError,
    StoreFull,
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
            Outcome::NotReplayable => "not_replayable",
            Outcome::StoreError => "store_error",
            Outcome::StoreFull => "store_full",
        }
    }
}

/// A store operation: the `op` label of [`STORE_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    Claim,
    Renew,
    Complete,
    Release,
}

impl StoreOp {
    const ALL: [StoreOp; 4] = [
        StoreOp::Claim,
        StoreOp::Renew,
        StoreOp::Complete,
        StoreOp::Release,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            StoreOp::Claim => "claim",
            StoreOp::Renew => "renew",
            StoreOp::Complete => "complete",
            StoreOp::Release => "release",
        }
    }
}

impl Outcome {
    const ALL: [Outcome; 11] = [
        Outcome::Executed,
        Outcome::Replayed,
        Outcome::Conflict,
        Outcome::Mismatch,
        Outcome::MissingKey,
        Outcome::InvalidKey,
        Outcome::MissingPrincipal,
        Outcome::TooLarge,
        Outcome::NotReplayable,
        Outcome::StoreError,
        Outcome::StoreFull,
    ];
}

/// What the `metrics` macros would record, at the macros' own target and level.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The metric keys of one layer instance, built once at `build()`.
///
/// Only the keys (name and labels, with their hash) are built once; the counter or histogram is
/// still looked up in the current recorder on every call rather than registered at `build()`:
/// handles registered then would bind to whatever recorder was installed at that moment, and
/// servers commonly build their router before installing the exporter. Building the keys per
/// call (what the macros do) cost three label-vector allocations per keyed request.
pub(crate) struct Keys {
    requests: [Key; Outcome::ALL.len()],
    store: [Key; StoreOp::ALL.len()],
}

impl Keys {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let labels = |key: &'static str, value: &'static str| {
            vec![
                Label::new("name", SharedString::from(Arc::clone(name))),
                Label::new(key, value),
            ]
        };
        Self {
            requests: Outcome::ALL
                .map(|o| Key::from_parts(REQUESTS_TOTAL, labels("result", o.as_str()))),
            store: StoreOp::ALL.map(|op| Key::from_parts(STORE_SECONDS, labels("op", op.as_str()))),
        }
    }
}

pub(crate) fn request(keys: &Keys, outcome: Outcome) {
    let key = &keys.requests[outcome as usize];
    metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
}

pub(crate) fn store_op(keys: &Keys, op: StoreOp, elapsed: Duration) {
    let key = &keys.store[op as usize];
    metrics::with_recorder(|r| r.register_histogram(key, &METADATA)).record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prebuilt keys are indexed by discriminant: each must carry its own label.
    #[test]
    fn keys_are_indexed_by_discriminant() {
        let keys = Keys::new(&Arc::from("n"));
        for o in Outcome::ALL {
            let labels: Vec<_> = keys.requests[o as usize].labels().collect();
            assert_eq!(labels[0].value(), "n");
            assert_eq!((labels[1].key(), labels[1].value()), ("result", o.as_str()));
        }
        for op in StoreOp::ALL {
            let labels: Vec<_> = keys.store[op as usize].labels().collect();
            assert_eq!((labels[1].key(), labels[1].value()), ("op", op.as_str()));
        }
    }
}
