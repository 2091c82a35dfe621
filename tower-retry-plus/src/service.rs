//! The [`Retry`] service.

use std::{
    fmt, mem,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_fault::{
    AttemptContext, BoxError, Classify, HttpClassifier, IDEMPOTENCY_KEY, IdempotencyKey,
};
use tower_service::Service;

use crate::{
    ReplayBody, RetryOverride,
    future::{Attempts, Kept, ResponseFuture},
    is_idempotent,
    layer::Config,
};

/// Retries transient failures of an HTTP service; made by [`RetryLayer`](crate::RetryLayer).
///
/// The inner service takes `http::Request<ReplayBody<B>>`: the layer wraps the request body so
/// it can be sent again. It is cloned per request and driven ready again before every retry.
pub struct Retry<S, C = HttpClassifier> {
    inner: S,
    config: Arc<Config<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C> Retry<S, C> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<C>>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, B, ResB> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
    ResB: Body,
    C: Classify<Response<ResB>, S::Error>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, ResB, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Keep the service that was driven ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let service = mem::replace(&mut self.inner, clone);
        let config = &self.config;

        let (mut parts, body) = req.into_parts();
        let max_attempts =
            RetryOverride::attempts(parts.extensions.get::<RetryOverride>(), config.max_attempts);
        if let Some(budget) = &config.budget {
            budget.deposit();
        }
        let idempotent = is_idempotent(&parts.method);
        if config.stamp_key
            && !idempotent
            && max_attempts > 1
            && !parts.headers.contains_key(IDEMPOTENCY_KEY)
        {
            parts.headers.insert(
                IDEMPOTENCY_KEY,
                IdempotencyKey::generate().to_header_value(),
            );
        }
        let retry_maybe_processed = idempotent || parts.headers.contains_key(IDEMPOTENCY_KEY);

        let (first, kept) = if max_attempts > 1 {
            // The replay state costs at most one `Arc`, none for an empty body or a body that
            // is ready in one frame (`Full<Bytes>`).
            let body = ReplayBody::for_retries(body, config.body_limit);
            match body.try_clone() {
                Some(template) => {
                    // The head is cloned once so the first attempt can consume a request while
                    // the template stays for retries: the one request clone any retry layer
                    // makes (tower's included). The extensions are taken out first, so the
                    // template gets the caller's extensions only (no map at all if there were
                    // none) and the attempt context lives beside it, not in a second map.
                    let mut extensions = mem::take(&mut parts.extensions);
                    let mut head = parts.clone();
                    head.extensions = extensions.clone();
                    let ctx = attempt_context(&mut extensions);
                    parts.extensions = extensions;
                    let first = Request::from_parts(parts, body);
                    (first, Some(Kept::new(head, template, ctx)))
                }
                None => {
                    attempt_context(&mut parts.extensions);
                    (Request::from_parts(parts, body), None)
                }
            }
        } else {
            attempt_context(&mut parts.extensions);
            (Request::from_parts(parts, ReplayBody::once(body)), None)
        };

        let attempts = Attempts::new(
            Arc::clone(config),
            kept,
            max_attempts,
            retry_maybe_processed,
        );
        ResponseFuture::start(service, first, attempts)
    }
}

/// The request's [`AttemptContext`] (the tower-fault contract failover reads), inserted if the
/// request has none: one allocation for the shared tried-endpoint list, plus the extensions map
/// if the request had none.
fn attempt_context(extensions: &mut http::Extensions) -> AttemptContext {
    if let Some(ctx) = extensions.get::<AttemptContext>() {
        return ctx.clone();
    }
    let ctx = AttemptContext::new();
    extensions.insert(ctx.clone());
    ctx
}
