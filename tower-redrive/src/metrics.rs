//! The names of the metrics this crate records, and [`describe`] for their help text.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`QUEUE_DEPTH`] `redrive_queue_depth` | gauge | `name` |
//! | [`DEAD_LETTERS`] `redrive_dead_letters` | gauge | `name` |
//! | [`OLDEST_AGE_SECONDS`] `redrive_oldest_age_seconds` | gauge | `name` |
//! | [`DELIVERIES_TOTAL`] `redrive_deliveries_total` | counter | `name`, `result` ([`RESULTS`]) |
//! | [`STORE_ERRORS_TOTAL`] `redrive_store_errors_total` | counter | `name`, `operation` ([`OPERATIONS`]) |
//!
//! The worker ([`Redriver`](crate::Redriver)) records them: the gauges after every claim
//! round. Recording needs the `metrics` feature (on by default); building a worker also calls
//! [`describe`]. The repository's `alerts/redrive.rules.yml` holds Prometheus alert rules for
//! these series.
//!
//! ```
//! use tower_redrive::metrics;
//!
//! assert_eq!(metrics::QUEUE_DEPTH, "redrive_queue_depth");
//! assert!(metrics::RESULTS.contains(&"exhausted"));
//! metrics::describe(); // with no recorder installed, a no-op
//! ```

/// Entries waiting for delivery.
pub const QUEUE_DEPTH: &str = "redrive_queue_depth";
/// Entries in the dead-letter queue.
pub const DEAD_LETTERS: &str = "redrive_dead_letters";
/// Age of the oldest pending entry, in seconds (0 when the queue is empty).
pub const OLDEST_AGE_SECONDS: &str = "redrive_oldest_age_seconds";
/// Delivery attempts by the worker, by result.
pub const DELIVERIES_TOTAL: &str = "redrive_deliveries_total";

/// Failed store operations of the worker, by operation.
pub const STORE_ERRORS_TOTAL: &str = "redrive_store_errors_total";

/// The values of the `result` label of [`DELIVERIES_TOTAL`]: `delivered`; `transient` (failed,
/// rescheduled); `exhausted` (failed, schedule over, dead-lettered); `permanent` (dead-lettered);
/// `corrupt` (unreadable entry, dead-lettered); `lease_lost` (the outcome came too late and was
/// discarded); `store_error` (the outcome could not be recorded: the round stopped, and the
/// worker records the outcome before it claims anything else).
pub const RESULTS: [&str; 7] = [
    "delivered",
    "transient",
    "exhausted",
    "permanent",
    "corrupt",
    "lease_lost",
    "store_error",
];

/// The values of the `operation` label of [`STORE_ERRORS_TOTAL`]: `claim` (claiming due entries),
/// `record` (recording an outcome), `renew_lease`, `read_stats` (refreshing the gauges), `purge`
/// (the janitor).
pub const OPERATIONS: [&str; 5] = ["claim", "record", "renew_lease", "read_stats", "purge"];

/// Counts one failed store operation of the worker `name` (`operation` is one of
/// [`OPERATIONS`]).
pub(crate) fn store_error(name: &str, operation: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(STORE_ERRORS_TOTAL, "name" => name.to_owned(), "operation" => operation)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, operation);
}

/// Counts one delivery of the worker `name` (`result` is one of [`RESULTS`]).
pub(crate) fn delivery(name: &str, result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(DELIVERIES_TOTAL, "name" => name.to_owned(), "result" => result)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, result);
}

/// Sets the queue gauges of the worker `name`: entries pending, dead letters, and the age of
/// the oldest pending entry in seconds.
pub(crate) fn queue(name: &str, pending: u64, dead: u64, oldest_age_seconds: f64) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::gauge!(QUEUE_DEPTH, "name" => name.to_owned()).set(pending as f64);
        ::metrics::gauge!(DEAD_LETTERS, "name" => name.to_owned()).set(dead as f64);
        ::metrics::gauge!(OLDEST_AGE_SECONDS, "name" => name.to_owned()).set(oldest_age_seconds);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (name, pending, dead, oldest_age_seconds);
}

/// Registers the help text and unit of every metric above with the installed recorder
/// (nothing without the `metrics` feature).
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_gauge};
        describe_gauge!(
            QUEUE_DEPTH,
            Unit::Count,
            "Requests waiting in the redrive queue."
        );
        describe_gauge!(
            DEAD_LETTERS,
            Unit::Count,
            "Requests in the redrive dead-letter queue."
        );
        describe_gauge!(
            OLDEST_AGE_SECONDS,
            Unit::Seconds,
            "Age of the oldest request waiting in the redrive queue (0 when it is empty)."
        );
        describe_counter!(
            DELIVERIES_TOTAL,
            Unit::Count,
            "Redrive delivery attempts by result."
        );
        describe_counter!(
            STORE_ERRORS_TOTAL,
            Unit::Count,
            "Failed redrive store operations of the worker, by operation."
        );
    }
}
