//! [`BreakerLayer`]: wraps services in a [`CircuitBreaker`].

use std::sync::Arc;

use tower_fault::HttpClassifier;
use tower_layer::Layer;

use crate::{Breaker, CircuitBreaker, breaker::Guarded, server::ServerBreakerLayer};

/// Guards the services it wraps with one shared [`Breaker`].
///
/// Every service this layer wraps — however often [`Layer::layer`] is called, and every clone
/// of the layer — uses the same breaker. The classifier (default [`HttpClassifier`]) decides
/// what an outcome is: `Transient` counts as a failure, `Permanent` is ignored by default.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
/// use tower_breaker::Breaker;
/// use tower_fault::BoxError;
///
/// let breaker = Breaker::builder().name("upstream").consecutive_failures(1).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(breaker.layer())
///     .service(service_fn(|_req: http::Request<()>| async {
///         Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap())
///     }));
///
/// let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// assert_eq!(res.status(), 503); // a transient failure: the breaker opens
/// let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
/// assert!(err.downcast_ref::<tower_breaker::error::BreakerError>().is_some());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = HttpClassifier> {
    breaker: Breaker,
    classifier: C,
}

impl BreakerLayer<HttpClassifier> {
    /// A layer over `breaker` with the default classifier.
    #[must_use]
    pub fn new(breaker: Breaker) -> Self {
        Self {
            breaker,
            classifier: HttpClassifier::default(),
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Uses another classifier (any `tower_fault::Classify` over the inner service's response
    /// and error, e.g. `tower_fault::classify_fn`).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker.
    #[must_use]
    pub const fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The same breaker in server mode: a rejected request is answered with `503 Service
    /// Unavailable`, `Retry-After` and a problem+json body, and the inner service's error type
    /// is kept (so it drops into an axum `Router`). See [`ServerBreakerLayer`].
    #[must_use]
    pub fn server_mode(self) -> ServerBreakerLayer<C> {
        ServerBreakerLayer::from_layer(self)
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_shared(
            inner,
            Arc::new(Guarded {
                breaker: self.breaker.clone(),
                classifier: self.classifier.clone(),
            }),
        )
    }
}
