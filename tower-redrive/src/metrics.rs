//! Metric names (all labelled by the instance `name`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `redrive_queue_depth` | gauge | `name` |
//! | `redrive_dead_letters` | gauge | `name` |
//! | `redrive_oldest_age_seconds` | gauge | `name` |
//! | `redrive_deliveries_total` | counter | `name`, `result` |
//! | `redrive_store_errors_total` | counter | `name`, `operation` |
//!
//! `result` is one of [`RESULTS`], `operation` one of [`OPERATIONS`]. The gauges are refreshed by the [`Redriver`](crate::Redriver)
//! after every claim round; `alerts/redrive.rules.yml` in the crate holds example Prometheus
//! alert rules.

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
    metrics::counter!(STORE_ERRORS_TOTAL, "name" => name.to_owned(), "operation" => operation)
        .increment(1);
}

/// Registers help text and units for the metrics with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(QUEUE_DEPTH, "Requests waiting in the redrive queue");
    metrics::describe_gauge!(DEAD_LETTERS, "Requests in the redrive dead-letter queue");
    metrics::describe_gauge!(
        OLDEST_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest request waiting in the redrive queue"
    );
    metrics::describe_counter!(DELIVERIES_TOTAL, "Redrive delivery attempts by result");
    metrics::describe_counter!(
        STORE_ERRORS_TOTAL,
        "Failed redrive store operations of the worker, by operation"
    );
}
