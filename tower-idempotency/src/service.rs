//! [`Idempotency`], the service.

use std::{
    fmt, mem,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_fault::{BoxError, IdempotencyKey};
use tower_service::Service;

use crate::{
    body::IdempotencyBody,
    config::Shared,
    detach::{Detachable, Flow},
    flow,
    future::ResponseFuture,
    key::{RecordKey, Scope},
    problems,
    store::IdempotencyStore,
    telemetry::{self, Outcome},
};

/// The service [`IdempotencyLayer`](crate::IdempotencyLayer) makes.
///
/// Its error is the inner service's: every failure of its own (bad key, conflict, store outage)
/// is a problem+json response, so it fits an axum `Router` as it is.
///
/// The inner response body must be `Unpin` (axum's, hyper's and `http-body-util`'s bodies are);
/// the request body must be buildable from `Bytes` (the layer reads it to fingerprint it, then
/// hands the handler an equal body).
pub struct Idempotency<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: Clone, St> Clone for Idempotency<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for Idempotency<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("config", &self.shared)
            .finish()
    }
}

impl<S, St> Idempotency<S, St> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, St, B, ResB> Service<Request<B>> for Idempotency<S, St>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Send + 'static,
{
    type Response = Response<IdempotencyBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Keep the service that was polled ready; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let config = &self.shared.config;
        if !config.methods.contains(req.method()) {
            return ResponseFuture::passthrough(inner.call(req));
        }
        let mut values = req.headers().get_all(&config.header).iter();
        let key = match (values.next(), values.next()) {
            (None, _) => {
                telemetry::request(&config.metrics, Outcome::MissingKey);
                if config.require_key {
                    return ResponseFuture::ready(problems::respond(problems::missing_key(
                        config.header.as_str(),
                    )));
                }
                return ResponseFuture::passthrough(inner.call(req));
            }
            (Some(_), Some(_)) => Err(format!("more than one `{}` header", config.header)),
            (Some(value), None) => IdempotencyKey::parse(value).map_err(|e| e.to_string()),
        };
        let key = match key {
            Ok(key) => key,
            Err(detail) => {
                telemetry::request(&config.metrics, Outcome::InvalidKey);
                return ResponseFuture::ready(problems::respond(problems::invalid_key(detail)));
            }
        };
        let (parts, body) = req.into_parts();
        let scope = config
            .principal
            .as_ref()
            .and_then(|extract| extract(&parts));
        if scope.is_none() && config.require_principal && !config.identified_by_credentials(&parts)
        {
            telemetry::request(&config.metrics, Outcome::MissingPrincipal);
            return ResponseFuture::ready(problems::respond(problems::missing_principal()));
        }
        let scope = scope.unwrap_or_else(Scope::anonymous);
        // Without a principal, the record is bound to the request's credentials (they go into
        // its fingerprint): no other caller is ever replayed it.
        let bound = scope.is_anonymous();
        // The record key is all the flow needs of the key and the scope: computed here, it is
        // the one of them the boxed future holds.
        let record_key = RecordKey::new(&scope, &key);
        ResponseFuture::keyed(Detachable::new(Box::pin(Flow::new(flow::run(
            Arc::clone(&self.shared),
            inner,
            parts,
            body,
            record_key,
            bound,
        )))))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use http::{HeaderValue, Request};
    use tower_layer::Layer;

    use super::*;
    use crate::{IdempotencyLayer, detach::Step};

    /// The keyed request's box is allocated and freed on every keyed request: past the
    /// allocator's per-thread cache (about 1 KiB) each request takes its slow path twice.
    #[test]
    fn a_keyed_request_future_fits_the_allocators_thread_cache() {
        let router: axum::Router =
            axum::Router::new().route("/", axum::routing::post(|| async { "ok" }));
        let service = IdempotencyLayer::default().layer(router);
        let (parts, body) = Request::post("/")
            .body(axum::body::Body::empty())
            .unwrap()
            .into_parts();
        let key = IdempotencyKey::parse(&HeaderValue::from_static("k")).unwrap();
        let size = size_of_flow(flow::run(
            Arc::clone(&service.shared),
            service.inner.clone(),
            parts,
            body,
            RecordKey::new(&Scope::anonymous(), &key),
            true,
        ));
        eprintln!("keyed future: {size} bytes");
        assert!(size <= 1024, "the keyed future is {size} bytes");
    }

    /// The size of the box `call` allocates for a keyed request running `_stage`.
    fn size_of_flow<A, R, T>(_stage: A) -> usize
    where
        A: Future<Output = Step<T, R>>,
    {
        size_of::<Flow<A, R>>()
    }
}
