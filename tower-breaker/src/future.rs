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
    Breaker,
    breaker::{OnPanic, PermitGuard},
    error::BreakerError,
    server,
};

pin_project! {
    /// What a response future of the crate holds besides its permit: the inner call, or the
    /// rejection `R` made instead of calling (a [`BreakerError`] in client mode, a `503` in
    /// server mode).
    #[project = KindProj]
    enum Kind<F, R> {
        Called { #[pin] future: F },
        Rejected { rejection: Option<R> },
    }
}

impl<F, R> Kind<F, R> {
    fn name(&self) -> &'static str {
        match self {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        }
    }
}

/// How the one admission path ([`Guarded::admit`](crate::breaker::Guarded::admit)) makes a
/// service's response future: from the inner call under its permit, or from a rejection.
pub(crate) trait Admission<F, C> {
    /// The inner call's future, under `permit` (`None`: a request without a key goes through a
    /// keyed breaker unguarded).
    fn called(future: F, permit: Option<PermitGuard<C>>) -> Self;
    /// A call `breaker` refused.
    fn rejected(breaker: &Breaker, rejected: BreakerError) -> Self;
}

/// Polls the inner call and records its outcome on the permit once it completes: the one
/// polling path of every response future. An inner future that panics while polled is recorded
/// as a failure, and the panic goes on to the caller.
#[inline(always)]
fn poll_called<F, T, E, C>(
    future: Pin<&mut F>,
    permit: &mut Option<PermitGuard<C>>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, E>>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    let armed = OnPanic::arm(permit.as_mut());
    let polled = future.poll(cx);
    armed.disarm();
    let result = ready!(polled);
    // The permit (and its handle on the breaker) stays in the future until it is dropped:
    // releasing the handle here would put its atomic decrement behind the stores that move the
    // response out.
    if let Some(permit) = permit.as_mut() {
        permit.record(result.as_ref());
    }
    Poll::Ready(result)
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
        kind: Kind<F, BreakerError>,
        permit: Option<PermitGuard<C>>,
    }
}

impl<F, C> Admission<F, C> for ResponseFuture<F, C> {
    #[inline]
    fn called(future: F, permit: Option<PermitGuard<C>>) -> Self {
        Self {
            kind: Kind::Called { future },
            permit,
        }
    }

    fn rejected(_: &Breaker, rejected: BreakerError) -> Self {
        Self {
            kind: Kind::Rejected {
                rejection: Some(rejected),
            },
            permit: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("kind", &self.kind.name())
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
                poll_called(future, this.permit, cx).map(|result| result.map_err(Into::into))
            }
            KindProj::Rejected { rejection } => {
                let rejected = rejection
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Err(Box::new(rejected)))
            }
        }
    }
}

pin_project! {
    /// The response future of [`ServerCircuitBreaker`](crate::server::ServerCircuitBreaker) and
    /// [`KeyedServerCircuitBreaker`](crate::server::KeyedServerCircuitBreaker): as
    /// [`ResponseFuture`], with a rejection answered as a response.
    pub struct ServerResponseFuture<F, C, B> {
        #[pin]
        kind: Kind<F, Response<ResponseBody<B>>>,
        permit: Option<PermitGuard<C>>,
    }
}

impl<F, C, B> Admission<F, C> for ServerResponseFuture<F, C, B> {
    #[inline]
    fn called(future: F, permit: Option<PermitGuard<C>>) -> Self {
        Self {
            kind: Kind::Called { future },
            permit,
        }
    }

    fn rejected(breaker: &Breaker, rejected: BreakerError) -> Self {
        Self {
            kind: Kind::Rejected {
                rejection: Some(server::rejection(breaker, rejected)),
            },
            permit: None,
        }
    }
}

impl<F, C, B> fmt::Debug for ServerResponseFuture<F, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerResponseFuture")
            .field("kind", &self.kind.name())
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
            KindProj::Called { future } => poll_called(future, this.permit, cx)
                .map(|result| result.map(|res| res.map(ResponseBody::inner))),
            KindProj::Rejected { rejection } => Poll::Ready(Ok(rejection
                .take()
                .expect("ServerResponseFuture polled after completion"))),
        }
    }
}
