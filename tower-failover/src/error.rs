//! Errors: the typed "no healthy endpoint" rejection and configuration errors.

use std::{error::Error, fmt, time::Duration};

use tower_fault::{RejectReason, Rejected, RetryAfterHint};

/// No endpoint could take the request: every endpoint is unhealthy, ejected or removed (and the
/// all-down policy is to fail, or its bounded wait ran out).
///
/// Nothing was sent. Its `source()` is a [`tower_fault::Rejected`] with
/// [`RejectReason::NoHealthyEndpoint`], so tower-fault's classifier (and an outer retry layer)
/// reads it as `Transient { delivery: NotProcessed, retry_after }`.
///
/// ```
/// use std::time::Duration;
/// use tower_fault::{BoxError, Classify, HttpClassifier, RetryAfterHint};
/// use tower_failover::error::NoHealthyEndpoint;
///
/// let err: BoxError = Box::new(NoHealthyEndpoint::new(Some(Duration::from_secs(2))));
/// let class = HttpClassifier::default().classify(Err::<&http::Response<()>, _>(&err));
/// assert!(class.is_transient() && !class.possibly_processed());
/// assert_eq!(class.retry_after(), Some(Duration::from_secs(2)));
/// assert_eq!(err.downcast_ref::<NoHealthyEndpoint>().unwrap().retry_after(), Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoHealthyEndpoint {
    rejected: Rejected,
}

impl NoHealthyEndpoint {
    /// A rejection, with a hint of when an endpoint may be usable again (the earliest end of a
    /// passive ejection, or the unhealthy probe interval).
    #[must_use]
    pub const fn new(retry_after: Option<Duration>) -> Self {
        Self {
            rejected: Rejected::new(RejectReason::NoHealthyEndpoint, retry_after),
        }
    }

    /// The [`Rejected`] this error carries as its source.
    #[must_use]
    pub const fn rejected(&self) -> &Rejected {
        &self.rejected
    }
}

impl RetryAfterHint for NoHealthyEndpoint {
    fn retry_after(&self) -> Option<Duration> {
        self.rejected.retry_after()
    }
}

impl fmt::Display for NoHealthyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("no healthy endpoint")
    }
}

impl Error for NoHealthyEndpoint {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.rejected)
    }
}

/// A [`FailoverBuilder`](crate::FailoverBuilder), a
/// [`FailoverLayerBuilder`](crate::FailoverLayerBuilder) or
/// [`FailoverHandle::add`](crate::FailoverHandle::add) was given a configuration that makes no
/// sense; the message says which setting and why.
pub use tower_fault::ConfigError;

/// A configuration error of this layer.
pub(crate) fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> ConfigError {
    ConfigError::new("failover", message)
}

/// A configuration error of this layer in the builder setting `field`.
pub(crate) fn field_error(
    field: &'static str,
    message: impl Into<std::borrow::Cow<'static, str>>,
) -> ConfigError {
    ConfigError::for_field("failover", field, message)
}
