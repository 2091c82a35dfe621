//! What happens to a keyed request: read and fingerprint it, claim or replay, execute under a
//! renewed lease, then keep or release the outcome.

use std::{future::Future, pin::pin, sync::Arc, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, request::Parts};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::{Instant, sleep};
use tower_fault::{BoxError, IdempotencyKey, time::saturating_after};
use tower_service::Service;

use crate::{
    body::IdempotencyBody,
    config::{Concurrency, OutagePolicy, Shared},
    error::StoreError,
    key::{FencingToken, Fingerprint, RecordKey, Scope},
    problems,
    record::{CompletedRecord, Outcome, StoredResponse},
    store::{Claim, IdempotencyStore},
    telemetry::{self, Outcome as Metric, StoreOp},
};

/// The header marking a replayed response.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

const WAIT_BACKOFF_START: Duration = Duration::from_millis(25);
const WAIT_BACKOFF_MAX: Duration = Duration::from_secs(1);

type Answer<B, E> = Result<Response<IdempotencyBody<B>>, E>;

pub(crate) async fn run<S, St, B, ResB>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    mut parts: Parts,
    body: B,
    key: IdempotencyKey,
    scope: Scope,
) -> Answer<ResB, S::Error>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    St: IdempotencyStore,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin,
{
    let config = &shared.config;
    let bytes = match read_request(body, config.max_request_bytes).await {
        Ok(bytes) => bytes,
        Err(ReadError::TooLarge) => {
            telemetry::request(&config.metrics, Metric::TooLarge);
            return Ok(problems::respond(problems::request_too_large(
                config.max_request_bytes,
            )));
        }
        Err(ReadError::Unreadable) => {
            return Ok(problems::respond(problems::unreadable_body()));
        }
    };
    let fingerprint = Fingerprint::compute(&parts, &config.fingerprint_headers, &bytes);
    let record_key = RecordKey::new(&scope, &key);
    let claimed = match claim(&shared, &record_key, &fingerprint).await {
        Ok(Ok(token)) => Some(token),
        Ok(Err(response)) => return Ok(response),
        Err(error) => match config.outage {
            OutagePolicy::FailClosed { retry_after } => {
                tracing::error!(key = record_key.short(), %error, "idempotency store unavailable; failing closed");
                telemetry::request(&config.metrics, Metric::StoreError);
                return Ok(problems::respond(problems::store_unavailable(retry_after)));
            }
            OutagePolicy::FailOpen => {
                tracing::warn!(key = record_key.short(), %error, "idempotency store unavailable; executing without deduplication");
                telemetry::request(&config.metrics, Metric::StoreError);
                None
            }
        },
    };
    let Some(token) = claimed else {
        let res = inner
            .call(Request::from_parts(parts, B::from(bytes)))
            .await?;
        return Ok(res.map(IdempotencyBody::stream));
    };

    parts.extensions.insert(token);
    let request = Request::from_parts(parts, B::from(bytes));
    let result = with_lease(&shared, &record_key, token, inner.call(request)).await;
    telemetry::request(&config.metrics, Metric::Executed);
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            release(&shared, &record_key, token).await;
            return Err(error);
        }
    };
    let class = config
        .classifier
        .classify_status(response.status(), response.headers());
    if class.is_transient() {
        tracing::debug!(
            key = record_key.short(),
            status = response.status().as_u16(),
            "transient outcome; key released"
        );
        release(&shared, &record_key, token).await;
        return Ok(response.map(IdempotencyBody::stream));
    }
    let (head, body) = response.into_parts();
    match read_response(body, config.max_response_bytes).await {
        ReadResponse::Complete(bytes, trailers) => {
            let mut stored = StoredResponse::capture(
                head.status,
                &head.headers,
                &config.never_replay,
                bytes.clone(),
            );
            if let Some(trailers) = &trailers {
                stored = stored.with_trailers(trailers, &config.never_replay);
            }
            let record = CompletedRecord {
                fingerprint,
                outcome: Outcome::Response(stored),
            };
            complete(&shared, &record_key, token, &record).await;
            Ok(Response::from_parts(
                head,
                IdempotencyBody::full_with_trailers(bytes, trailers),
            ))
        }
        ReadResponse::TooLarge { prefix, body } => {
            tracing::info!(
                key = record_key.short(),
                limit = config.max_response_bytes,
                "response too large to keep; replays will be refused"
            );
            let record = CompletedRecord {
                fingerprint,
                outcome: Outcome::TooLarge {
                    status: head.status,
                    limit: config.max_response_bytes as u64,
                },
            };
            complete(&shared, &record_key, token, &record).await;
            Ok(Response::from_parts(
                head,
                IdempotencyBody::resumed(prefix, None, body),
            ))
        }
        ReadResponse::Failed {
            prefix,
            error,
            body,
        } => {
            tracing::debug!(
                key = record_key.short(),
                "response body failed; key released"
            );
            release(&shared, &record_key, token).await;
            Ok(Response::from_parts(
                head,
                IdempotencyBody::resumed(prefix, Some(error), body),
            ))
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
    }
}

/// Runs the handler while renewing the lease every third of it (concurrently: a slow store
/// never stalls the handler).
async fn with_lease<St: IdempotencyStore, F: Future>(
    shared: &Shared<St>,
    key: &RecordKey,
    token: FencingToken,
    handler: F,
) -> F::Output {
    let lease = shared.config.lease;
    let interval = lease / 3;
    tokio::pin!(handler);
    let tick = sleep(interval);
    tokio::pin!(tick);
    let mut renewing = None;
    loop {
        tokio::select! {
            biased;
            out = &mut handler => return out,
            renewed = async { renewing.as_mut().expect("guarded by the precondition").await }, if renewing.is_some() => {
                renewing = None;
                match renewed {
                    Ok(true) => tracing::trace!(key = key.short(), "lease renewed"),
                    Ok(false) => tracing::warn!(key = key.short(), "lease lost while the handler runs; its outcome will not be recorded"),
                    Err(error) => tracing::warn!(key = key.short(), %error, "lease renewal failed"),
                }
                tick.as_mut().reset(saturating_after(Instant::now(), interval));
            }
            () = &mut tick, if renewing.is_none() => {
                renewing = Some(Box::pin(timed(shared, StoreOp::Renew, shared.store.renew(key, token, lease))));
            }
        }
    }
}

async fn complete<St: IdempotencyStore>(
    shared: &Shared<St>,
    key: &RecordKey,
    token: FencingToken,
    record: &CompletedRecord,
) {
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
            // The handler ran once; its response still goes to the client (answering an error
            // would invite a retry, and a retry after the lease expires would execute again).
            tracing::error!(key = key.short(), %error, "could not record the outcome; the key stays claimed until its lease expires");
            telemetry::request(&shared.config.metrics, Metric::StoreError);
        }
    }
    notify(shared, key);
}

async fn release<St: IdempotencyStore>(shared: &Shared<St>, key: &RecordKey, token: FencingToken) {
    match timed(shared, StoreOp::Release, shared.store.release(key, token)).await {
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(key = key.short(), %error, "could not release the key; it frees when its lease expires");
            telemetry::request(&shared.config.metrics, Metric::StoreError);
        }
    }
    notify(shared, key);
}

fn notify<St>(shared: &Shared<St>, key: &RecordKey) {
    if matches!(shared.config.concurrency, Concurrency::Wait { .. }) {
        shared.waiters.notify(key);
    }
}

async fn timed<St, T>(
    shared: &Shared<St>,
    op: StoreOp,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let start = Instant::now();
    let out = fut.await;
    telemetry::store_op(&shared.config.metrics, op, start.elapsed());
    out
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
        // A request's trailers are not part of its fingerprint, nor passed on (as before).
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

enum ReadResponse<B: Body> {
    /// The whole body and its trailers.
    Complete(Bytes, Option<HeaderMap>),
    TooLarge {
        prefix: Bytes,
        body: B,
    },
    Failed {
        prefix: Bytes,
        error: B::Error,
        body: B,
    },
}

/// Reads a response body up to `limit` bytes, keeping the body to stream the rest if it is
/// larger. Trailers are kept with a complete body; a body cut short (too large, failed) has not
/// sent its trailers yet (they come last), so they stream through with the rest of it.
async fn read_response<B>(mut body: B, limit: usize) -> ReadResponse<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return ReadResponse::TooLarge {
            prefix: Bytes::new(),
            body,
        };
    }
    let mut buffered = Buffered::default();
    let mut trailers: Option<HeaderMap> = None;
    loop {
        match body.frame().await {
            None => return ReadResponse::Complete(buffered.finish(), trailers),
            Some(Ok(frame)) => {
                let data = match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => {
                        if let Ok(more) = frame.into_trailers() {
                            match &mut trailers {
                                Some(trailers) => trailers.extend(more),
                                None => trailers = Some(more),
                            }
                        }
                        continue;
                    }
                };
                buffered.push(data);
                if buffered.len > limit {
                    return ReadResponse::TooLarge {
                        prefix: buffered.finish(),
                        body,
                    };
                }
            }
            Some(Err(error)) => {
                return ReadResponse::Failed {
                    prefix: buffered.finish(),
                    error,
                    body,
                };
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
