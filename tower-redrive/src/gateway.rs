//! Gateway mode: `202 Accepted` with the entry id for a deferred request, problem+json for the
//! layer's own errors, `Error = Infallible` so it sits directly in an axum router.

use std::{
    convert::Infallible,
    fmt,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::Full;
use tower_fault::{BoxError, Classify, HttpClassifier, body::ResponseBody, problem::Problem};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    error::{BodyError, BodyTooLarge, EnqueueFailed},
    future::GatewayFuture,
    layer::RedriveLayer,
    outcome::Outcome,
    service::Redrive,
};

/// The header carrying the queue entry id of a `202 Accepted`.
pub const REDRIVE_ENTRY_ID: &str = "redrive-entry-id";

pub use tower_fault::problem::types::{
    NOT_QUEUED as PROBLEM_NOT_QUEUED, REQUEST_TOO_LARGE as PROBLEM_TOO_LARGE,
    UNREADABLE_BODY as PROBLEM_BAD_BODY, UPSTREAM_FAILED as PROBLEM_UPSTREAM,
};

/// [`RedriveLayer`] in gateway mode (see [`RedriveLayer::gateway`]).
///
/// | outcome | response |
/// |---|---|
/// | upstream answered | its response |
/// | deferred | `202 Accepted`, `Redrive-Entry-Id` and `Idempotency-Key` headers, JSON `{"status":"deferred","id":…,"idempotency_key":…,"next_attempt_at":…}` |
/// | body over the cap | `413` problem+json |
/// | unreadable body | `400` problem+json |
/// | transient failure, queue write failed | `503` problem+json with `Retry-After` |
/// | permanent upstream error, or the inner stack failed to become ready | `502` problem+json |
pub struct RedriveGatewayLayer<C = HttpClassifier> {
    inner: RedriveLayer<C>,
}

impl<C> RedriveGatewayLayer<C> {
    pub(crate) const fn new(inner: RedriveLayer<C>) -> Self {
        Self { inner }
    }
}

impl<C> Clone for RedriveGatewayLayer<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> fmt::Debug for RedriveGatewayLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedriveGatewayLayer")
            .field(&self.inner)
            .finish()
    }
}

impl<S, C> Layer<S> for RedriveGatewayLayer<C> {
    type Service = RedriveGateway<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RedriveGateway {
            inner: self.inner.layer(inner),
            not_ready: None,
        }
    }
}

/// The service [`RedriveGatewayLayer`] produces.
pub struct RedriveGateway<S, C = HttpClassifier> {
    inner: Redrive<S, C>,
    /// The inner stack's readiness error, answered by the next `call` (which must not call a
    /// service that is not ready).
    not_ready: Option<BoxError>,
}

impl<S: Clone, C> Clone for RedriveGateway<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for RedriveGateway<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedriveGateway").field(&self.inner).finish()
    }
}

impl<S, C, B, ResB> Service<Request<B>> for RedriveGateway<S, C>
where
    Redrive<S, C>: Service<
            Request<B>,
            Response = Outcome<Response<ResB>>,
            Error = BoxError,
            Future = crate::future::ResponseFuture<Outcome<Response<ResB>>>,
        >,
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>>,
    C: Classify<Response<ResB>, BoxError>,
    B: Body,
    ResB: Send + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = Infallible;
    type Future = GatewayFuture<ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // `Error = Infallible`: an inner readiness error is kept and answered by `call` (as a
        // problem response), without calling the inner service, which is not ready.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                self.not_ready = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(e);
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.not_ready.take() {
            Some(e) => GatewayFuture::new(crate::future::ResponseFuture::new(Box::pin(
                std::future::ready(Err(e)),
            ))),
            None => GatewayFuture::new(self.inner.call(req)),
        }
    }
}

pub(crate) fn to_response<B>(
    result: Result<Outcome<Response<B>>, BoxError>,
) -> Response<ResponseBody<B>> {
    match result {
        Ok(Outcome::Answered(res)) => res.map(ResponseBody::inner),
        Ok(Outcome::Deferred(d)) => {
            let doc = serde_json::json!({
                "status": "deferred",
                "id": d.id.0,
                "idempotency_key": d.idempotency_key,
                "next_attempt_at": d.next_attempt_at.as_millis(),
            });
            let mut res = Response::new(ResponseBody::full(doc.to_string()));
            *res.status_mut() = StatusCode::ACCEPTED;
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(REDRIVE_ENTRY_ID, HeaderValue::from(d.id.0));
            if let Ok(v) = HeaderValue::from_str(&d.idempotency_key) {
                h.insert(tower_fault::IDEMPOTENCY_KEY, v);
            }
            res
        }
        Err(e) => error_response(&e),
    }
}

fn error_response<B>(e: &BoxError) -> Response<ResponseBody<B>> {
    if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            PROBLEM_TOO_LARGE,
            "Request body too large",
        )
        .detail(too_large.to_string())
        .into_response();
    }
    if e.is::<BodyError>() {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            PROBLEM_BAD_BODY,
            "Request body unreadable",
        )
        .detail(crate::attempt::describe_error(&**e))
        .into_response();
    }
    if let Some(failed) = e.downcast_ref::<EnqueueFailed>() {
        let mut res = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            PROBLEM_NOT_QUEUED,
            "Request not queued",
        )
        .detail(failed.to_string())
        .retry_after(failed.retry_after())
        .into_response();
        // The request may have been stored after all (a timed-out enqueue): a retry carrying
        // this key is executed once either way by a server running an idempotency layer.
        if let Ok(key) = HeaderValue::from_str(failed.idempotency_key()) {
            res.headers_mut().insert(tower_fault::IDEMPOTENCY_KEY, key);
        }
        return res;
    }
    Problem::new(
        StatusCode::BAD_GATEWAY,
        PROBLEM_UPSTREAM,
        "Upstream request failed",
    )
    .detail(crate::attempt::describe_error(&**e))
    .into_response()
}
