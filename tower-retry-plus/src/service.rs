//! The [`Retry`] service.

use std::{
    fmt, mem,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, request::Parts};
use http_body::Body;
use tower_fault::{BoxError, Classify, HttpClassifier, IDEMPOTENCY_KEY, IdempotencyKey, SentTo};
use tower_service::Service;

use crate::{
    ReplayBody, RetryOverride,
    future::{Kept, ResponseFuture, valid_key},
    head::KeptHead,
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
        let mut retry_maybe_processed = key_policy(config, &mut parts, max_attempts);
        let (body, kept) = if max_attempts > 1 {
            // The replay state costs at most one `Arc`, none for an empty body or a body that
            // is ready in one frame (`Full<Bytes>`).
            let body = ReplayBody::for_retries(body, config.max_replay_bytes);
            match body.try_clone() {
                Some(template) => {
                    // The head is copied once so the first attempt can consume a request while
                    // the copy stays for retries: the one request copy any retry layer makes
                    // (tower's clones it), with the URI and headers packed into one buffer (see
                    // `KeptHead`). The first attempt goes out as the caller made it: no attempt
                    // context (a request without one is a first attempt), so nothing is
                    // inserted and no extensions map is created.
                    let mut kept = Kept::new(KeptHead::of(&parts), template);
                    if config.attempt_timeout.is_some() {
                        kept.sent_to = Some(sent_to_slot(&mut parts));
                    }
                    (body, Some(kept))
                }
                None => {
                    retry_maybe_processed.get_or_insert_with(|| has_key(&parts));
                    (body, None)
                }
            }
        } else {
            retry_maybe_processed.get_or_insert_with(|| has_key(&parts));
            (ReplayBody::for_one_attempt(body), None)
        };

        // The first request is put together where it is handed to the inner service: every
        // intermediate value would be one more copy of it.
        ResponseFuture::start(
            service,
            parts,
            body,
            kept,
            Arc::clone(config),
            max_attempts,
            retry_maybe_processed,
        )
    }
}

/// Whether a failure that may have been processed can be retried: always for an idempotent
/// method, else only with an `Idempotency-Key`, which is stamped here when the layer stamps
/// keys. `None` leaves the header lookup to the first such failure (in the kept head), off the
/// happy path.
#[inline]
fn key_policy<C>(config: &Config<C>, parts: &mut Parts, max_attempts: u32) -> Option<bool> {
    let idempotent = is_idempotent(&parts.method);
    if !config.stamp_key || idempotent || max_attempts <= 1 {
        return idempotent.then_some(true);
    }
    // A key the caller set is kept; only a valid one makes the request retryable.
    match parts.headers.get(IDEMPOTENCY_KEY) {
        None => {
            parts.headers.insert(
                IDEMPOTENCY_KEY,
                IdempotencyKey::generate().to_header_value(),
            );
            Some(true)
        }
        Some(value) => Some(valid_key(Some(value.as_bytes()))),
    }
}

/// Whether the request head carries a valid `Idempotency-Key`.
fn has_key(parts: &Parts) -> bool {
    valid_key(
        parts
            .headers
            .get(IDEMPOTENCY_KEY)
            .map(HeaderValue::as_bytes),
    )
}

/// The slot where failover writes which endpoint an attempt went to, so an attempt the
/// attempt timeout cancels (it answers nothing) still counts as tried. A slot the caller already
/// carries (an outer retry layer's) is shared, so both layers read the same record.
fn sent_to_slot(parts: &mut Parts) -> SentTo {
    match parts.extensions.get::<SentTo>() {
        Some(outer) => outer.clone(),
        None => {
            let slot = SentTo::new();
            parts.extensions.insert(slot.clone());
            slot
        }
    }
}
