//! Errors: configuration, queue, the failures the layer adds, and a delivery that panicked.
//!
//! Every error the [`Redrive`](crate::Redrive) service adds is boxed into a
//! [`tower_fault::BoxError`] and can be recovered with `downcast_ref`.

use std::{error::Error, fmt, time::Duration};

use tower_fault::BoxError;

use crate::entry::EntryId;

/// A configuration that makes no sense.
pub use tower_fault::ConfigError;

/// A configuration error of this layer.
pub(crate) fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> ConfigError {
    ConfigError::new("redrive", message)
}

/// A queue operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum QueueError {
    /// The worker's lease on the entry expired and another worker claimed it (or it was
    /// requeued/purged meanwhile); the outcome was not recorded, or the lease was not renewed.
    LeaseLost {
        /// The entry.
        id: EntryId,
    },
    /// The database schema is newer than this version of the crate understands.
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this crate ships.
        supported: i64,
    },
    /// There is no queue where one was to be opened: a SQLite file that does not exist or is
    /// empty, or a PostgreSQL database without the queue's tables. Opening a queue never
    /// creates one unless asked to ([`SqliteQueue::open_or_create`](crate::SqliteQueue::open_or_create),
    /// [`PostgresQueue::connect`](crate::PostgresQueue::connect)), so a mistyped path is an
    /// error instead of a new, empty queue.
    NoQueue {
        /// Where: the file's path, or the PostgreSQL database's name.
        location: String,
        /// Why there is no queue there.
        reason: &'static str,
    },
    /// The store failed (I/O, SQL, connection).
    Backend {
        /// What the queue was doing.
        op: &'static str,
        /// The store's error.
        source: BoxError,
    },
}

impl QueueError {
    /// The error of a store backend (the SQLite and PostgreSQL queues).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn backend(op: &'static str, source: impl Into<BoxError>) -> Self {
        QueueError::Backend {
            op,
            source: source.into(),
        }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::LeaseLost { id } => {
                write!(
                    f,
                    "lease on redrive entry {id} was lost before its outcome was recorded"
                )
            }
            QueueError::SchemaTooNew { found, supported } => write!(
                f,
                "redrive queue schema version {found} is newer than this build supports ({supported}); upgrade tower-redrive"
            ),
            QueueError::NoQueue { location, reason } => {
                write!(f, "no redrive queue at {location}: {reason}")
            }
            QueueError::Backend { op, source } => {
                write!(f, "redrive queue failed to {op}: {source}")
            }
        }
    }
}

impl Error for QueueError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            QueueError::Backend { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// The request body is larger than the configured cap, so it could not be persisted; it was
/// neither sent nor queued (never truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    /// The configured cap in bytes.
    pub limit: usize,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body exceeds the redrive cap of {} bytes; it was not sent and not queued",
            self.limit
        )
    }
}

impl Error for BodyTooLarge {}

/// Reading the request body failed before anything was sent.
#[derive(Debug)]
pub struct BodyError {
    source: BoxError,
}

impl BodyError {
    pub(crate) fn new(source: BoxError) -> Self {
        Self { source }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("failed to read the request body; it was not sent and not queued")
    }
}

impl Error for BodyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// A request failed transiently and could not be persisted: nothing was acknowledged.
///
/// The caller must treat the request as failed (it may or may not have reached the upstream,
/// as the `failure` description says). An enqueue that timed out may still have been stored
/// and be re-driven later: a retry should carry [`idempotency_key`](Self::idempotency_key), so
/// that a server running an idempotency layer executes the request once either way.
#[derive(Debug)]
pub struct EnqueueFailed {
    failure: String,
    idempotency_key: String,
    source: QueueError,
}

impl EnqueueFailed {
    pub(crate) fn new(failure: String, idempotency_key: String, source: QueueError) -> Self {
        Self {
            failure,
            idempotency_key,
            source,
        }
    }

    /// The `Idempotency-Key` the request carried: the caller's own, or the one the layer
    /// generated for it (which the caller has not seen otherwise).
    #[must_use]
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// The transient failure that made the request worth queueing.
    #[must_use]
    pub fn failure(&self) -> &str {
        &self.failure
    }

    /// A suggested wait before the caller tries again.
    #[must_use]
    pub const fn retry_after(&self) -> Duration {
        Duration::from_secs(30)
    }
}

impl fmt::Display for EnqueueFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request failed ({}) and could not be queued for re-delivery",
            self.failure
        )
    }
}

impl Error for EnqueueFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// The delivery service panicked while an entry was being delivered.
///
/// The worker records it as the attempt's error (an unrecognised error: transient, possibly
/// processed), so the entry is re-driven on its schedule and dead-lettered with this message if
/// it keeps panicking, instead of the panic ending the worker's task.
#[derive(Debug, Clone)]
pub struct DeliveryPanicked {
    message: String,
}

impl DeliveryPanicked {
    pub(crate) const fn new(message: String) -> Self {
        Self { message }
    }

    /// The panic's message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DeliveryPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the delivery service panicked: {}", self.message)
    }
}

impl Error for DeliveryPanicked {}
