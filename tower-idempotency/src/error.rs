//! Errors: invalid configuration, and a store that could not answer.

use std::{error::Error, fmt};

use tower_fault::BoxError;

/// A builder was given a configuration that makes no sense.
pub use tower_fault::ConfigError;

/// A configuration error of this layer.
pub(crate) fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> ConfigError {
    ConfigError::new("idempotency", message)
}

/// A store operation failed (unreachable, timed out, full, corrupt record).
///
/// A failed claim becomes the layer's outage policy (fail closed with 503, or fail open); a
/// failed `complete` or `release` after the handler ran is logged and counted, and the client
/// gets the handler's response. It never reaches the client as an error value.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<BoxError>,
}

/// What kind of store failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend could not be reached or answered with an error.
    Backend,
    /// A bounded store is full of records it may not evict (in-flight claims).
    Full,
    /// A record could not be decoded.
    Corrupt,
}

impl StoreError {
    /// A store error of a kind, with its cause.
    pub fn new(kind: StoreErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// A store error without a cause.
    #[must_use]
    pub const fn from_kind(kind: StoreErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// The kind of failure.
    #[must_use]
    pub const fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::Backend => "idempotency store unavailable",
            StoreErrorKind::Full => "idempotency store is full of in-flight claims",
            StoreErrorKind::Corrupt => "idempotency store returned a corrupt record",
        };
        match &self.source {
            Some(source) => write!(f, "{what}: {source}"),
            None => f.pad(what),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
