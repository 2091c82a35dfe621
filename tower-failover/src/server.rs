//! Server mode: "no healthy endpoint" as a `503` problem response.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_fault::{BoxError, RetryAfterHint, body::ResponseBody, problem::Problem};
use tower_service::Service;

use crate::error::NoHealthyEndpoint;

/// The problem `type` URI of the 503 answered in server mode.
pub use tower_fault::problem::types::NO_HEALTHY_ENDPOINT as NO_HEALTHY_ENDPOINT_TYPE;

/// Wraps a [`Failover`](crate::Failover) (or any service whose errors may be
/// [`NoHealthyEndpoint`]) so that this error becomes a `503 Service Unavailable`
/// `application/problem+json` response with `Retry-After` when a hint is known. Other errors
/// pass through (put axum's `HandleErrorLayer` above for those).
///
/// Built by [`Failover::server_mode`](crate::Failover::server_mode).
#[derive(Debug, Clone)]
pub struct ServerMode<S> {
    inner: S,
}

impl<S> ServerMode<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for ServerMode<S>
where
    S: Service<Request<B>, Response = Response<ResB>, Error = BoxError>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = BoxError;
    type Future = ServerModeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ServerModeFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`ServerMode`].
    #[derive(Debug)]
    pub struct ServerModeFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResB> Future for ServerModeFuture<F>
where
    F: Future<Output = Result<Response<ResB>, BoxError>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.project().inner.poll(cx)) {
            Ok(res) => Poll::Ready(Ok(res.map(ResponseBody::inner))),
            Err(err) => match err.downcast_ref::<NoHealthyEndpoint>() {
                Some(rejection) => {
                    let mut problem = Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        NO_HEALTHY_ENDPOINT_TYPE,
                        "No healthy endpoint",
                    )
                    .detail("every upstream endpoint is unhealthy or ejected");
                    if let Some(d) = rejection.retry_after() {
                        problem = problem.retry_after(d);
                    }
                    Poll::Ready(Ok(problem.into_response()))
                }
                None => Poll::Ready(Err(err)),
            },
        }
    }
}
