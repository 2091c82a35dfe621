//! The fault classes every layer reads.

use std::time::Duration;

/// Whether a failed request may have had an effect on the server.
///
/// Retry uses it to decide what is safe to send again for non-idempotent methods: a request that
/// provably never reached the application ([`Delivery::NotProcessed`]) can be retried whatever
/// its method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The request provably was not processed: the connection was never established, the HTTP/2
    /// stream was refused, the server answered 429, or a local layer rejected it unsent.
    NotProcessed,
    /// The request may have been processed (a 5xx, a reset after the request was written, a
    /// timeout while waiting for the response).
    MaybeProcessed,
    /// A local layer (a circuit breaker, failover with no usable endpoint) refused the request
    /// before sending it: not processed, and no new evidence about the upstream's health. The
    /// layer that refused already counted the failures that made it refuse, so a layer above it
    /// must not count the refusal again: one upstream failure would otherwise become many
    /// (an outer breaker opening on an inner breaker's rejections).
    LocallyRejected,
}

/// What kind of outcome a response or an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The call succeeded (or failed in a way nobody needs to react to).
    Success,
    /// A failure that may go away: worth retrying, counts against an upstream's health.
    Transient {
        /// How long the server (or a local breaker) asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// Whether the request may have been processed.
        delivery: Delivery,
    },
    /// A failure that will not go away by itself: never retried, and says nothing about the
    /// upstream's health (a 404 is the caller's problem).
    Permanent,
}

impl Class {
    /// A transient failure after which the request may have been processed, with no hint.
    pub const TRANSIENT: Class = Class::Transient {
        retry_after: None,
        delivery: Delivery::MaybeProcessed,
    };

    /// A transient failure that provably did not reach the server.
    pub const NOT_PROCESSED: Class = Class::Transient {
        retry_after: None,
        delivery: Delivery::NotProcessed,
    };

    /// A request a local layer refused without sending it, with no hint.
    pub const LOCALLY_REJECTED: Class = Class::Transient {
        retry_after: None,
        delivery: Delivery::LocallyRejected,
    };

    /// `true` for [`Class::Success`].
    #[must_use]
    pub const fn is_success(&self) -> bool {
        matches!(self, Class::Success)
    }

    /// `true` for [`Class::Transient`].
    #[must_use]
    pub const fn is_transient(&self) -> bool {
        matches!(self, Class::Transient { .. })
    }

    /// `true` for [`Class::Permanent`].
    #[must_use]
    pub const fn is_permanent(&self) -> bool {
        matches!(self, Class::Permanent)
    }

    /// The `Retry-After` hint of a transient failure.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        match self {
            Class::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the request may have been processed by the server.
    ///
    /// `false` only for a transient failure that proves the request was not processed (or was
    /// never sent); a success or a permanent failure was (or may have been) processed.
    #[must_use]
    pub const fn possibly_processed(&self) -> bool {
        !matches!(
            self,
            Class::Transient {
                delivery: Delivery::NotProcessed | Delivery::LocallyRejected,
                ..
            }
        )
    }

    /// Whether a local layer refused the request without sending it
    /// ([`Delivery::LocallyRejected`]): health detectors (breakers, passive ejection) neither
    /// count it as a failure nor as a success.
    #[must_use]
    pub const fn is_local_rejection(&self) -> bool {
        matches!(
            self,
            Class::Transient {
                delivery: Delivery::LocallyRejected,
                ..
            }
        )
    }

    /// Whether this outcome is evidence that the upstream is failing: a transient failure the
    /// upstream (or the way to it) produced, not a local layer's refusal.
    #[must_use]
    pub const fn is_upstream_failure(&self) -> bool {
        self.is_transient() && !self.is_local_rejection()
    }

    /// The same class with `retry_after` replaced (no effect unless transient).
    #[must_use]
    pub const fn with_retry_after(self, hint: Option<Duration>) -> Class {
        match self {
            Class::Transient { delivery, .. } => Class::Transient {
                retry_after: hint,
                delivery,
            },
            other => other,
        }
    }

    /// A short, stable label (`success`, `transient`, `permanent`) for logs and metrics.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Class::Success => "success",
            Class::Transient { .. } => "transient",
            Class::Permanent => "permanent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possibly_processed_only_false_for_proven_unsent() {
        assert!(Class::Success.possibly_processed());
        assert!(Class::Permanent.possibly_processed());
        assert!(Class::TRANSIENT.possibly_processed());
        assert!(!Class::NOT_PROCESSED.possibly_processed());
        assert!(!Class::LOCALLY_REJECTED.possibly_processed());
    }

    #[test]
    fn local_rejections_are_transient_but_not_upstream_failures() {
        assert!(Class::LOCALLY_REJECTED.is_transient());
        assert!(Class::LOCALLY_REJECTED.is_local_rejection());
        assert!(!Class::LOCALLY_REJECTED.is_upstream_failure());
        assert!(Class::NOT_PROCESSED.is_upstream_failure());
        assert!(Class::TRANSIENT.is_upstream_failure());
        assert!(!Class::Permanent.is_upstream_failure());
        assert!(!Class::Success.is_local_rejection());
    }

    #[test]
    fn retry_after_only_on_transient() {
        let d = Some(Duration::from_secs(3));
        assert_eq!(Class::TRANSIENT.with_retry_after(d).retry_after(), d);
        assert_eq!(Class::Permanent.with_retry_after(d).retry_after(), None);
        assert_eq!(Class::Success.as_str(), "success");
    }
}
