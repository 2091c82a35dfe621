//! Metric handles, registered when an endpoint or a set is made so the request path never
//! builds a key. Without the `metrics` feature they are zero-sized types whose methods do
//! nothing. The names are in [`crate::metrics`].

use crate::events::Cause;

/// The index of an ejection's cause in [`EJECTION_CAUSES`](crate::metrics::EJECTION_CAUSES).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn cause_index(cause: &Cause) -> usize {
    match cause {
        Cause::TrialFailed => 1,
        Cause::ReadinessFailed(_) => 2,
        Cause::HeldOut(_) => 3,
        _ => 0,
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use ::metrics::{Counter, Gauge, counter, gauge};

    use super::{Cause, cause_index};
    use crate::metrics::{
        ACTIVE_TIER, EJECTION_CAUSES, EJECTIONS_REFUSED_TOTAL, EJECTIONS_TOTAL, ENDPOINT_HEALTHY,
        REQUESTS_TOTAL,
    };

    /// The series of one endpoint.
    pub(crate) struct EndpointMetrics {
        requests: Counter,
        healthy: Gauge,
        ejections: [Counter; EJECTION_CAUSES.len()],
        ejections_refused: Counter,
    }

    impl EndpointMetrics {
        pub(crate) fn new(name: &str, endpoint: &str, healthy: bool) -> Self {
            let labels = [("name", name.to_owned()), ("endpoint", endpoint.to_owned())];
            let this = Self {
                requests: counter!(REQUESTS_TOTAL, &labels),
                healthy: gauge!(ENDPOINT_HEALTHY, &labels),
                ejections: EJECTION_CAUSES.map(|cause| {
                    counter!(EJECTIONS_TOTAL, "name" => name.to_owned(), "endpoint" => endpoint.to_owned(), "cause" => cause)
                }),
                ejections_refused: counter!(EJECTIONS_REFUSED_TOTAL, &labels),
            };
            this.healthy(healthy);
            this
        }

        #[inline]
        pub(crate) fn request(&self) {
            self.requests.increment(1);
        }

        pub(crate) fn healthy(&self, healthy: bool) {
            self.healthy.set(if healthy { 1.0 } else { 0.0 });
        }

        pub(crate) fn ejected(&self, cause: &Cause) {
            self.ejections[cause_index(cause)].increment(1);
        }

        pub(crate) fn ejection_refused(&self) {
            self.ejections_refused.increment(1);
        }
    }

    /// The series of a failover set.
    pub(crate) struct SetMetrics {
        active_tier: Gauge,
    }

    impl SetMetrics {
        pub(crate) fn new(name: &str) -> Self {
            Self {
                active_tier: gauge!(ACTIVE_TIER, "name" => name.to_owned()),
            }
        }

        pub(crate) fn active_tier(&self, tier: Option<usize>) {
            self.active_tier.set(tier.map_or(-1.0, |t| t as f64));
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use super::Cause;

    pub(crate) struct EndpointMetrics;

    impl EndpointMetrics {
        pub(crate) fn new(_name: &str, _endpoint: &str, _healthy: bool) -> Self {
            EndpointMetrics
        }

        #[inline]
        pub(crate) fn request(&self) {}

        pub(crate) fn healthy(&self, _healthy: bool) {}

        pub(crate) fn ejected(&self, _cause: &Cause) {}

        pub(crate) fn ejection_refused(&self) {}
    }

    pub(crate) struct SetMetrics;

    impl SetMetrics {
        pub(crate) fn new(_name: &str) -> Self {
            SetMetrics
        }

        pub(crate) fn active_tier(&self, _tier: Option<usize>) {}
    }
}

pub(crate) use imp::{EndpointMetrics, SetMetrics};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::EJECTION_CAUSES;

    /// The ejection counters are indexed by cause: each must carry its own label.
    #[test]
    fn causes_index_their_labels() {
        let causes = [
            Cause::ConsecutiveFailures(5),
            Cause::TrialFailed,
            Cause::ReadinessFailed("refused".into()),
            Cause::HeldOut(Duration::from_secs(1)),
        ];
        for cause in &causes {
            assert_eq!(EJECTION_CAUSES[cause_index(cause)], cause.as_str());
        }
    }
}
