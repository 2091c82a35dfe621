//! The futures of [`Redrive`](crate::Redrive) and [`RedriveGateway`](crate::RedriveGateway).

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;
use tower_fault::{BoxError, body::ResponseBody};

use crate::{gateway, outcome::Outcome};

/// The future of [`Redrive`](crate::Redrive).
///
/// Boxed inside: a call buffers the body and may write to a database, which dwarfs an allocation.
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>,
}

impl<T> ResponseFuture<T> {
    pub(crate) fn new(inner: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>) -> Self {
        Self { inner }
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

pin_project! {
    /// The future of [`RedriveGateway`](crate::RedriveGateway): maps every outcome to a response.
    pub struct GatewayFuture<B> {
        #[pin]
        inner: ResponseFuture<Outcome<Response<B>>>,
    }
}

impl<B> GatewayFuture<B> {
    pub(crate) fn new(inner: ResponseFuture<Outcome<Response<B>>>) -> Self {
        Self { inner }
    }
}

impl<B> fmt::Debug for GatewayFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayFuture").finish_non_exhaustive()
    }
}

impl<B> Future for GatewayFuture<B> {
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.project().inner.poll(cx));
        Poll::Ready(Ok(gateway::to_response(result)))
    }
}
