//! Errors the retry layer adds, all downcastable from [`BoxError`](tower_fault::BoxError).
//!
//! ```
//! use tower_fault::BoxError;
//! use tower_retry_plus::error::DeadlineExceeded;
//!
//! let err: BoxError = Box::new(DeadlineExceeded::new());
//! assert!(err.downcast_ref::<DeadlineExceeded>().is_some());
//! ```

use std::{error::Error, fmt};

/// A builder was given a configuration that cannot work.
pub use tower_fault::ConfigError;

/// A configuration error of this layer.
pub(crate) fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> ConfigError {
    ConfigError::new("retry", message)
}

/// The total deadline of a logical request passed while an attempt was in flight.
///
/// When the deadline would pass during a backoff sleep, the layer does not sleep: it returns the
/// last attempt's outcome instead. This error is returned only when the deadline expires while
/// an attempt is running (or while the inner service is not ready), so there is no outcome to
/// return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlineExceeded(());

impl DeadlineExceeded {
    /// A new `DeadlineExceeded`.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("retry deadline exceeded")
    }
}

impl Error for DeadlineExceeded {}

/// One attempt took longer than the per-attempt timeout.
///
/// It is a transient failure that may have been processed: it is retried for idempotent methods
/// and for requests carrying an `Idempotency-Key`, and returned when attempts run out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptTimedOut(());

impl AttemptTimedOut {
    /// A new `AttemptTimedOut`.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("retry attempt timed out")
    }
}

impl Error for AttemptTimedOut {}

/// A [`ReplayBody`](crate::ReplayBody) clone was polled for bytes it can no longer provide:
/// the original body grew past the replay limit, or failed, while another clone read it.
///
/// The retry layer never starts an attempt with such a body; this error shows up only when a
/// caller clones a [`ReplayBody`](crate::ReplayBody) by hand and polls a stale clone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyNotReplayable(());

impl BodyNotReplayable {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for BodyNotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("request body can no longer be replayed")
    }
}

impl Error for BodyNotReplayable {}

/// A response body took longer than [`BodyTimeoutLayer`](crate::BodyTimeoutLayer)'s timeout,
/// counted from its response head; the body ends after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyTimedOut(());

impl BodyTimedOut {
    /// A new `BodyTimedOut`.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("response body timed out")
    }
}

impl Error for BodyTimedOut {}
