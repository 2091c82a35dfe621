//! The names of the metrics this crate records, and [`describe`] for their help text.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`REQUESTS_TOTAL`] `retry_requests_total` | counter | `name`, `outcome` ([`OUTCOMES`]) |
//! | [`ATTEMPTS_TOTAL`] `retry_attempts_total` | counter | `name` |
//! | [`BACKOFF_SECONDS`] `retry_backoff_seconds` | histogram | `name` |
//!
//! Retries are `retry_attempts_total - retry_requests_total`. Recording needs the `metrics`
//! feature (on by default); a layer registers its handles when it is built, so install the
//! recorder first. A layer also calls [`describe`] when it is built; call it yourself when the
//! recorder is installed later.
//!
//! ```
//! use tower_retry_plus::metrics;
//!
//! assert_eq!(metrics::REQUESTS_TOTAL, "retry_requests_total");
//! assert!(metrics::OUTCOMES.contains(&"budget_exhausted"));
//! metrics::describe(); // with no recorder installed, a no-op
//! ```

use crate::RetryOutcome;

/// `retry_requests_total{name,outcome}`: logical requests, by how the layer finished them
/// ([`RetryOutcome`]).
pub const REQUESTS_TOTAL: &str = "retry_requests_total";
/// `retry_attempts_total{name}`: attempts sent, first attempts included.
pub const ATTEMPTS_TOTAL: &str = "retry_attempts_total";
/// `retry_backoff_seconds{name}`: the delays slept before retries.
pub const BACKOFF_SECONDS: &str = "retry_backoff_seconds";

/// The values of the `outcome` label of [`REQUESTS_TOTAL`]: [`RetryOutcome::as_str`] of
/// [`RetryOutcome::ALL`].
pub const OUTCOMES: [&str; RetryOutcome::ALL.len()] = {
    let mut out = [""; RetryOutcome::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = RetryOutcome::ALL[i].as_str();
        i += 1;
    }
    out
};

/// Registers the help text and unit of every metric above with the installed recorder
/// (nothing without the `metrics` feature).
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_histogram};
        describe_counter!(
            REQUESTS_TOTAL,
            Unit::Count,
            "Logical requests by how the retry layer finished them."
        );
        describe_counter!(
            ATTEMPTS_TOTAL,
            Unit::Count,
            "Attempts sent by the retry layer, first attempts included."
        );
        describe_histogram!(
            BACKOFF_SECONDS,
            Unit::Seconds,
            "Delays slept before retries."
        );
    }
}
