//! [`IdempotencyLayer`].

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use crate::{
    builder::IdempotencyLayerBuilder, config::Shared, service::Idempotency, store::MemoryStore,
};

/// Executes each keyed request once and replays its response to duplicates.
///
/// One layer value holds one store and one configuration; every service it makes (every
/// `layer()` call, every clone) shares them.
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_idempotency::IdempotencyLayer;
///
/// let app: Router = Router::new()
///     .route("/payments", post(|| async { "charged" }))
///     .layer(IdempotencyLayer::default());
/// # let _ = app;
/// ```
pub struct IdempotencyLayer<St = MemoryStore> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St> fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyLayer")
            .field(&self.shared)
            .finish()
    }
}

impl IdempotencyLayer<MemoryStore> {
    /// A builder starting from the defaults (see [`IdempotencyLayerBuilder::new`]).
    pub fn builder() -> IdempotencyLayerBuilder<MemoryStore> {
        IdempotencyLayerBuilder::new()
    }
}

/// The defaults of [`IdempotencyLayerBuilder::new`], built: an in-process [`MemoryStore`].
impl Default for IdempotencyLayer<MemoryStore> {
    fn default() -> Self {
        IdempotencyLayerBuilder::new()
            .build()
            .expect("the builder's defaults are valid")
    }
}

impl<St> IdempotencyLayer<St> {
    pub(crate) fn from_shared(shared: Shared<St>) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<S, St> Layer<S> for IdempotencyLayer<St> {
    type Service = Idempotency<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::from_parts(inner, Arc::clone(&self.shared))
    }
}
