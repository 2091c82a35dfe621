//! The requests, responses and bare services every group shares.

use std::convert::Infallible;
use std::future::{Ready, ready};

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
