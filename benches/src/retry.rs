//! The services the retry group compares, shared by the bench and the profiling probe
//! (`examples/retry_probe.rs`).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::Layer;

use crate::fixtures::{BareHttp, BareHttpOf, bare_http, bare_http_of};

/// The request of the retry group.
pub type Req = Request<Full<Bytes>>;
/// The response of the retry group.
pub type Res = Response<Full<Bytes>>;

/// tower's retry with the simplest useful policy: up to `n` attempts on error (any response
/// type: the retry group's and the e2e bench's).
#[derive(Clone, Debug)]
pub struct Attempts(pub usize);

impl<R, E> tower::retry::Policy<Req, R, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<R, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// `tower::retry` with [`Attempts`]`(3)` over the bare service.
#[must_use]
pub fn tower_retry() -> tower::retry::Retry<Attempts, BareHttp> {
    tower::retry::RetryLayer::new(Attempts(3)).layer(bare_http())
}

/// tower-resilience's retry over the bare service.
pub type ResilienceRetry = tower_resilience::retry::Retry<BareHttp, Req, Res, Infallible>;

/// tower-resilience's retry: 3 attempts, fixed 10 ms backoff.
#[must_use]
pub fn resilience_retry() -> ResilienceRetry {
    tower_resilience::retry::RetryLayer::<Req, Res, Infallible>::builder()
        .max_attempts(3)
        .fixed_backoff(Duration::from_millis(10))
        .build()
        .layer(bare_http())
}

/// Our retry layer over the bare service.
pub type Ours = tower_retry_plus::Retry<BareHttpOf<tower_retry_plus::ReplayBody<Full<Bytes>>>>;

/// Ours with its defaults (4 attempts, full-jitter exponential backoff, the shared retry budget).
#[must_use]
pub fn ours() -> Ours {
    tower_retry_plus::RetryLayer::default().layer(bare_http_of())
}

/// Ours without the retry budget (no shared counter touched per request).
#[must_use]
pub fn ours_no_budget() -> Ours {
    tower_retry_plus::RetryLayer::builder()
        .no_budget()
        .build()
        .expect("valid config")
        .layer(bare_http_of())
}
