//! Errors: the rejection a breaker answers with, and configuration errors.

use std::{error::Error, fmt, time::Duration};

use tower_fault::{RejectReason, Rejected, RetryAfterHint};

use crate::State;

/// A call rejected by the breaker without reaching the inner service.
///
/// Returned by [`Breaker::try_acquire`](crate::Breaker::try_acquire) and, boxed, by the
/// [`CircuitBreaker`](crate::CircuitBreaker) service. Its `source()` is a [`tower_fault::Rejected`],
/// so tower-fault's classifier reads it as `Transient { retry_after, NotProcessed }`: an outer
/// retry layer waits for the hint instead of burning attempts, and failover skips the endpoint.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::{Breaker, error::BreakerError};
/// use tower_fault::RetryAfterHint;
///
/// let breaker = Breaker::builder().build().unwrap();
/// breaker.force_open();
/// let err: BreakerError = breaker.try_acquire().unwrap_err();
/// assert!(err.is_open());
/// assert_eq!(err.retry_after(), None); // forced open: no hint
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerError {
    state: State,
    rejected: Rejected,
}

impl BreakerError {
    pub(crate) const fn new(state: State, retry_after: Option<Duration>) -> Self {
        Self {
            state,
            rejected: Rejected::new(RejectReason::BreakerOpen, retry_after),
        }
    }

    /// The state the breaker was in: [`State::Open`], [`State::ForcedOpen`], or
    /// [`State::HalfOpen`] (every probe permit was taken).
    #[must_use]
    pub const fn state(&self) -> State {
        self.state
    }

    /// `true` when the breaker was open (timed or forced), `false` when half-open and full.
    #[must_use]
    pub const fn is_open(&self) -> bool {
        matches!(self.state, State::Open | State::ForcedOpen)
    }

    /// The tower-fault rejection this error carries (also its `source()`).
    #[must_use]
    pub const fn rejected(&self) -> &Rejected {
        &self.rejected
    }
}

impl RetryAfterHint for BreakerError {
    /// The remaining open time (`None` when forced open, or when half-open and full).
    fn retry_after(&self) -> Option<Duration> {
        self.rejected.retry_after()
    }
}

impl fmt::Display for BreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.rejected.retry_after()) {
            (State::HalfOpen, _) => {
                f.pad("circuit breaker is half-open and all probe permits are taken")
            }
            (State::ForcedOpen, _) => f.pad("circuit breaker is forced open"),
            (_, Some(d)) => write!(f, "circuit breaker is open (retry after {d:?})"),
            (_, None) => f.pad("circuit breaker is open"),
        }
    }
}

impl Error for BreakerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.rejected)
    }
}

/// A nonsensical breaker configuration, reported by `build()`.
///
/// ```
/// use tower_breaker::Breaker;
///
/// let err = Breaker::builder().failure_rate_threshold(1.5).build().unwrap_err();
/// assert_eq!(err.field(), Some("failure_rate_threshold"));
/// assert!(err.to_string().contains("between 0 and 1"));
/// ```
pub use tower_fault::ConfigError;

/// A configuration error naming the builder setting at fault.
pub(crate) fn config_error(
    field: &'static str,
    message: impl Into<std::borrow::Cow<'static, str>>,
) -> ConfigError {
    ConfigError::for_field("circuit breaker", field, message)
}
