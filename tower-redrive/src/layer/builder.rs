//! [`RedriveLayerBuilder`]: the layer's own settings.

use std::{fmt, sync::Arc};

use http::{HeaderName, request::Parts};
use tower_fault::HttpClassifier;

use crate::{
    ConfigError,
    layer::{RedriveLayer, Shared},
    queue::RedriveQueue,
    settings::{RedriveSettings, Stream},
};

/// Extracts the ordering key of a request.
pub type OrderingKeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The default body cap, 1 MiB: every deferred body is stored in the queue, so the cap bounds
/// the queue's growth per request and the memory a request holds while it is buffered; a larger
/// body is refused before anything is sent.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Builds a [`RedriveLayer`]: the settings only the layer reads. What it shares with the
/// worker (name, classifier, clock, schedule, seed) is in [`RedriveSettings`].
pub struct RedriveLayerBuilder<C = HttpClassifier> {
    queue: Arc<dyn RedriveQueue>,
    settings: RedriveSettings<C>,
    max_body_bytes: usize,
    ordering_key: Option<OrderingKeyFn>,
    strict_order: bool,
    record_permanent: bool,
}

impl<C> fmt::Debug for RedriveLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedriveLayerBuilder")
            .field("queue", &self.queue)
            .field("settings", &self.settings)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("ordered", &self.ordering_key.is_some())
            .field("strict_order", &self.strict_order)
            .field("record_permanent", &self.record_permanent)
            .finish()
    }
}

impl<C> RedriveLayerBuilder<C> {
    pub(crate) fn new(queue: Arc<dyn RedriveQueue>, settings: RedriveSettings<C>) -> Self {
        Self {
            queue,
            settings,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ordering_key: None,
            // An ordering key promises order: a request sent past a queued one breaks it.
            strict_order: true,
            // A permanent failure is the caller's to handle: it gets the failure as it is.
            record_permanent: false,
        }
    }

    /// The largest body the layer accepts, in bytes (default [`DEFAULT_MAX_BODY_BYTES`],
    /// 1 MiB). A larger body is refused with [`BodyTooLarge`](crate::BodyTooLarge) before
    /// anything is sent.
    #[must_use]
    pub const fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Orders delivery per key (default: no ordering key): entries with the same key are
    /// delivered in the order they were queued, and a new request is queued behind a pending
    /// entry with its key instead of overtaking it.
    ///
    /// What is ordered is what the queue holds. Two requests with the same key that are both
    /// in flight at once (neither queued yet: the first still going through its retries) are
    /// sent as they come, and either may reach the upstream first; a caller that needs strict
    /// order across those sends them one after the other.
    #[must_use]
    pub fn ordering_key(
        mut self,
        extract: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.ordering_key = Some(Arc::new(extract));
        self
    }

    /// Orders delivery per value of a request header (e.g. a tenant id).
    #[must_use]
    pub fn ordering_key_header(self, header: HeaderName) -> Self {
        self.ordering_key(move |parts| {
            parts
                .headers
                .get(&header)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        })
    }

    /// No ordering key: entries are delivered as they fall due (the default).
    #[must_use]
    pub fn no_ordering_key(mut self) -> Self {
        self.ordering_key = None;
        self
    }

    /// Whether a new request is queued behind a pending entry with the same ordering key without
    /// being sent (default `true`). With `false`, requests are sent at once and only the queue's
    /// own deliveries are ordered.
    #[must_use]
    pub const fn strict_order(mut self, strict: bool) -> Self {
        self.strict_order = strict;
        self
    }

    /// Records permanent failures in the dead-letter queue (default `false`); the caller still
    /// gets the failure as it is.
    #[must_use]
    pub const fn record_permanent(mut self, record: bool) -> Self {
        self.record_permanent = record;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// A zero body cap.
    pub fn build(self) -> Result<RedriveLayer<C>, ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(crate::error::config_error(
                "max_body_bytes must be greater than zero",
            ));
        }
        Ok(self.finish())
    }

    /// The layer, without validation: for settings known to be valid.
    pub(crate) fn finish(self) -> RedriveLayer<C> {
        let parts = self.settings.into_parts(Stream::Layer);
        RedriveLayer::from_shared(Arc::new(Shared {
            name: parts.name,
            classifier: parts.classifier,
            clock: parts.clock,
            scheduler: parts.scheduler,
            queue: self.queue,
            max_body_bytes: self.max_body_bytes,
            ordering_key: self.ordering_key,
            strict_order: self.strict_order,
            record_permanent: self.record_permanent,
        }))
    }
}
