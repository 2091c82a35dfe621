//! Metric handles, registered once per layer so the request path never builds a key.

use std::time::Duration;

use metrics::{Counter, Histogram, Unit, counter, describe_counter, describe_histogram, histogram};

use crate::{METRIC_ATTEMPTS, METRIC_BACKOFF, METRIC_REQUESTS, policy::RetryOutcome};

pub(crate) struct Metrics {
    outcomes: [Counter; RetryOutcome::ALL.len()],
    attempts: Counter,
    backoff: Histogram,
}

impl Metrics {
    pub(crate) fn register(name: &str) -> Self {
        describe_counter!(
            METRIC_REQUESTS,
            Unit::Count,
            "Logical requests by how the retry layer finished them."
        );
        describe_counter!(
            METRIC_ATTEMPTS,
            Unit::Count,
            "Attempts sent by the retry layer, first attempts included."
        );
        describe_histogram!(
            METRIC_BACKOFF,
            Unit::Seconds,
            "Delays slept before retries."
        );
        let name = name.to_owned();
        Self {
            outcomes: RetryOutcome::ALL.map(|outcome| {
                counter!(METRIC_REQUESTS, "name" => name.clone(), "outcome" => outcome.as_str())
            }),
            attempts: counter!(METRIC_ATTEMPTS, "name" => name.clone()),
            backoff: histogram!(METRIC_BACKOFF, "name" => name),
        }
    }

    pub(crate) fn outcome(&self, outcome: RetryOutcome) {
        self.outcomes[outcome.index()].increment(1);
    }

    pub(crate) fn attempt(&self) {
        self.attempts.increment(1);
    }

    pub(crate) fn backoff(&self, delay: Duration) {
        self.backoff.record(delay.as_secs_f64());
    }
}
