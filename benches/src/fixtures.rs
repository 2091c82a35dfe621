//! The requests, responses and bare services every group shares.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::util::ServiceFn;

/// The request the retry and failover groups send: `POST /orders` with three headers and a small
/// `Full<Bytes>` body, so a clone costs what a real client request's clone costs.
#[must_use]
pub fn http_request() -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri("http://api.example.test/orders")
        .header("content-type", "application/json")
        .header("authorization", "Bearer 0123456789abcdef")
        .header("x-request-id", "4f1c2a9e-6b7d-4e0a-9c3b-2d8f5a1e7c60")
        .body(Full::new(Bytes::from_static(
            b"{\"sku\":\"A-1\",\"qty\":1}",
        )))
        .expect("valid request")
}

/// The smallest request a client sends: `GET /orders`, no headers, an empty body. Copying it
/// costs next to nothing, so what a layer costs beyond that copy shows.
#[must_use]
pub fn minimal_request() -> Request<Full<Bytes>> {
    Request::get("/orders")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// The future of the bare services: answers at once.
pub type BareFuture<T> = Ready<Result<T, Infallible>>;

/// A bare `service_fn` over `http::Request<B>` answering `200` with an empty `Full<Bytes>` body.
pub type BareHttpOf<B> = ServiceFn<fn(Request<B>) -> BareFuture<Response<Full<Bytes>>>>;

/// [`BareHttpOf`] the shared request's body type.
pub type BareHttp = BareHttpOf<Full<Bytes>>;

/// A bare `service_fn` over `http::Request<()>` answering `200` with `()`: the breaker group's
/// inner service, so the breaker's own cost is what is measured.
pub type BareUnit = ServiceFn<fn(Request<()>) -> BareFuture<Response<()>>>;

fn answer_http<B>(_req: Request<B>) -> BareFuture<Response<Full<Bytes>>> {
    ready(Ok(Response::new(Full::new(Bytes::new()))))
}

fn answer_unit(_req: Request<()>) -> BareFuture<Response<()>> {
    ready(Ok(Response::new(())))
}

/// The bare HTTP service.
#[must_use]
pub fn bare_http() -> BareHttp {
    bare_http_of()
}

/// The bare HTTP service over any request body type (e.g. a retry layer's replayable body).
#[must_use]
pub fn bare_http_of<B>() -> BareHttpOf<B> {
    tower::service_fn(answer_http::<B> as fn(_) -> _)
}

/// The bare unit service.
#[must_use]
pub fn bare_unit() -> BareUnit {
    tower::service_fn(answer_unit as fn(_) -> _)
}

/// The bare unit service's answer in a future as large as a real client's (a hyper-util
/// response future inside any layer is several hundred bytes): 128 bytes of state next to the
/// answer. Past 128 bytes a future is copied with a `memcpy` call at every move, where a
/// smaller one is copied in registers, so a layer's extra moves of the inner future show here
/// and not around the tiny bare future.
#[derive(Debug)]
pub struct PaddedFuture {
    answer: BareFuture<Response<()>>,
    state: [u64; 16],
}

impl Future for PaddedFuture {
    type Output = Result<Response<()>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::hint::black_box(&self.state);
        Pin::new(&mut self.answer).poll(cx)
    }
}

/// [`BareUnit`] answering through a [`PaddedFuture`].
pub type PaddedUnit = ServiceFn<fn(Request<()>) -> PaddedFuture>;

fn answer_padded(_req: Request<()>) -> PaddedFuture {
    PaddedFuture {
        answer: ready(Ok(Response::new(()))),
        state: [0; 16],
    }
}

/// The bare unit service with a real client's future size (see [`PaddedFuture`]).
#[must_use]
pub fn padded_unit() -> PaddedUnit {
    tower::service_fn(answer_padded as fn(_) -> _)
}
