//! The recording stage, once the handler answered: read the response body under the lease,
//! keep the outcome or release the key, and answer.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;

use super::{
    Answer,
    lease::WithLease,
    notify,
    read::{ReadBody, ReadEnd},
    timed,
};
use crate::{
    body::IdempotencyBody,
    config::{Config, Shared},
    key::{FencingToken, Fingerprint, RecordKey},
    record::{CompletedRecord, Outcome, StoredResponse},
    store::IdempotencyStore,
    telemetry::{self, Outcome as Metric, StoreOp},
};

/// The recording stage: keep or release the outcome, then answer.
///
/// Owns what it needs (the stage may be handed to the runtime if the client goes away), and
/// holds the handler's outcome in place: the response is read through a reference and taken
/// apart only once the store has answered.
// An `async move` block on purpose (see `run`): an `async fn` would store its arguments twice.
#[allow(clippy::manual_async_fn)]
pub(super) fn finish<St, ResB, E>(
    shared: Arc<Shared<St>>,
    record_key: RecordKey,
    token: FencingToken,
    fingerprint: Fingerprint,
    mut result: Result<Response<ResB>, E>,
) -> impl Future<Output = Answer<ResB, E>>
where
    St: IdempotencyStore,
    ResB: Body<Data = Bytes> + Unpin,
{
    async move {
        let (shared, record_key) = (&*shared, &record_key);
        let config = &shared.config;
        telemetry::request(&config.metrics, Metric::Executed);
        let response = match &mut result {
            Ok(response) if !released_by_status(config, record_key, response) => response,
            // An inner service error, or a transient status: the client's retry runs again.
            _ => {
                release(shared, record_key, token).await;
                return result.map(|res| res.map(IdempotencyBody::stream));
            }
        };
        let status = response.status();
        let mut read = ReadBody::new(
            response.body_mut(),
            config.max_response_bytes,
            config.response_body_timeout,
        );
        // Still under the lease: a body that takes longer to read than the lease would
        // otherwise let a duplicate claim the key and run the handler again.
        let end = if read.too_large_by_hint() {
            ReadEnd::TooLarge
        } else {
            WithLease::new(shared, record_key, token, &mut read).await
        };
        let (prefix, trailers) = read.into_parts();
        {
            let record = CompletedRecord {
                fingerprint,
                outcome: outcome(
                    config,
                    record_key,
                    (status, response.headers()),
                    &end,
                    &prefix,
                    trailers.as_deref(),
                ),
            };
            complete(shared, record_key, token, &record).await;
        }
        result.map(|res| answer(res, end, prefix, trailers))
    }
}

/// Whether the handler's status is one the classifier calls transient (5xx, 408, 429 by
/// default): its key is released rather than kept.
fn released_by_status<B>(config: &Config, key: &RecordKey, response: &Response<B>) -> bool {
    let transient = config
        .classifier
        .classify_status(response.status(), response.headers())
        .is_transient();
    if transient {
        tracing::debug!(
            name = %config.name,
            key = key.short(),
            status = response.status().as_u16(),
            "transient outcome; key released"
        );
    }
    transient
}

/// What the record keeps of a response whose body read ended with `end`: the response, or why
/// it could not be kept (its replays are refused, never executed).
fn outcome<E>(
    config: &Config,
    key: &RecordKey,
    (status, headers): (StatusCode, &HeaderMap),
    end: &ReadEnd<E>,
    body: &Bytes,
    trailers: Option<&HeaderMap>,
) -> Outcome {
    match end {
        ReadEnd::Complete => {
            let mut stored =
                StoredResponse::capture(status, headers, &config.never_replay, body.clone());
            if let Some(trailers) = trailers {
                stored = stored.with_trailers(trailers, &config.never_replay);
            }
            Outcome::Response(stored)
        }
        ReadEnd::TooLarge => {
            tracing::info!(
                name = %config.name,
                key = key.short(),
                limit = config.max_response_bytes,
                "response too large to keep; replays will be refused"
            );
            Outcome::TooLarge {
                status,
                limit: config.max_response_bytes as u64,
            }
        }
        ReadEnd::Overdue => {
            tracing::info!(
                name = %config.name,
                key = key.short(),
                timeout = ?config.response_body_timeout,
                "response body did not end in time to be kept; replays will be refused"
            );
            Outcome::TooSlow {
                status,
                limit: config.response_body_timeout,
            }
        }
        ReadEnd::Failed(_) => {
            // The handler answered a status that is not a transient failure: it ran, and its
            // effects may stand. Releasing the key would run it again on the client's retry;
            // the record says it ran and cannot be replayed.
            tracing::info!(
                name = %config.name,
                key = key.short(),
                status = status.as_u16(),
                "response body failed; duplicates will be refused, not executed"
            );
            Outcome::BodyFailed { status }
        }
    }
}

/// The first response as its client gets it: the whole body read, with its trailers; or what
/// was read, then the rest of the body as it comes (after the error it failed with, if so).
fn answer<B: Body>(
    response: Response<B>,
    end: ReadEnd<B::Error>,
    prefix: Bytes,
    trailers: Option<Box<HeaderMap>>,
) -> Response<IdempotencyBody<B>> {
    match end {
        ReadEnd::Complete => {
            let (head, _) = response.into_parts();
            let body = IdempotencyBody::full_with_trailers(prefix, trailers.map(|t| *t));
            Response::from_parts(head, body)
        }
        ReadEnd::TooLarge | ReadEnd::Overdue => {
            response.map(|body| IdempotencyBody::resumed(prefix, None, body))
        }
        ReadEnd::Failed(error) => {
            response.map(|body| IdempotencyBody::resumed(prefix, Some(error), body))
        }
    }
}

// `complete` and `release` return `async move` blocks rather than being `async fn`s: an `async
// fn` keeps every argument twice (see `run`), and these futures sit inside the boxed one.
#[allow(clippy::manual_async_fn)]
fn complete<'a, St: IdempotencyStore>(
    shared: &'a Shared<St>,
    key: &'a RecordKey,
    token: FencingToken,
    record: &'a CompletedRecord,
) -> impl Future<Output = ()> + 'a {
    async move {
        match timed(
            shared,
            StoreOp::Complete,
            shared.store.complete(key, token, record, shared.config.ttl),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                name = %shared.config.name,
                key = key.short(),
                token = token.get(),
                "stale owner: the lease expired and the key moved on; this outcome was not recorded"
            ),
            Err(error) => {
                // The handler ran once; its response still goes to the client (answering an
                // error would invite a retry, and a retry after the lease expires would execute
                // again).
                tracing::error!(name = %shared.config.name, key = key.short(), %error, "could not record the outcome; the key stays claimed until its lease expires");
                telemetry::request(&shared.config.metrics, Metric::StoreError);
            }
        }
        notify(shared, key);
    }
}

#[allow(clippy::manual_async_fn)]
fn release<'a, St: IdempotencyStore>(
    shared: &'a Shared<St>,
    key: &'a RecordKey,
    token: FencingToken,
) -> impl Future<Output = ()> + 'a {
    async move {
        match timed(shared, StoreOp::Release, shared.store.release(key, token)).await {
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(name = %shared.config.name, key = key.short(), %error, "could not release the key; it frees when its lease expires");
                telemetry::request(&shared.config.metrics, Metric::StoreError);
            }
        }
        notify(shared, key);
    }
}
