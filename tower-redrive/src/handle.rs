//! One request through [`Redrive`](crate::Redrive): read it, send it (or queue it behind its
//! ordering key), and keep it when it fails transiently.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_fault::{BoxError, Class, Classify};
use tower_service::Service;

use crate::{
    attempt::{describe, retry_after_at},
    body::collect,
    clock::Timestamp,
    entry::{AttemptRecord, NewEntry, StoredRequest, stamp_key},
    error::EnqueueFailed,
    layer::Shared,
    outcome::{Deferred, Outcome},
};

pub(crate) async fn handle<S, C, B, ResB>(
    mut inner: S,
    shared: std::sync::Arc<Shared<C>>,
    req: Request<B>,
) -> Result<Outcome<Response<ResB>>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let body = collect(body, shared.max_body_bytes).await?;
    let pending = Pending {
        idempotency_key: stamp_key(&mut parts.headers),
        ordering_key: shared.ordering_key.as_ref().and_then(|f| f(&parts)),
        request: StoredRequest::from_parts(&parts, body.clone()),
    };
    if must_wait(&shared, &pending).await? {
        let cause = "an older request with the same ordering key is queued".to_owned();
        let now = shared.clock.now();
        return defer(&shared, pending.entry(now, now, None), cause).await;
    }

    let result = inner
        .call(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(Into::into);
    let class = shared.classifier.classify(result.as_ref());
    match class {
        Class::Success => result.map(Outcome::Answered),
        Class::Permanent => {
            if shared.record_permanent {
                record_permanent(&shared, pending, describe(&result)).await;
            }
            result.map(Outcome::Answered)
        }
        Class::Transient { retry_after, .. } => {
            let now = shared.clock.now();
            let outcome = describe(&result);
            let retry_after = retry_after_at(retry_after, &result, now);
            drop(result);
            let delay = shared
                .scheduler
                .next_delay(Duration::ZERO, retry_after)
                .unwrap_or_default();
            let attempt = AttemptRecord::new(1, now, class.as_str(), outcome.clone());
            let entry = pending.entry(now, now.plus(delay), Some(attempt));
            defer(&shared, entry, outcome).await
        }
    }
}

/// What is queued of a request that is not answered: read once, before it is sent.
struct Pending {
    request: StoredRequest,
    idempotency_key: String,
    ordering_key: Option<String>,
}

impl Pending {
    fn entry(
        self,
        enqueued_at: Timestamp,
        available_at: Timestamp,
        first_attempt: Option<AttemptRecord>,
    ) -> NewEntry {
        NewEntry {
            request: self.request,
            idempotency_key: self.idempotency_key,
            ordering_key: self.ordering_key,
            enqueued_at,
            available_at,
            first_attempt,
        }
    }
}

/// Whether the request is to be queued behind an older pending entry with its ordering key
/// instead of being sent (strict order).
async fn must_wait<C>(shared: &Shared<C>, pending: &Pending) -> Result<bool, EnqueueFailed> {
    let Some(key) = pending
        .ordering_key
        .as_ref()
        .filter(|_| shared.strict_order)
    else {
        return Ok(false);
    };
    shared.queue.has_pending(key).await.map_err(|e| {
        EnqueueFailed::new(
            "could not check the ordering key's queue".to_owned(),
            pending.idempotency_key.clone(),
            e,
        )
    })
}

/// Records a permanent failure (`outcome`, its description) in the dead-letter queue; the caller gets the failure either
/// way, so a store error is logged, not returned.
async fn record_permanent<C>(shared: &Shared<C>, pending: Pending, outcome: String) {
    let now = shared.clock.now();
    let attempt = AttemptRecord::new(1, now, Class::Permanent.as_str(), outcome.clone());
    let entry = pending.entry(now, now, Some(attempt));
    let reason = format!("permanent failure: {outcome}");
    let name = &shared.name;
    match shared.queue.enqueue_dead(entry, reason).await {
        Ok(id) => {
            tracing::info!(name = %name, %id, "permanent failure recorded in the dead-letter queue");
        }
        Err(e) => {
            tracing::error!(name = %name, error = %e, "could not record a permanent failure");
        }
    }
}

/// Queues an entry and answers [`Outcome::Deferred`] once it is durable, or [`EnqueueFailed`].
async fn defer<C, R>(
    shared: &Shared<C>,
    entry: NewEntry,
    cause: String,
) -> Result<Outcome<R>, BoxError> {
    let idempotency_key = entry.idempotency_key.clone();
    let next_attempt_at = entry.available_at;
    let name = &shared.name;
    match shared.queue.enqueue(entry).await {
        Ok(id) => {
            tracing::info!(name = %name, %id, %cause, next_attempt_at = next_attempt_at.as_millis(), "request deferred for re-delivery");
            Ok(Outcome::Deferred(Deferred {
                id,
                idempotency_key,
                cause,
                next_attempt_at,
            }))
        }
        Err(e) => {
            tracing::error!(name = %name, error = %e, %cause, "request failed and could not be queued");
            Err(EnqueueFailed::new(cause, idempotency_key, e).into())
        }
    }
}
