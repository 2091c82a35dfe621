//! Claiming a key: the claim wins and the request runs, or the store's answer becomes the
//! response — a replay, a conflict, a mismatch — possibly after waiting for the owner.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Response};
use http_body::Body;
use tokio::time::{Instant, sleep};
use tower_fault::time::saturating_after;

use super::timed;
use crate::{
    body::IdempotencyBody,
    config::{Concurrency, Shared},
    error::StoreError,
    key::{FencingToken, Fingerprint, RecordKey},
    problems,
    record::{CompletedRecord, Outcome},
    store::{Claim, IdempotencyStore},
    telemetry::{self, Outcome as Metric, StoreOp},
};

/// The header marking a replayed response.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The `Retry-After` of the 409 a duplicate gets after waiting in vain
/// ([`Concurrency::Wait`]): the owner has run for the whole wait, so it may well take a while
/// longer.
const WAITED_RETRY_AFTER: Duration = Duration::from_secs(1);
const WAIT_BACKOFF_START: Duration = Duration::from_millis(25);
const WAIT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Claims the key: `Ok(Ok(token))` to execute, `Ok(Err(response))` to answer without executing
/// (replay, conflict, mismatch), `Err` when the store failed.
pub(super) async fn claim<St: IdempotencyStore, B: Body>(
    shared: &Shared<St>,
    key: &RecordKey,
    fingerprint: &Fingerprint,
) -> Result<Result<FencingToken, Response<IdempotencyBody<B>>>, StoreError> {
    let config = &shared.config;
    let (claim, retry_after) = match config.concurrency {
        Concurrency::Reject { retry_after } => {
            let claim = shared.store.claim(key, fingerprint, config.lease);
            (timed(shared, StoreOp::Claim, claim).await?, retry_after)
        }
        Concurrency::Wait { max } => (
            claim_waiting(shared, key, fingerprint, max).await?,
            WAITED_RETRY_AFTER,
        ),
    };
    Ok(match claim {
        Claim::Acquired(token) => Ok(token),
        Claim::InFlight {
            fingerprint: held, ..
        } if held != *fingerprint => Err(mismatch(shared, key)),
        Claim::InFlight { .. } => {
            tracing::info!(name = %config.name, key = key.short(), "duplicate of a request in flight");
            telemetry::request(&config.metrics, Metric::Conflict);
            Err(problems::respond(problems::in_flight(retry_after)))
        }
        Claim::Completed(record) if record.fingerprint != *fingerprint => {
            Err(mismatch(shared, key))
        }
        Claim::Completed(record) => Err(replay(shared, key, &record)),
    })
}

/// Claims the key, and while a request with the same fingerprint holds it, waits for that one
/// to finish, up to `max`: woken when it finishes on this server, polling the store with
/// backoff for one on another. Returns the store's last answer.
async fn claim_waiting<St: IdempotencyStore>(
    shared: &Shared<St>,
    key: &RecordKey,
    fingerprint: &Fingerprint,
    max: Duration,
) -> Result<Claim, StoreError> {
    let deadline = saturating_after(Instant::now(), max);
    let mut backoff = WAIT_BACKOFF_START;
    loop {
        // Subscribe before asking the store, so a completion in between wakes us. The
        // subscription unsubscribes when dropped: at the end of each round, and when the
        // client goes away and this future is dropped mid-wait.
        let subscription = shared.waiters.subscribe(key);
        let notified = subscription.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let claim = shared.store.claim(key, fingerprint, shared.config.lease);
        let claim = timed(shared, StoreOp::Claim, claim).await;
        let now = Instant::now();
        match claim {
            Ok(Claim::InFlight {
                fingerprint: held, ..
            }) if held == *fingerprint && now < deadline => {
                tokio::select! {
                    () = &mut notified => {}
                    () = sleep(backoff.min(deadline - now)) => {}
                }
                backoff = (backoff * 2).min(WAIT_BACKOFF_MAX);
            }
            other => return other,
        }
    }
}

fn mismatch<St, B: Body>(shared: &Shared<St>, key: &RecordKey) -> Response<IdempotencyBody<B>> {
    tracing::info!(
        name = %shared.config.name,
        key = key.short(),
        "idempotency key reused for another request"
    );
    telemetry::request(&shared.config.metrics, Metric::Mismatch);
    problems::respond(problems::key_reused())
}

fn replay<St, B: Body>(
    shared: &Shared<St>,
    key: &RecordKey,
    record: &CompletedRecord,
) -> Response<IdempotencyBody<B>> {
    match &record.outcome {
        Outcome::Response(stored) => {
            tracing::debug!(
                name = %shared.config.name,
                key = key.short(),
                status = stored.status.as_u16(),
                "replaying response"
            );
            telemetry::request(&shared.config.metrics, Metric::Replayed);
            let mut res = Response::new(IdempotencyBody::full_with_trailers(
                stored.body.clone(),
                stored.trailer_map(),
            ));
            *res.status_mut() = stored.status;
            let headers = res.headers_mut();
            headers.reserve(stored.headers.len() + 1);
            for (name, value) in &stored.headers {
                headers.append(name.clone(), value.clone());
            }
            // The stored `Trailer` header is not kept (a response's own framing); an HTTP/1.1
            // server sends only the trailers it names, so a replay with trailers names them.
            for (name, _) in &stored.trailers {
                if let Ok(value) = HeaderValue::from_str(name.as_str()) {
                    headers.append(http::header::TRAILER, value);
                }
            }
            headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            res
        }
        Outcome::TooLarge { status, limit } => {
            tracing::info!(
                name = %shared.config.name,
                key = key.short(),
                "duplicate of a request whose response was not kept"
            );
            telemetry::request(&shared.config.metrics, Metric::TooLarge);
            problems::respond(problems::not_replayable(*status, *limit))
        }
        Outcome::BodyFailed { status } => {
            tracing::info!(
                name = %shared.config.name,
                key = key.short(),
                "duplicate of a request whose response body failed"
            );
            telemetry::request(&shared.config.metrics, Metric::NotReplayable);
            problems::respond(problems::body_failed(*status))
        }
        Outcome::TooSlow { status, limit } => {
            tracing::info!(
                name = %shared.config.name,
                key = key.short(),
                "duplicate of a request whose response body did not end in time"
            );
            telemetry::request(&shared.config.metrics, Metric::NotReplayable);
            problems::respond(problems::too_slow(*status, *limit))
        }
    }
}
