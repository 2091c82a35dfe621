//! The breakers the breaker group compares over the bare unit service, shared by the bench and
//! the profiling probe (`examples/breaker_probe.rs`).

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};

use crate::fixtures::{BareUnit, bare_unit};

/// recloser's async wrapper around the bare service's future, as a tower service (recloser is
/// not a tower layer; this is the thinnest adapter that makes it one).
#[derive(Clone)]
#[allow(missing_debug_implementations)] // recloser's types are not Debug
pub struct Recloser<S = BareUnit> {
    breaker: recloser::AsyncRecloser,
    inner: S,
}

impl Recloser {
    /// Error rate 0.5 over the last 100 calls (ours' count window), 30 s open.
    #[must_use]
    pub fn new() -> Self {
        Self::over(bare_unit())
    }
}

impl<S> Recloser<S> {
    /// [`Recloser::new`] around `inner`.
    #[must_use]
    pub fn over(inner: S) -> Self {
        let breaker = recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(100)
            .half_open_len(10)
            .open_wait(Duration::from_secs(30))
            .build();
        Self {
            breaker: breaker.into(),
            inner,
        }
    }
}

impl<S> Service<Request<()>> for Recloser<S>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    type Response = Response<()>;
    type Error = recloser::Error<Infallible>;
    type Future = recloser::RecloserFuture<S::Future, recloser::AnyError>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

impl Default for Recloser {
    fn default() -> Self {
        Self::new()
    }
}

/// Our breaker over the bare unit service.
pub type Ours<S = BareUnit> = <tower_breaker::BreakerLayer as Layer<S>>::Service;

/// Our breaker (defaults but for the window, a minimum of 10 calls and a 50 % threshold).
#[must_use]
pub fn ours(window: tower_breaker::Window) -> Ours {
    ours_over(window, bare_unit())
}

/// [`ours`] around `inner`.
#[must_use]
pub fn ours_over<S>(window: tower_breaker::Window, inner: S) -> Ours<S> {
    tower_breaker::Breaker::builder()
        .name("bench")
        .window(window)
        .minimum_calls(10)
        .failure_rate_threshold(0.5)
        .build()
        .expect("valid config")
        .layer()
        .layer(inner)
}

/// [`ours`] with a count window of 100 calls.
#[must_use]
pub fn ours_count() -> Ours {
    ours(tower_breaker::Window::count(100))
}
