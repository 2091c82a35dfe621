//! Recording the metrics named in [`crate::metrics`]. Without the `metrics` feature the keys
//! are a zero-sized type and recording does nothing.

use crate::metrics::{RESULTS, STORE_OPERATIONS};

/// The `result` label of [`REQUESTS_TOTAL`](crate::metrics::REQUESTS_TOTAL): indexes
/// [`RESULTS`].
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

/// A store operation: the `op` label of [`STORE_SECONDS`](crate::metrics::STORE_SECONDS): indexes
/// [`STORE_OPERATIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    Claim,
    Renew,
    Complete,
    Release,
}

impl StoreOp {
    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    const ALL: [StoreOp; STORE_OPERATIONS.len()] = [
        StoreOp::Claim,
        StoreOp::Renew,
        StoreOp::Complete,
        StoreOp::Release,
    ];

    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    const fn as_str(self) -> &'static str {
        STORE_OPERATIONS[self as usize]
    }
}

impl Outcome {
    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    const ALL: [Outcome; RESULTS.len()] = [
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

    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    const fn as_str(self) -> &'static str {
        RESULTS[self as usize]
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use std::{sync::Arc, time::Duration};

    use ::metrics::{Key, Label, Level, Metadata, SharedString};

    use super::{Outcome, StoreOp};
    use crate::metrics::{MEMORY_EVICTIONS_TOTAL, REQUESTS_TOTAL, STORE_SECONDS};

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
        pub(super) requests: [Key; Outcome::ALL.len()],
        pub(super) store: [Key; StoreOp::ALL.len()],
    }

    impl Keys {
        pub(crate) fn new(name: &Arc<str>) -> Self {
            crate::metrics::describe();
            let labels = |key: &'static str, value: &'static str| {
                vec![
                    Label::new("name", SharedString::from(Arc::clone(name))),
                    Label::new(key, value),
                ]
            };
            Self {
                requests: Outcome::ALL
                    .map(|o| Key::from_parts(REQUESTS_TOTAL, labels("result", o.as_str()))),
                store: StoreOp::ALL
                    .map(|op| Key::from_parts(STORE_SECONDS, labels("op", op.as_str()))),
            }
        }
    }

    pub(crate) fn request(keys: &Keys, outcome: Outcome) {
        let key = &keys.requests[outcome as usize];
        ::metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
    }

    pub(crate) fn store_op(keys: &Keys, op: StoreOp, elapsed: Duration) {
        let key = &keys.store[op as usize];
        ::metrics::with_recorder(|r| r.register_histogram(key, &METADATA))
            .record(elapsed.as_secs_f64());
    }

    pub(crate) fn evictions(evicted: u64) {
        ::metrics::counter!(MEMORY_EVICTIONS_TOTAL).increment(evicted);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::{sync::Arc, time::Duration};

    use super::{Outcome, StoreOp};

    pub(crate) struct Keys;

    impl Keys {
        pub(crate) fn new(_name: &Arc<str>) -> Self {
            Keys
        }
    }

    #[inline]
    pub(crate) fn request(_keys: &Keys, _outcome: Outcome) {}

    #[inline]
    pub(crate) fn store_op(_keys: &Keys, _op: StoreOp, _elapsed: Duration) {}

    pub(crate) fn evictions(_evicted: u64) {}
}

pub(crate) use imp::{Keys, evictions, request, store_op};

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant's label is the one its name says (the labels are indexed by discriminant).
    #[test]
    fn labels_match_variants() {
        let results = [
            (Outcome::Executed, "executed"),
            (Outcome::Replayed, "replayed"),
            (Outcome::Conflict, "conflict"),
            (Outcome::Mismatch, "mismatch"),
            (Outcome::MissingKey, "missing_key"),
            (Outcome::InvalidKey, "invalid_key"),
            (Outcome::MissingPrincipal, "missing_principal"),
            (Outcome::TooLarge, "too_large"),
            (Outcome::NotReplayable, "not_replayable"),
            (Outcome::StoreError, "store_error"),
            (Outcome::StoreFull, "store_full"),
        ];
        assert_eq!(results.map(|(o, _)| o), Outcome::ALL);
        for (outcome, label) in results {
            assert_eq!(outcome.as_str(), label);
        }
        let ops = [
            (StoreOp::Claim, "claim"),
            (StoreOp::Renew, "renew"),
            (StoreOp::Complete, "complete"),
            (StoreOp::Release, "release"),
        ];
        assert_eq!(ops.map(|(o, _)| o), StoreOp::ALL);
        for (op, label) in ops {
            assert_eq!(op.as_str(), label);
        }
    }

    /// The prebuilt keys are indexed by discriminant: each must carry its own label.
    #[cfg(feature = "metrics")]
    #[test]
    fn keys_are_indexed_by_discriminant() {
        let keys = Keys::new(&std::sync::Arc::from("n"));
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
