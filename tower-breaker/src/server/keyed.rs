//! Server mode for keyed breakers: one breaker per key, rejections answered like
//! [`ServerBreakerLayer`](super::ServerBreakerLayer)'s.

use std::{
    fmt,
    hash::Hash,
    task::{Context, Poll},
};

use http::{Response, uri::Authority};
use tower_fault::{Classify, HttpClassifier, body::ResponseBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    Breaker, KeyedBreakerLayer,
    future::ServerResponseFuture,
    keyed::{ByAuthority, KeyedCircuitBreaker, MakeKey},
};

/// A [`KeyedBreakerLayer`] in server mode; see
/// [`KeyedBreakerLayer::server_mode`].
///
/// Each request goes through its key's breaker; a rejected one gets the same answer as from
/// [`ServerBreakerLayer`](super::ServerBreakerLayer): `503 Service Unavailable`, a `Retry-After`
/// of that key's remaining open time plus up to 10% jitter, and an RFC 9457 body of type
/// [`PROBLEM_TYPE`](super::PROBLEM_TYPE) whose `detail` names the key's breaker. A request without
/// a key passes unguarded. The error type is the inner service's, so an axum `Router` accepts it:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use axum::{Router, body::Body, routing::get};
/// use http::{HeaderMap, Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_breaker::{Breaker, KeyedBreakerLayer};
///
/// // One breaker per `Host` (the default key), opened by a single failure.
/// let template = Breaker::builder().name("tenants").consecutive_failures(1);
/// let tenants = KeyedBreakerLayer::builder(template).build().unwrap().server_mode();
/// let app: Router = Router::new()
///     .route("/", get(|headers: HeaderMap| async move {
///         if headers["host"] == "down.test" { StatusCode::BAD_GATEWAY } else { StatusCode::OK }
///     }))
///     .layer(tenants.clone());
/// let get = |host: &str| Request::get("/").header("host", host).body(Body::empty()).unwrap();
///
/// assert_eq!(app.clone().oneshot(get("down.test")).await.unwrap().status(), 502);
/// // down.test's breaker is open now: answered without calling the handler.
/// let res = app.clone().oneshot(get("down.test")).await.unwrap();
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert!(res.headers().contains_key("retry-after"));
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// // up.test has a breaker of its own, still closed.
/// assert_eq!(app.oneshot(get("up.test")).await.unwrap().status(), StatusCode::OK);
/// assert_eq!(tenants.breakers().open_count(), 1);
/// # }
/// ```
pub struct KeyedServerBreakerLayer<M = ByAuthority, K = Authority, C = HttpClassifier> {
    keyed: KeyedBreakerLayer<M, K, C>,
}

impl<M, K, C> KeyedServerBreakerLayer<M, K, C> {
    pub(crate) const fn from_keyed(keyed: KeyedBreakerLayer<M, K, C>) -> Self {
        Self { keyed }
    }

    /// The keyed breakers ([`breaker`](KeyedBreakerLayer::breaker),
    /// [`open_count`](KeyedBreakerLayer::open_count), …), shared with every service this layer
    /// wraps.
    #[must_use]
    pub const fn breakers(&self) -> &KeyedBreakerLayer<M, K, C> {
        &self.keyed
    }
}

impl<M, K, C> KeyedServerBreakerLayer<M, K, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    /// The breaker of `key`, if it exists now.
    #[must_use]
    pub fn breaker(&self, key: &K) -> Option<Breaker> {
        self.keyed.breaker(key)
    }
}

impl<M: Clone, K, C> Clone for KeyedServerBreakerLayer<M, K, C> {
    fn clone(&self) -> Self {
        Self {
            keyed: self.keyed.clone(),
        }
    }
}

impl<M, K, C> fmt::Debug for KeyedServerBreakerLayer<M, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyedServerBreakerLayer")
            .field(&self.keyed)
            .finish()
    }
}

impl<S, M: Clone, K, C> Layer<S> for KeyedServerBreakerLayer<M, K, C> {
    type Service = KeyedServerCircuitBreaker<S, M, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedServerCircuitBreaker {
            keyed: self.keyed.layer(inner),
        }
    }
}

/// A service guarded by one breaker per key in server mode; see [`KeyedServerBreakerLayer`].
pub struct KeyedServerCircuitBreaker<S, M = ByAuthority, K = Authority, C = HttpClassifier> {
    keyed: KeyedCircuitBreaker<S, M, K, C>,
}

impl<S, M, K, C> KeyedServerCircuitBreaker<S, M, K, C> {
    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.keyed.inner
    }

    /// The inner service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.keyed.inner
    }

    /// Consumes the guard, returning the inner service.
    pub fn into_inner(self) -> S {
        self.keyed.inner
    }
}

impl<S: Clone, M: Clone, K, C> Clone for KeyedServerCircuitBreaker<S, M, K, C> {
    fn clone(&self) -> Self {
        Self {
            keyed: self.keyed.clone(),
        }
    }
}

impl<S: fmt::Debug, M, K, C> fmt::Debug for KeyedServerCircuitBreaker<S, M, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyedServerCircuitBreaker")
            .field(&self.keyed)
            .finish()
    }
}

impl<S, M, K, C, Req, B> Service<Req> for KeyedServerCircuitBreaker<S, M, K, C>
where
    S: Service<Req, Response = Response<B>>,
    M: MakeKey<Req, Key = K>,
    K: Hash + Eq + Clone + fmt::Display,
    C: Classify<Response<B>, S::Error>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = S::Error;
    type Future = ServerResponseFuture<S::Future, C, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.keyed.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.keyed.guard(req)
    }
}
