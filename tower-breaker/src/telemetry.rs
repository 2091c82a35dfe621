//! Metrics of one breaker: handles registered once at build, so recording is allocation-free.
//!
//! `breaker_state{name}` (0 closed, 1 half-open, 2 open), `breaker_transitions_total{name,from,to}`,
//! `breaker_calls_total{name,result}` with `result` in success, failure, slow, ignored, rejected.

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

/// The label of a recorded call in `breaker_calls_total`.
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
    use metrics::{Counter, Gauge, counter, gauge};

    use super::{CallResult, Series, State};

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
                    let state = gauge!("breaker_state", "name" => name.to_owned());
                    state.set(0.0);
                    (name, state)
                }
                Series::Folded(label) => (label.as_str(), Gauge::noop()),
            };
            let call = |result: &'static str| counter!("breaker_calls_total", "name" => name.to_owned(), "result" => result);
            Self {
                name: name.to_owned(),
                calls: [
                    call("success"),
                    call("failure"),
                    call("slow"),
                    call("ignored"),
                    call("rejected"),
                ],
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
                "breaker_transitions_total",
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
