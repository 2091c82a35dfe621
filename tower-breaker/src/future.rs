//! Response futures.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;
use tower_fault::{BoxError, Classify, body::ResponseBody};

use crate::{
    breaker::{OnPanic, PermitGuard},
    error::BreakerError,
};

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { error: Option<BreakerError> },
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker) and
    /// [`KeyedCircuitBreaker`](crate::keyed::KeyedCircuitBreaker).
    ///
    /// Holds the call's permit: the outcome is classified and recorded when the inner future
    /// completes; dropping the future first (a cancelled call) records nothing and frees a
    /// half-open probe slot. An inner future that panics while polled is recorded as a failure,
    /// and the panic goes on to the caller.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        permit: Option<PermitGuard<C>>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Option<PermitGuard<C>>) -> Self {
        Self {
            kind: Kind::Called { future },
            permit,
        }
    }

    pub(crate) fn rejected(error: BreakerError) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
            permit: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, T, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let armed = OnPanic::arm(this.permit.as_mut());
                let polled = future.poll(cx);
                armed.disarm();
                let result = ready!(polled);
                // The permit (and its handle on the breaker) stays in the future until it is
                // dropped: releasing the handle here measured slower (its atomic decrement then
                // waits behind the stores that move the response out).
                if let Some(permit) = this.permit.as_mut() {
                    permit.record(result.as_ref());
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => {
                let error = error
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Err(Box::new(error)))
            }
        }
    }
}

pin_project! {
    #[project = ServerKindProj]
    enum ServerKind<F, B> {
        Called { #[pin] future: F },
        Rejected { response: Option<Response<ResponseBody<B>>> },
    }
}

pin_project! {
    /// The response future of [`ServerCircuitBreaker`](crate::server::ServerCircuitBreaker) and
    /// [`KeyedServerCircuitBreaker`](crate::server::KeyedServerCircuitBreaker).
    pub struct ServerResponseFuture<F, C, B> {
        #[pin]
        kind: ServerKind<F, B>,
        permit: Option<PermitGuard<C>>,
    }
}

impl<F, C, B> ServerResponseFuture<F, C, B> {
    pub(crate) fn called(future: F, permit: Option<PermitGuard<C>>) -> Self {
        Self {
            kind: ServerKind::Called { future },
            permit,
        }
    }

    pub(crate) fn rejected(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: ServerKind::Rejected {
                response: Some(response),
            },
            permit: None,
        }
    }
}

impl<F, C, B> fmt::Debug for ServerResponseFuture<F, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ServerKind::Called { .. } => "called",
            ServerKind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ServerResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, B, E, C> Future for ServerResponseFuture<F, C, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify<Response<B>, E>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            ServerKindProj::Called { future } => {
                let armed = OnPanic::arm(this.permit.as_mut());
                let polled = future.poll(cx);
                armed.disarm();
                let result = ready!(polled);
                if let Some(permit) = this.permit.as_mut() {
                    permit.record(result.as_ref());
                }
                Poll::Ready(result.map(|res| res.map(ResponseBody::inner)))
            }
            ServerKindProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("ServerResponseFuture polled after completion"))),
        }
    }
}
