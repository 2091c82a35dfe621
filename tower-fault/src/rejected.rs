//! The one concrete "rejected without sending" error every layer can return or wrap.

use std::{error::Error, fmt, time::Duration};

/// Implemented by errors that carry a hint of when trying again makes sense.
///
/// The suite's own rejection errors (a breaker's open error, failover's "no healthy endpoint")
/// implement it, so a caller holding the typed error can read the hint without knowing the type.
/// The classifier itself finds the hint through the [`Rejected`] value such errors carry in their
/// `source()` chain, which is how tower-fault stays independent of the crates above it.
pub trait RetryAfterHint {
    /// How long to wait before trying again, if known.
    fn retry_after(&self) -> Option<Duration>;
}

/// Why a local layer rejected a request without sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// A circuit breaker is open (or its half-open probes are all taken).
    BreakerOpen,
    /// No endpoint is healthy enough to take the request.
    NoHealthyEndpoint,
    /// A local limit (budget, concurrency) refused the request.
    Overloaded,
}

impl RejectReason {
    /// A short stable label, e.g. for metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::BreakerOpen => "breaker_open",
            RejectReason::NoHealthyEndpoint => "no_healthy_endpoint",
            RejectReason::Overloaded => "overloaded",
        }
    }
}

/// A request rejected by a local layer before anything was sent.
///
/// The classifier maps it to `Class::Transient { retry_after, delivery: LocallyRejected }`: safe
/// to retry for any method, after `retry_after` if one is given, and never counted again as a
/// failure by a breaker or failover above the layer that rejected. Constructing it never
/// allocates.
///
/// ```
/// use std::time::Duration;
/// use tower_fault::{BoxError, Classify, HttpClassifier, RejectReason, Rejected};
///
/// let err: BoxError = Box::new(Rejected::new(RejectReason::BreakerOpen, Some(Duration::from_secs(5))));
/// let class = HttpClassifier::default().classify(Err::<&http::Response<()>, _>(&err));
/// assert_eq!(class.retry_after(), Some(Duration::from_secs(5)));
/// assert!(!class.possibly_processed());
/// assert!(class.is_local_rejection());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    reason: RejectReason,
    retry_after: Option<Duration>,
}

impl Rejected {
    /// A rejection for `reason`, with an optional hint of when to try again.
    #[must_use]
    pub const fn new(reason: RejectReason, retry_after: Option<Duration>) -> Self {
        Self {
            reason,
            retry_after,
        }
    }

    /// Why the request was rejected.
    #[must_use]
    pub const fn reason(&self) -> RejectReason {
        self.reason
    }
}

impl RetryAfterHint for Rejected {
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            RejectReason::BreakerOpen => "circuit breaker is open",
            RejectReason::NoHealthyEndpoint => "no healthy endpoint",
            RejectReason::Overloaded => "overloaded",
        };
        match self.retry_after {
            Some(d) => write!(f, "request rejected: {what} (retry after {d:?})"),
            None => write!(f, "request rejected: {what}"),
        }
    }
}

impl Error for Rejected {}
