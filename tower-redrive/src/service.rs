//! [`Redrive`]: the service [`RedriveLayer`](crate::RedriveLayer) produces.

use std::{
    fmt, mem,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_fault::{BoxError, Classify, HttpClassifier};
use tower_service::Service;

use crate::{future::ResponseFuture, handle::handle, layer::Shared, outcome::Outcome};

/// The service [`RedriveLayer`](crate::RedriveLayer) produces.
pub struct Redrive<S, C = HttpClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S, C> Redrive<S, C> {
    pub(crate) const fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
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

impl<S: Clone, C> Clone for Redrive<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Redrive<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Redrive");
        d.field("inner", &self.inner);
        self.shared.debug(d)
    }
}

impl<S, C, B, ResB> Service<Request<B>> for Redrive<S, C>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResB: Send + 'static,
{
    type Response = Outcome<Response<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service that was made ready goes with the request; a clone stays for the next.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture::new(Box::pin(handle(inner, Arc::clone(&self.shared), req)))
    }
}
