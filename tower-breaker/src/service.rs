//! [`CircuitBreaker`]: the service.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower_fault::{BoxError, Classify, HttpClassifier};
use tower_service::Service;

use crate::{
    Breaker,
    breaker::Guarded,
    future::{Admission, ResponseFuture},
};

/// A service guarded by a [`Breaker`]; made by [`BreakerLayer`](crate::BreakerLayer).
///
/// `poll_ready` is the inner service's: an open breaker does not apply backpressure, it rejects
/// in the response future at once (like tower's `load_shed`) with a
/// [`BreakerError`](crate::error::BreakerError), boxed. Inner errors are boxed unchanged.
///
/// A rejected call does not use the readiness `poll_ready` obtained from the inner service; a
/// service that reserves capacity in `poll_ready` keeps it for the next call.
///
/// An inner service that panics in `call` or while its future is polled fails the call: it is
/// recorded as a failure (a half-open probe that panics re-opens the breaker) and the panic
/// goes on to the caller unchanged. A panic in the classifier records nothing and frees the
/// permit: it says nothing about the upstream.
#[derive(Debug)]
pub struct CircuitBreaker<S, C = HttpClassifier> {
    inner: S,
    shared: Arc<Guarded<C>>,
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Guarded<C>>) -> Self {
        Self { inner, shared }
    }

    /// Guards `inner` with `breaker`, using `classifier`.
    pub fn new(inner: S, breaker: Breaker, classifier: C) -> Self {
        Self::from_shared(
            inner,
            Arc::new(Guarded {
                breaker,
                classifier,
            }),
        )
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.shared.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the guard, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Calls the inner service through the breaker, making the response future `A` (client or
    /// server mode: they differ only in how a rejection is answered).
    #[inline]
    pub(crate) fn guard<Req, A>(&mut self, req: Req) -> A
    where
        S: Service<Req>,
        A: Admission<S::Future, C>,
    {
        self.shared.admit(&mut self.inner, req)
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.guard(req)
    }
}
