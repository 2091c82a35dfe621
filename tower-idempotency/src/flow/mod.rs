//! What happens to a keyed request: read and fingerprint it (`read`), claim or replay
//! (`claim`), execute under a renewed lease (`lease`), then keep or release the outcome
//! (`finish`).
//!
//! The stages are functions returning `async move` blocks rather than `async fn`s, with each
//! phase's locals scoped to it, to keep the keyed request's boxed future small: an `async fn`
//! keeps both its arguments and their moved-to locals (the 224-byte request head twice), and a
//! local moved away still holds its slot until its scope ends. The box is allocated and freed
//! on every keyed request; under about 1 KiB it stays in the allocator's per-thread cache.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, request::Parts};
use http_body::Body;
use tokio::time::Instant;
use tower_fault::BoxError;
use tower_service::Service;

use crate::{
    body::IdempotencyBody,
    config::{Concurrency, Config, OutagePolicy, Shared},
    detach::Step,
    error::{StoreError, StoreErrorKind},
    key::{Fingerprint, RecordKey},
    problems,
    store::IdempotencyStore,
    telemetry::{self, Outcome as Metric, StoreOp},
};

mod claim;
mod finish;
mod lease;
mod read;

pub use claim::REPLAYED_HEADER;

use self::{
    claim::claim,
    finish::finish,
    lease::WithLease,
    read::{ReadError, read_request},
};

type Answer<B, E> = Result<Response<IdempotencyBody<B>>, E>;

/// The keyed request's first stage, up to the handler's answer: read and fingerprint the request,
/// claim or replay, run the handler under a renewed lease. It ends with an answer, or with the
/// recording stage (`finish`) to run next.
// Not an `async fn` on purpose (see the module's documentation).
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<S, St, B, ResB>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    mut parts: Parts,
    body: B,
    record_key: RecordKey,
    bound: bool,
) -> impl Future<Output = Step<Answer<ResB, S::Error>, impl Future<Output = Answer<ResB, S::Error>>>>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    St: IdempotencyStore,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin,
{
    async move {
        let config = &shared.config;
        let bytes = match read_request(body, config.max_request_bytes).await {
            Ok(bytes) => bytes,
            Err(error) => return Step::Answer(Ok(unread(config, &error))),
        };
        let credentials = if bound {
            config.credential_headers()
        } else {
            &[]
        };
        let fingerprint =
            Fingerprint::compute_bound(&parts, &config.fingerprint_headers, credentials, &bytes);
        let claimed = match claim(&shared, &record_key, &fingerprint).await {
            Ok(Ok(token)) => Some(token),
            Ok(Err(response)) => return Step::Answer(Ok(response)),
            Err(error) => match unclaimed(config, &record_key, &error) {
                Some(response) => return Step::Answer(Ok(response)),
                None => None,
            },
        };
        let Some(token) = claimed else {
            let res = inner.call(Request::from_parts(parts, B::from(bytes))).await;
            return Step::Answer(res.map(|res| res.map(IdempotencyBody::stream)));
        };

        parts.extensions.insert(token);
        let request = Request::from_parts(parts, B::from(bytes));
        let outcome = WithLease::new(&shared, &record_key, token, inner.call(request)).await;
        // The handler answered: from here on the outcome is recorded whatever the client does
        // (see `detach`), so the recording stage owns everything it needs.
        Step::Record(finish(shared, record_key, token, fingerprint, outcome))
    }
}

/// The answer to a request whose body could not be read: 413 over the limit, 400 otherwise.
fn unread<B: Body>(config: &Config, error: &ReadError) -> Response<IdempotencyBody<B>> {
    match error {
        ReadError::TooLarge => {
            telemetry::request(&config.metrics, Metric::TooLarge);
            problems::respond(problems::request_too_large(config.max_request_bytes))
        }
        ReadError::Unreadable => problems::respond(problems::unreadable_body()),
    }
}

/// The answer to a request whose claim failed, or `None` to execute it without deduplication
/// (failing open).
fn unclaimed<B: Body>(
    config: &Config,
    key: &RecordKey,
    error: &StoreError,
) -> Option<Response<IdempotencyBody<B>>> {
    // Not an outage: the store answered, with a record this server cannot read. The request
    // may have run already, so neither policy executes it.
    if error.kind() == StoreErrorKind::Corrupt {
        tracing::error!(name = %config.name, key = key.short(), %error, "idempotency record unreadable; not executing");
        telemetry::request(&config.metrics, Metric::StoreError);
        return Some(problems::respond(problems::record_unreadable()));
    }
    // A memory store full of live claims is refused like an outage, but counted on its own: it
    // is a sizing problem, not an unreachable store.
    let metric = if error.kind() == StoreErrorKind::Full {
        Metric::StoreFull
    } else {
        Metric::StoreError
    };
    telemetry::request(&config.metrics, metric);
    match config.outage {
        OutagePolicy::FailClosed { retry_after } => {
            tracing::error!(name = %config.name, key = key.short(), %error, "idempotency store unavailable; failing closed");
            Some(problems::respond(problems::store_unavailable(retry_after)))
        }
        OutagePolicy::FailOpen => {
            tracing::warn!(name = %config.name, key = key.short(), %error, "idempotency store unavailable; executing without deduplication");
            None
        }
    }
}

/// Wakes the duplicates waiting on this server for `key`'s owner to finish.
fn notify<St>(shared: &Shared<St>, key: &RecordKey) {
    if matches!(shared.config.concurrency, Concurrency::Wait { .. }) {
        shared.waiters.notify(key);
    }
}

/// A store operation, timed into `idempotency_store_seconds`.
// An `async move` block on purpose (see the module's documentation): these futures sit inside
// the boxed one.
#[allow(clippy::manual_async_fn)]
fn timed<'a, St, T, F>(
    shared: &'a Shared<St>,
    op: StoreOp,
    fut: F,
) -> impl Future<Output = Result<T, StoreError>> + 'a
where
    F: Future<Output = Result<T, StoreError>> + 'a,
    St: 'a,
{
    async move {
        let start = Instant::now();
        let out = fut.await;
        telemetry::store_op(&shared.config.metrics, op, start.elapsed());
        out
    }
}
