//! The names of the metrics this crate records, and [`describe`] for their help text.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`REQUESTS_TOTAL`] `failover_requests_total` | counter | `name`, `endpoint` |
//! | [`ENDPOINT_HEALTHY`] `failover_endpoint_healthy` | gauge: 1 healthy, 0 not | `name`, `endpoint` |
//! | [`EJECTIONS_TOTAL`] `failover_ejections_total` | counter | `name`, `endpoint`, `cause` ([`EJECTION_CAUSES`]) |
//! | [`EJECTIONS_REFUSED_TOTAL`] `failover_ejections_refused_total` | counter | `name`, `endpoint` |
//! | [`ACTIVE_TIER`] `failover_active_tier` | gauge: the first tier with a healthy endpoint, -1 when none | `name` |
//!
//! Recording needs the `metrics` feature (on by default). Handles are registered with the
//! recorder that is current when the failover is built (or an endpoint added), so install the
//! recorder first; building a failover also calls [`describe`].
//!
//! ```
//! use tower_failover::metrics;
//!
//! assert_eq!(metrics::ACTIVE_TIER, "failover_active_tier");
//! assert!(metrics::EJECTION_CAUSES.contains(&"held_out"));
//! metrics::describe(); // with no recorder installed, a no-op
//! ```

/// `failover_requests_total{name,endpoint}`: requests sent to each endpoint.
pub const REQUESTS_TOTAL: &str = "failover_requests_total";
/// `failover_endpoint_healthy{name,endpoint}`: 1 while the endpoint is healthy (in rotation),
/// 0 otherwise.
pub const ENDPOINT_HEALTHY: &str = "failover_endpoint_healthy";
/// `failover_ejections_total{name,endpoint,cause}`: times an endpoint was taken out of rotation
/// by live traffic, by cause.
pub const EJECTIONS_TOTAL: &str = "failover_ejections_total";
/// `failover_ejections_refused_total{name,endpoint}`: passive ejections the max-ejected guard
/// refused (once per failure run, and each failed trial it returned to rotation).
pub const EJECTIONS_REFUSED_TOTAL: &str = "failover_ejections_refused_total";
/// `failover_active_tier{name}`: the first tier (0 the primaries) with a healthy endpoint,
/// -1 when no endpoint is healthy.
pub const ACTIVE_TIER: &str = "failover_active_tier";

/// The values of the `cause` label of [`EJECTIONS_TOTAL`]: `consecutive_failures` (a run of
/// transient failures the endpoint's failure rate does not explain); `trial_failed` (the one
/// trial request after an ejection failed); `readiness_failed` (the endpoint's service failed
/// `poll_ready`); `held_out` (the endpoint's own breaker refused a request and said when to come
/// back).
pub const EJECTION_CAUSES: [&str; 4] = [
    "consecutive_failures",
    "trial_failed",
    "readiness_failed",
    "held_out",
];

/// Registers the help text and unit of every metric above with the installed recorder
/// (nothing without the `metrics` feature).
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_gauge};
        describe_counter!(
            REQUESTS_TOTAL,
            Unit::Count,
            "Requests failover sent to each endpoint."
        );
        describe_gauge!(
            ENDPOINT_HEALTHY,
            "Whether the endpoint is healthy and in rotation (1) or not (0)."
        );
        describe_counter!(
            EJECTIONS_TOTAL,
            Unit::Count,
            "Endpoints taken out of rotation by live traffic, by cause."
        );
        describe_counter!(
            EJECTIONS_REFUSED_TOTAL,
            Unit::Count,
            "Passive ejections refused because too many endpoints were out of rotation already."
        );
        describe_gauge!(
            ACTIVE_TIER,
            "The first tier with a healthy endpoint (0 the primaries), -1 when none is healthy."
        );
    }
}
