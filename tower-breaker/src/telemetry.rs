//! Metrics of one breaker: handles registered once at build, so recording is allocation-free.
//! The names and label values are in [`crate::metrics`].

use crate::State;

/// The metric series a breaker reports to.
#[derive(Debug, Clone, Default)]
pub(crate) enum Series {
    /// Its own, labelled with its name.
    #[default]
    Own,
    /// Series shared by the keyed breakers past `max_metric_keys`, labelled `name`. They have
    /// no `breaker_state`: one gauge cannot hold the states of many breakers.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    Folded(String),
}

/// The label of a recorded call in `breaker_calls_total`: indexes
/// [`CALL_RESULTS`](crate::metrics::CALL_RESULTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallResult {
    Success,
    Failure,
    Slow,
    Ignored,
    Rejected,
}

#[cfg(feature = "metrics")]
mod imp {
    use ::metrics::{Counter, Gauge, counter, gauge};

    use super::{CallResult, Series, State};
    use crate::metrics::{CALL_RESULTS, CALLS_TOTAL, STATE, TRANSITIONS_TOTAL};

    #[derive(Debug)]
    pub(crate) struct Telemetry {
        name: String,
        calls: [Counter; 5],
        state: Gauge,
    }

    impl Telemetry {
        /// The handles of breaker `name`, reporting to `series`.
        pub(crate) fn new(name: &str, series: &Series) -> Self {
            let (name, state) = match series {
                Series::Own => {
                    let state = gauge!(STATE, "name" => name.to_owned());
                    state.set(0.0);
                    (name, state)
                }
                Series::Folded(label) => (label.as_str(), Gauge::noop()),
            };
            Self {
                name: name.to_owned(),
                calls: CALL_RESULTS.map(
                    |result| counter!(CALLS_TOTAL, "name" => name.to_owned(), "result" => result),
                ),
                state,
            }
        }

        #[inline]
        pub(crate) fn call(&self, result: CallResult) {
            self.calls[result as usize].increment(1);
        }

        pub(crate) fn transition(&self, from: State, to: State) {
            self.state.set(to.gauge_value());
            counter!(
                TRANSITIONS_TOTAL,
                "name" => self.name.clone(),
                "from" => from.as_str(),
                "to" => to.as_str()
            )
            .increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use super::{CallResult, Series, State};

    #[derive(Debug)]
    pub(crate) struct Telemetry;

    impl Telemetry {
        pub(crate) fn new(_name: &str, _series: &Series) -> Self {
            Telemetry
        }

        #[inline]
        pub(crate) fn call(&self, _result: CallResult) {}

        pub(crate) fn transition(&self, _from: State, _to: State) {}
    }
}

pub(crate) use imp::Telemetry;

/// Whether this build emits metrics (the `metrics` feature).
pub(crate) const ENABLED: bool = cfg!(feature = "metrics");

#[cfg(test)]
mod tests {
    use super::CallResult;
    use crate::metrics::CALL_RESULTS;

    /// The call counters are indexed by discriminant: each must carry its own label.
    #[test]
    fn call_results_index_their_labels() {
        let labels = [
            (CallResult::Success, "success"),
            (CallResult::Failure, "failure"),
            (CallResult::Slow, "slow"),
            (CallResult::Ignored, "ignored"),
            (CallResult::Rejected, "rejected"),
        ];
        for (result, label) in labels {
            assert_eq!(CALL_RESULTS[result as usize], label);
        }
    }
}
