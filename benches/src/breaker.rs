//! The breakers the breaker group compares over the bare unit service, shared by the bench and
//! the profiling probe (`examples/breaker_probe.rs`).

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};

use crate::fixtures::{BareFuture, BareUnit, bare_unit};

/// recloser's async wrapper around the bare service's future, as a tower service (recloser is
/// not a tower layer; this is the thinnest adapter that makes it one).
#[derive(Clone)]
#[allow(missing_debug_implementations)] // recloser's types are not Debug
pub struct Recloser {
    breaker: recloser::AsyncRecloser,
    inner: BareUnit,
}

impl Recloser {
    /// Error rate 0.5 over the last 100 calls (ours' count window), 30 s open.
    #[must_use]
    pub fn new() -> Self {
        let breaker = recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(100)
            .half_open_len(10)
            .open_wait(Duration::from_secs(30))
            .build();
        Self {
            breaker: breaker.into(),
            inner: bare_unit(),
        }
    }
}

impl Service<Request<()>> for Recloser {
    type Response = Response<()>;
    type Error = recloser::Error<Infallible>;
    type Future = recloser::RecloserFuture<BareFuture<Response<()>>, recloser::AnyError>;

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
pub type Ours = <tower_breaker::BreakerLayer as Layer<BareUnit>>::Service;

/// Our breaker (defaults but for the window, a minimum of 10 calls and a 50 % threshold).
#[must_use]
pub fn ours(window: tower_breaker::Window) -> Ours {
    tower_breaker::Breaker::builder()
        .name("bench")
        .window(window)
        .minimum_calls(10)
        .failure_rate_threshold(0.5)
        .build()
        .expect("valid config")
        .layer()
        .layer(bare_unit())
}

/// [`ours`] with a count window of 100 calls.
#[must_use]
pub fn ours_count() -> Ours {
    ours(tower_breaker::Window::count(100))
}
