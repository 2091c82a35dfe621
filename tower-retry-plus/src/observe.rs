//! Metric handles, registered once per layer so the request path never builds a key. Without
//! the `metrics` feature they are a zero-sized type whose methods do nothing.

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    use ::metrics::{Counter, Histogram, counter, histogram};

    use crate::{
        metrics::{ATTEMPTS_TOTAL, BACKOFF_SECONDS, REQUESTS_TOTAL},
        policy::RetryOutcome,
    };

    pub(crate) struct Metrics {
        outcomes: [Counter; RetryOutcome::ALL.len()],
        attempts: Counter,
        backoff: Histogram,
    }

    impl Metrics {
        pub(crate) fn register(name: &str) -> Self {
            crate::metrics::describe();
            let name = name.to_owned();
            Self {
                outcomes: RetryOutcome::ALL.map(|outcome| {
                    counter!(REQUESTS_TOTAL, "name" => name.clone(), "outcome" => outcome.as_str())
                }),
                attempts: counter!(ATTEMPTS_TOTAL, "name" => name.clone()),
                backoff: histogram!(BACKOFF_SECONDS, "name" => name),
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
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    use crate::policy::RetryOutcome;

    pub(crate) struct Metrics;

    impl Metrics {
        pub(crate) fn register(_name: &str) -> Self {
            Metrics
        }

        #[inline]
        pub(crate) fn outcome(&self, _outcome: RetryOutcome) {}

        #[inline]
        pub(crate) fn attempt(&self) {}

        #[inline]
        pub(crate) fn backoff(&self, _delay: Duration) {}
    }
}

pub(crate) use imp::Metrics;
