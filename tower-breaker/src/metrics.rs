//! The names of the metrics this crate records, and [`describe`] for their help text.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`STATE`] `breaker_state` | gauge: 0 closed, 1 half-open, 2 open ([`State::gauge_value`]) | `name` |
//! | [`TRANSITIONS_TOTAL`] `breaker_transitions_total` | counter | `name`, `from`, `to` ([`STATES`]) |
//! | [`CALLS_TOTAL`] `breaker_calls_total` | counter | `name`, `result` ([`CALL_RESULTS`]) |
//!
//! Recording needs the `metrics` feature (on by default). The call counters and the state
//! gauge are registered when a breaker is built, so install the recorder first; building a
//! breaker also calls [`describe`]. Keyed breakers label their series `{name}/{key}` for the
//! first [`max_metric_keys`](crate::keyed::KeyedBreakerBuilder::max_metric_keys) keys and
//! `{name}/other` for the rest (calls and transitions; no `breaker_state`).
//!
//! ```
//! use tower_breaker::metrics;
//!
//! assert_eq!(metrics::STATE, "breaker_state");
//! assert!(metrics::CALL_RESULTS.contains(&"rejected"));
//! metrics::describe(); // with no recorder installed, a no-op
//! ```

use crate::State;

/// `breaker_state{name}`: 0 closed (also forced closed and disabled), 1 half-open, 2 open (also
/// forced open).
pub const STATE: &str = "breaker_state";
/// `breaker_transitions_total{name,from,to}`: state transitions.
pub const TRANSITIONS_TOTAL: &str = "breaker_transitions_total";
/// `breaker_calls_total{name,result}`: calls, by what the breaker made of them.
pub const CALLS_TOTAL: &str = "breaker_calls_total";

/// The values of the `result` label of [`CALLS_TOTAL`]: `success`; `failure` (a transient
/// failure); `slow` (a success slower than the slow-call threshold); `ignored` (a permanent
/// failure or a local rejection, not counted against the upstream); `rejected` (refused by the
/// breaker, never sent).
pub const CALL_RESULTS: [&str; 5] = ["success", "failure", "slow", "ignored", "rejected"];

/// The values of the `from` and `to` labels of [`TRANSITIONS_TOTAL`]: [`State::as_str`].
pub const STATES: [&str; 6] = [
    State::Closed.as_str(),
    State::HalfOpen.as_str(),
    State::Open.as_str(),
    State::ForcedOpen.as_str(),
    State::ForcedClosed.as_str(),
    State::Disabled.as_str(),
];

/// Registers the help text and unit of every metric above with the installed recorder
/// (nothing without the `metrics` feature).
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_gauge};
        describe_gauge!(
            STATE,
            "Circuit breaker state: 0 closed, 1 half-open, 2 open."
        );
        describe_counter!(
            TRANSITIONS_TOTAL,
            Unit::Count,
            "Circuit breaker state transitions, by from and to state."
        );
        describe_counter!(
            CALLS_TOTAL,
            Unit::Count,
            "Calls through the circuit breaker, by result (rejected: refused while open)."
        );
    }
}
