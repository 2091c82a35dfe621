//! What happens to a keyed request: read and fingerprint it, claim or replay, execute under a
//! renewed lease, then keep or release the outcome.

use std::{
    future::Future,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, request::Parts};
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep, sleep_until};
use tower_fault::{BoxError, time::saturating_after};
use tower_service::Service;

use crate::{
    body::IdempotencyBody,
    config::{Concurrency, OutagePolicy, Shared},
    detach::Step,
    error::{StoreError, StoreErrorKind},
    key::{FencingToken, Fingerprint, RecordKey},
    problems,
    record::{CompletedRecord, Outcome, StoredResponse},
    store::{Claim, IdempotencyStore, StoreFuture},
    telemetry::{self, Outcome as Metric, StoreOp},
};

/// The header marking a replayed response.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

const WAIT_BACKOFF_START: Duration = Duration::from_millis(25);
const WAIT_BACKOFF_MAX: Duration = Duration::from_secs(1);

type Answer<B, E> = Result<Response<IdempotencyBody<B>>, E>;

/// The keyed request's first stage, up to the handler's answer: read and fingerprint the request,
/// claim or replay, run the handler under a renewed lease. It ends with an answer, or with the
/// recording stage ([`finish`]) to run next.
///
/// Written as a function returning an `async move` block rather than as an `async fn`, and with
/// each phase's locals scoped to it, to keep the boxed future small: an `async fn` keeps both
/// its arguments and their moved-to locals (the 224-byte request head twice), and a local moved
/// away still holds its slot until its scope ends. At 2136 bytes the box was past the
/// allocator's per-thread cache (about 1 KiB), so each keyed request paid its slow path to
/// allocate and free it; it is now well under.
// Not an `async fn` on purpose (see above).
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
            Err(ReadError::TooLarge) => {
                telemetry::request(&config.metrics, Metric::TooLarge);
                return Step::Answer(Ok(problems::respond(problems::request_too_large(
                    config.max_request_bytes,
                ))));
            }
            Err(ReadError::Unreadable) => {
                return Step::Answer(Ok(problems::respond(problems::unreadable_body())));
            }
        };
        let credentials: &[_] = if bound {
            &config.credential_headers
        } else {
            &[]
        };
        let fingerprint =
            Fingerprint::compute_bound(&parts, &config.fingerprint_headers, credentials, &bytes);
        let claimed = match claim(&shared, &record_key, &fingerprint).await {
            Ok(Ok(token)) => Some(token),
            Ok(Err(response)) => return Step::Answer(Ok(response)),
            // Not an outage: the store answered, with a record this server cannot read. The
            // request may have run already, so neither policy executes it.
            Err(error) if error.kind() == StoreErrorKind::Corrupt => {
                tracing::error!(key = record_key.short(), %error, "idempotency record unreadable; not executing");
                telemetry::request(&config.metrics, Metric::StoreError);
                return Step::Answer(Ok(problems::respond(problems::record_unreadable())));
            }
            Err(error) => {
                // A memory store full of live claims is refused like an outage, but counted on
                // its own: it is a sizing problem, not an unreachable store.
                let metric = if error.kind() == StoreErrorKind::Full {
                    Metric::StoreFull
                } else {
                    Metric::StoreError
                };
                telemetry::request(&config.metrics, metric);
                match config.outage {
                    OutagePolicy::FailClosed { retry_after } => {
                        tracing::error!(key = record_key.short(), %error, "idempotency store unavailable; failing closed");
                        return Step::Answer(Ok(problems::respond(problems::store_unavailable(
                            retry_after,
                        ))));
                    }
                    OutagePolicy::FailOpen => {
                        tracing::warn!(key = record_key.short(), %error, "idempotency store unavailable; executing without deduplication");
                        None
                    }
                }
            }
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

/// The recording stage, once the handler answered: keep or release the outcome, then answer.
///
/// Owns what it needs (the stage may be handed to the runtime if the client goes away), and
/// holds the handler's outcome in place: the response is read through a reference and taken
/// apart only once the store has answered.
// An `async move` block on purpose (see `run`): an `async fn` would store its arguments twice.
#[allow(clippy::manual_async_fn)]
fn finish<St, ResB, E>(
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
        let (shared, record_key, fingerprint) = (&*shared, &record_key, &fingerprint);
        let config = &shared.config;
        telemetry::request(&config.metrics, Metric::Executed);
        let Ok(response) = &mut result else {
            release(shared, record_key, token).await;
            return result.map(|res| res.map(IdempotencyBody::stream));
        };
        let transient = config
            .classifier
            .classify_status(response.status(), response.headers())
            .is_transient();
        if transient {
            tracing::debug!(
                key = record_key.short(),
                status = response.status().as_u16(),
                "transient outcome; key released"
            );
            release(shared, record_key, token).await;
            return result.map(|res| res.map(IdempotencyBody::stream));
        }
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
        let kept = |outcome| CompletedRecord {
            fingerprint: *fingerprint,
            outcome,
        };
        match end {
            ReadEnd::Complete => {
                {
                    let mut stored = StoredResponse::capture(
                        status,
                        response.headers(),
                        &config.never_replay,
                        prefix.clone(),
                    );
                    if let Some(trailers) = &trailers {
                        stored = stored.with_trailers(trailers, &config.never_replay);
                    }
                    complete(shared, record_key, token, &kept(Outcome::Response(stored))).await;
                }
                result.map(|res| {
                    let (head, _) = res.into_parts();
                    Response::from_parts(
                        head,
                        IdempotencyBody::full_with_trailers(prefix, trailers.map(|t| *t)),
                    )
                })
            }
            ReadEnd::TooLarge => {
                tracing::info!(
                    key = record_key.short(),
                    limit = config.max_response_bytes,
                    "response too large to keep; replays will be refused"
                );
                let outcome = Outcome::TooLarge {
                    status,
                    limit: config.max_response_bytes as u64,
                };
                complete(shared, record_key, token, &kept(outcome)).await;
                result.map(|res| res.map(|body| IdempotencyBody::resumed(prefix, None, body)))
            }
            ReadEnd::Overdue => {
                tracing::info!(
                    key = record_key.short(),
                    timeout = ?config.response_body_timeout,
                    "response body did not end in time to be kept; replays will be refused"
                );
                let outcome = Outcome::TooSlow {
                    status,
                    limit: config.response_body_timeout,
                };
                complete(shared, record_key, token, &kept(outcome)).await;
                result.map(|res| res.map(|body| IdempotencyBody::resumed(prefix, None, body)))
            }
            ReadEnd::Failed(error) => {
                // The handler answered a status that is not a transient failure: it ran, and
                // its effects may stand. Releasing the key would run it again on the client's
                // retry; the record says it ran and cannot be replayed.
                tracing::info!(
                    key = record_key.short(),
                    status = status.as_u16(),
                    "response body failed; duplicates will be refused, not executed"
                );
                complete(
                    shared,
                    record_key,
                    token,
                    &kept(Outcome::BodyFailed { status }),
                )
                .await;
                result
                    .map(|res| res.map(|body| IdempotencyBody::resumed(prefix, Some(error), body)))
            }
        }
    }
}

/// Claims the key: `Ok(Ok(token))` to execute, `Ok(Err(response))` to answer without executing
/// (replay, conflict, mismatch), `Err` when the store failed.
async fn claim<St: IdempotencyStore, B: Body>(
    shared: &Shared<St>,
    key: &RecordKey,
    fingerprint: &Fingerprint,
) -> Result<Result<FencingToken, Response<IdempotencyBody<B>>>, StoreError> {
    let config = &shared.config;
    let (reject_after, deadline) = match config.concurrency {
        Concurrency::Reject { retry_after } => (retry_after, None),
        Concurrency::Wait { max } => (
            Duration::from_secs(1),
            Some(saturating_after(Instant::now(), max)),
        ),
    };
    let mut backoff = WAIT_BACKOFF_START;
    loop {
        let claim = match deadline {
            None => {
                timed(
                    shared,
                    StoreOp::Claim,
                    shared.store.claim(key, fingerprint, config.lease),
                )
                .await?
            }
            Some(deadline) => {
                // Subscribe before asking the store, so a completion in between wakes us.
                // The subscription unsubscribes when dropped, also when the client goes away
                // and this future is dropped mid-wait.
                let subscription = shared.waiters.subscribe(key);
                let claim = {
                    let notified = subscription.notify().notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let claim = timed(
                        shared,
                        StoreOp::Claim,
                        shared.store.claim(key, fingerprint, config.lease),
                    )
                    .await;
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
                            None
                        }
                        other => Some(other),
                    }
                };
                drop(subscription);
                match claim {
                    Some(claim) => claim?,
                    None => continue,
                }
            }
        };
        return Ok(match claim {
            Claim::Acquired(token) => Ok(token),
            Claim::InFlight {
                fingerprint: held, ..
            } if held != *fingerprint => Err(mismatch(shared, key)),
            Claim::InFlight { .. } => {
                tracing::info!(key = key.short(), "duplicate of a request in flight");
                telemetry::request(&config.metrics, Metric::Conflict);
                Err(problems::respond(problems::in_flight(reject_after)))
            }
            Claim::Completed(record) if record.fingerprint != *fingerprint => {
                Err(mismatch(shared, key))
            }
            Claim::Completed(record) => Err(replay(shared, key, &record)),
        });
    }
}

fn mismatch<St, B: Body>(shared: &Shared<St>, key: &RecordKey) -> Response<IdempotencyBody<B>> {
    tracing::info!(
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
                key = key.short(),
                "duplicate of a request whose response was not kept"
            );
            telemetry::request(&shared.config.metrics, Metric::TooLarge);
            problems::respond(problems::not_replayable(*status, *limit))
        }
        Outcome::BodyFailed { status } => {
            tracing::info!(
                key = key.short(),
                "duplicate of a request whose response body failed"
            );
            telemetry::request(&shared.config.metrics, Metric::NotReplayable);
            problems::respond(problems::body_failed(*status))
        }
        Outcome::TooSlow { status, limit } => {
            tracing::info!(
                key = key.short(),
                "duplicate of a request whose response body did not end in time"
            );
            telemetry::request(&shared.config.metrics, Metric::NotReplayable);
            problems::respond(problems::too_slow(*status, *limit))
        }
    }
}

pin_project! {
    /// Runs the handler while renewing the lease every third of it (concurrently: a slow store
    /// never stalls the handler).
    ///
    /// A hand-written future rather than an `async fn` around `select!`: that kept the handler's
    /// future twice (argument and pinned local), and it sets up the renewal timer only once the
    /// handler is pending, so a handler that answers at once costs no timer (no clock read, no
    /// runtime handle).
    struct WithLease<'a, St, F> {
        #[pin]
        handler: F,
        #[pin]
        tick: Option<Sleep>,
        renewing: Option<StoreFuture<'a, bool>>,
        shared: &'a Shared<St>,
        key: &'a RecordKey,
        token: FencingToken,
    }
}

impl<'a, St, F> WithLease<'a, St, F> {
    fn new(shared: &'a Shared<St>, key: &'a RecordKey, token: FencingToken, handler: F) -> Self {
        Self {
            handler,
            tick: None,
            renewing: None,
            shared,
            key,
            token,
        }
    }
}

impl<St: IdempotencyStore, F: Future> Future for WithLease<'_, St, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let lease = this.shared.config.lease;
        let interval = lease / 3;
        loop {
            // The handler first, always (as a biased select would).
            if let Poll::Ready(out) = this.handler.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if let Some(renewing) = this.renewing {
                let Poll::Ready(renewed) = renewing.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                *this.renewing = None;
                let key: &RecordKey = this.key;
                match renewed {
                    Ok(true) => tracing::trace!(key = key.short(), "lease renewed"),
                    Ok(false) => tracing::warn!(
                        key = key.short(),
                        "lease lost while the handler runs; its outcome will not be recorded"
                    ),
                    Err(error) => tracing::warn!(key = key.short(), %error, "lease renewal failed"),
                }
                if let Some(tick) = this.tick.as_mut().as_pin_mut() {
                    tick.reset(saturating_after(Instant::now(), interval));
                }
                continue;
            }
            if this.tick.is_none() {
                this.tick.set(Some(sleep(interval)));
            }
            let Some(tick) = this.tick.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            if tick.poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (shared, key, token) = (*this.shared, *this.key, *this.token);
            *this.renewing = Some(Box::pin(timed(
                shared,
                StoreOp::Renew,
                shared.store.renew(key, token, lease),
            )));
        }
    }
}

// `complete`, `release` and `timed` return `async move` blocks rather than being `async fn`s: an
// `async fn` keeps every argument twice (see `run`), and these futures sit inside the boxed one.
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
                key = key.short(),
                token = token.get(),
                "stale owner: the lease expired and the key moved on; this outcome was not recorded"
            ),
            Err(error) => {
                // The handler ran once; its response still goes to the client (answering an
                // error would invite a retry, and a retry after the lease expires would execute
                // again).
                tracing::error!(key = key.short(), %error, "could not record the outcome; the key stays claimed until its lease expires");
                telemetry::request(&shared.config.metrics, Metric::StoreError);
            }
        }
        notify(shared, key);
    }
}

// An `async move` block on purpose (see `run`): an `async fn` would store its arguments twice.
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
                tracing::warn!(key = key.short(), %error, "could not release the key; it frees when its lease expires");
                telemetry::request(&shared.config.metrics, Metric::StoreError);
            }
        }
        notify(shared, key);
    }
}

fn notify<St>(shared: &Shared<St>, key: &RecordKey) {
    if matches!(shared.config.concurrency, Concurrency::Wait { .. }) {
        shared.waiters.notify(key);
    }
}

// An `async move` block on purpose (see `run`): an `async fn` would store its arguments twice.
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

enum ReadError {
    TooLarge,
    Unreadable,
}

async fn read_request<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    // Read by hand rather than `Limited` + `collect()`: those queue the frames in a `VecDeque`
    // (an allocation per request) to hand back the one frame a small body comes in.
    let mut body = pin!(body);
    let mut buffered = Buffered::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ReadError::Unreadable);
        };
        // A request's trailers are not part of its fingerprint, nor passed on.
        if let Ok(mut data) = frame.into_data() {
            if buffered.len + data.remaining() > limit {
                return Err(ReadError::TooLarge);
            }
            buffered.push(data.copy_to_bytes(data.remaining()));
        }
    }
    Ok(buffered.finish())
}

/// Body bytes read so far: a single data frame (the common case) is kept without copying; only
/// a body in several frames is copied, once, into one buffer.
#[derive(Default)]
struct Buffered {
    first: Option<Bytes>,
    rest: BytesMut,
    len: usize,
}

impl Buffered {
    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if self.first.is_none() {
            self.first = Some(data);
        } else {
            self.rest.extend_from_slice(&data);
        }
    }

    fn finish(self) -> Bytes {
        match self.first {
            None => Bytes::new(),
            Some(first) if self.rest.is_empty() => first,
            Some(first) => {
                let mut all = BytesMut::with_capacity(first.len() + self.rest.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&self.rest);
                all.freeze()
            }
        }
    }
}

/// How reading a response body ended; what was read is in the [`ReadBody`].
enum ReadEnd<E> {
    /// The whole body, and its trailers.
    Complete,
    /// The body went over the limit; the rest is still in the body.
    TooLarge,
    /// The body did not end within the response body timeout; the rest is still in the body.
    Overdue,
    /// The body failed, with this error.
    Failed(E),
}

/// Reads a response body up to `limit` bytes and for at most `timeout`, leaving the rest in
/// the body to stream if it is larger or slower. Trailers are kept with a complete body; a body
/// cut short has not sent its trailers yet (they come last), so they stream through with the
/// rest of it.
///
/// A struct rather than an `async fn` so that what was read stays here when the read is cut
/// short by the timeout.
struct ReadBody<'b, B> {
    body: &'b mut B,
    limit: usize,
    timeout: Duration,
    /// Set up only once the body is not ready at once (boxed: inline, a `Sleep` would grow
    /// every keyed request's future, and only slow bodies need one).
    deadline: Option<Pin<Box<Sleep>>>,
    buffered: Buffered,
    /// Boxed: trailers are rare, and a `HeaderMap` inline would add 88 bytes to every keyed
    /// request's boxed future, which holds this across the store's `complete`.
    trailers: Option<Box<HeaderMap>>,
}

impl<'b, B: Body<Data = Bytes> + Unpin> ReadBody<'b, B> {
    fn new(body: &'b mut B, limit: usize, timeout: Duration) -> Self {
        Self {
            body,
            limit,
            timeout,
            deadline: None,
            buffered: Buffered::default(),
            trailers: None,
        }
    }

    /// Whether the body says it is over the limit before a byte is read.
    fn too_large_by_hint(&self) -> bool {
        self.body.size_hint().lower() > self.limit as u64
    }

    /// The bytes read (all of them, or the prefix before the read stopped) and the trailers.
    fn into_parts(self) -> (Bytes, Option<Box<HeaderMap>>) {
        (self.buffered.finish(), self.trailers)
    }
}

impl<B: Body<Data = Bytes> + Unpin> Future for ReadBody<'_, B> {
    type Output = ReadEnd<B::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut *this.body).poll_frame(cx) {
                Poll::Ready(None) => return Poll::Ready(ReadEnd::Complete),
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => {
                            if let Ok(more) = frame.into_trailers() {
                                match &mut this.trailers {
                                    Some(trailers) => trailers.extend(more),
                                    None => this.trailers = Some(Box::new(more)),
                                }
                            }
                            continue;
                        }
                    };
                    this.buffered.push(data);
                    if this.buffered.len > this.limit {
                        return Poll::Ready(ReadEnd::TooLarge);
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(ReadEnd::Failed(error)),
                Poll::Pending => {
                    let timeout = this.timeout;
                    let deadline = this.deadline.get_or_insert_with(|| {
                        Box::pin(sleep_until(saturating_after(Instant::now(), timeout)))
                    });
                    return match deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(ReadEnd::Overdue),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        pin::Pin,
        task::{Context, Poll},
    };

    use http_body::Frame;

    use super::*;

    /// A body of scripted frames with no size hint (as a chunked request has).
    struct Frames(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl Frames {
        fn data(chunks: &[&'static str]) -> Self {
            Self(
                chunks
                    .iter()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                    .collect(),
            )
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn read(body: Frames, limit: usize) -> Result<Bytes, ReadError> {
        futures_now(read_request(body, limit))
    }

    fn futures_now<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn request_body_in_frames_is_joined_and_trailers_ignored() {
        let mut body = Frames::data(&["ab", "", "cd", "e"]);
        body.0.push_back(Ok(Frame::trailers(HeaderMap::new())));
        assert_eq!(read(body, 5).ok().unwrap(), "abcde");
        assert_eq!(read(Frames::data(&["one"]), 3).ok().unwrap(), "one");
        assert_eq!(read(Frames::data(&[]), 0).ok().unwrap(), "");
    }

    #[test]
    fn request_body_over_the_limit_across_frames_is_too_large() {
        assert!(matches!(
            read(Frames::data(&["abc", "def"]), 5),
            Err(ReadError::TooLarge)
        ));
    }

    #[test]
    fn request_body_error_is_unreadable() {
        let mut body = Frames::data(&["ab"]);
        body.0.push_back(Err("reset"));
        assert!(matches!(read(body, 100), Err(ReadError::Unreadable)));
    }
}
