//! Server mode: answer `503` + `Retry-After` + problem+json instead of returning an error.
//!
//! [`ServerBreakerLayer`] (one breaker, from
//! [`BreakerLayer::server_mode`]) and
//! [`KeyedServerBreakerLayer`] (one breaker per key, from
//! [`KeyedBreakerLayer::server_mode`](crate::KeyedBreakerLayer::server_mode)) wrap the client
//! mode's services: they admit, call and record through the same code, and answer rejections
//! through one function, so both answer alike.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{Response, StatusCode};
use tower_fault::{Classify, HttpClassifier, RetryAfterHint, body::ResponseBody, problem::Problem};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    Breaker, BreakerLayer, CircuitBreaker, State, error::BreakerError, future::ServerResponseFuture,
};

mod keyed;

pub use keyed::{KeyedServerBreakerLayer, KeyedServerCircuitBreaker};

/// The problem `type` of a server-mode rejection.
pub use tower_fault::problem::types::BREAKER_OPEN as PROBLEM_TYPE;

/// A [`BreakerLayer`] in server mode; see
/// [`BreakerLayer::server_mode`].
///
/// A rejected request gets `503 Service Unavailable` with a `Retry-After` of the remaining open
/// time plus up to 10% jitter (rounded up to whole seconds; 1 s when half-open and full, none
/// when forced open) and an RFC 9457 body of type [`PROBLEM_TYPE`]. The response body type is
/// [`ResponseBody<B>`] and the error type is the inner service's, so an axum `Router` with
/// `Infallible` routes accepts it:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use axum::{Router, routing::get};
/// use tower_breaker::Breaker;
///
/// let breaker = Breaker::builder().name("checkout").build().unwrap();
/// let app: Router = Router::new()
///     .route("/checkout", get(|| async { "ok" }))
///     .layer(breaker.layer().server_mode());
/// # let _ = app;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ServerBreakerLayer<C = HttpClassifier> {
    layer: BreakerLayer<C>,
}

impl<C> ServerBreakerLayer<C> {
    pub(crate) const fn from_layer(layer: BreakerLayer<C>) -> Self {
        Self { layer }
    }

    /// The breaker.
    #[must_use]
    pub const fn breaker(&self) -> &Breaker {
        self.layer.breaker()
    }
}

impl<S, C: Clone> Layer<S> for ServerBreakerLayer<C> {
    type Service = ServerCircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerCircuitBreaker {
            guarded: self.layer.layer(inner),
        }
    }
}

/// A service guarded by a breaker in server mode; see [`ServerBreakerLayer`].
///
/// It is a [`CircuitBreaker`] whose rejections are answered as responses: admission, panics and
/// recording are the client mode's.
#[derive(Debug)]
pub struct ServerCircuitBreaker<S, C = HttpClassifier> {
    guarded: CircuitBreaker<S, C>,
}

impl<S: Clone, C> Clone for ServerCircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            guarded: self.guarded.clone(),
        }
    }
}

impl<S, C> ServerCircuitBreaker<S, C> {
    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        self.guarded.breaker()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.guarded.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.guarded.get_mut()
    }

    /// Consumes the guard, returning the inner service.
    pub fn into_inner(self) -> S {
        self.guarded.into_inner()
    }
}

impl<S, C, Req, B> Service<Req> for ServerCircuitBreaker<S, C>
where
    S: Service<Req, Response = Response<B>>,
    C: Classify<Response<B>, S::Error>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = S::Error;
    type Future = ServerResponseFuture<S::Future, C, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.guarded.get_mut().poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.guarded.guard(req)
    }
}

/// The `503` answering a rejection by `breaker`: `Retry-After` is the remaining open time plus
/// up to 10% jitter (1 s when half-open and full, none when forced open), the body a problem of
/// type [`PROBLEM_TYPE`].
pub(crate) fn rejection<B>(breaker: &Breaker, rejected: BreakerError) -> Response<ResponseBody<B>> {
    let retry_after = match (rejected.retry_after(), rejected.state()) {
        (Some(remaining), _) => {
            let jitter = remaining.mul_f64(0.1 * breaker.inner.random_f64());
            Some(remaining + jitter)
        }
        (None, State::HalfOpen) => Some(Duration::from_secs(1)),
        (None, _) => None,
    };
    let mut problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        PROBLEM_TYPE,
        "Circuit breaker open",
    )
    .detail(format!("{}: {rejected}", breaker.name()));
    if let Some(delay) = retry_after {
        problem = problem.retry_after(delay);
    }
    problem.into_response()
}
