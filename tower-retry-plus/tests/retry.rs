//! Behaviour of the retry layer against scripted upstreams, on tokio's paused clock.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use tokio::time::Instant;
use tower::{Layer, Service};
use tower_fault::{
    AttemptContext, BoxError, EndpointError, EndpointId, IDEMPOTENCY_KEY, IdempotencyKey,
    RejectReason, Rejected, SentTo, ServedBy,
};
use tower_retry_plus::{
    Backoff, Jitter, ReplayBody, RetryInfo, RetryLayer, RetryLayerBuilder, RetryOutcome,
    RetryOverride,
    error::{AttemptTimedOut, DeadlineExceeded},
};

use support::{Step, call, chunked, get, post, scripted};

const MS: Duration = Duration::from_millis(1);

/// Fast, deterministic settings: constant 10 ms backoff, no jitter, no budget.
fn fast() -> RetryLayerBuilder {
    fast_with_budget().no_budget()
}

/// [`fast`] with the default budget, for tests that tune it.
fn fast_with_budget() -> RetryLayerBuilder {
    RetryLayer::builder()
        .backoff(Backoff::constant(10 * MS))
        .jitter(Jitter::None)
}

fn info<B>(res: &Response<B>) -> RetryInfo {
    RetryInfo::of(res)
}

#[tokio::test(start_paused = true)]
async fn retries_503_503_then_returns_200() {
    let (upstream, log) = scripted([Step::Status(503), Step::Status(503)]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(log.len(), 3);
    let attempts: Vec<u32> = log.all().iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "AttemptContext advanced per attempt");
    let info = info(&res);
    assert_eq!(
        (info.attempts, info.total_delay, info.outcome),
        (3, 20 * MS, RetryOutcome::Success)
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_failure_is_sent_once() {
    let (upstream, log) = scripted([Step::Status(404)]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(log.len(), 1);
    assert_eq!(info(&res).outcome, RetryOutcome::Permanent);
}

#[tokio::test(start_paused = true)]
async fn exhausted_returns_the_last_response_with_its_body() {
    let (upstream, log) = scripted([Step::Status(503); 10]);
    let mut svc = fast().max_attempts(3).build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(log.len(), 3);
    assert_eq!(info(&res).outcome, RetryOutcome::Exhausted);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "attempt 3");
}

#[tokio::test(start_paused = true)]
async fn post_503_without_key_is_not_retried() {
    let (upstream, log) = scripted([Step::Status(503), Step::Status(503)]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, post("http://up/pay", "{}")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(log.len(), 1);
    assert_eq!(info(&res).outcome, RetryOutcome::UnsafeMethod);
}

#[tokio::test(start_paused = true)]
async fn post_503_with_key_is_retried() {
    let (upstream, log) = scripted([Step::Status(503), Step::Status(503)]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let mut req = post("http://up/pay", "{}");
    req.headers_mut()
        .insert(IDEMPOTENCY_KEY, "order-42".parse().unwrap());
    let res = call(&mut svc, req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(log.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn stamped_key_is_the_same_on_every_attempt_and_only_on_unsafe_methods() {
    let (upstream, log) = scripted([Step::Status(503), Step::Status(502)]);
    let mut svc = fast()
        .idempotency_key(true)
        .build()
        .unwrap()
        .layer(upstream);
    let res = call(&mut svc, post("http://up/pay", "{\"amount\":1}"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = log.all();
    assert_eq!(seen.len(), 3);
    let keys: Vec<_> = seen
        .iter()
        .map(|s| s.headers.get(IDEMPOTENCY_KEY).cloned().unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let key = IdempotencyKey::parse(&keys[0]).unwrap();
    assert_eq!(uuid_version(key.as_str()), '7');
    assert!(seen.iter().all(|s| s.body == "{\"amount\":1}"));

    let (upstream, log) = scripted([]);
    let mut svc = fast()
        .idempotency_key(true)
        .build()
        .unwrap()
        .layer(upstream);
    call(&mut svc, get("http://up/")).await.unwrap();
    assert!(log.all()[0].headers.get(IDEMPOTENCY_KEY).is_none());
}

fn uuid_version(s: &str) -> char {
    s.chars().nth(14).unwrap()
}

#[tokio::test(start_paused = true)]
async fn post_failures_that_prove_no_processing_are_retried() {
    let (upstream, log) = scripted([Step::Refused, Step::Status(429), Step::Rejected(MS)]);
    let mut svc = fast().max_attempts(5).build().unwrap().layer(upstream);
    let res = call(&mut svc, post("http://up/pay", "{}")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(log.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn post_reset_after_send_without_key_is_not_retried() {
    let (upstream, log) = scripted([Step::Reset]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let err = call(&mut svc, post("http://up/pay", "{}"))
        .await
        .unwrap_err();
    let io = err
        .downcast_ref::<std::io::Error>()
        .expect("the inner error is returned");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(log.len(), 1);

    // the same failure is retried for an idempotent method
    let (upstream, log) = scripted([Step::Reset]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(
        &mut svc,
        Request::put("http://up/x").body(support::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(log.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_next_delay() {
    let (upstream, log) = scripted([Step::StatusRetryAfter(429, "2")]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = log.all();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
    assert!(waited < Duration::from_millis(2_100), "waited {waited:?}");
    assert_eq!(info(&res).total_delay, Duration::from_secs(2));
}

/// Issue 16: a retry in front of an open breaker slept its Retry-After (up to most of the
/// deadline). A local rejection's hint longer than the backoff's maximum (10 ms here) is
/// returned to the caller at once.
#[tokio::test(start_paused = true)]
async fn a_local_rejection_hint_beyond_the_backoff_is_returned_at_once() {
    let (upstream, log) = scripted([Step::Rejected(Duration::from_secs(3))]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let start = Instant::now();
    let err = call(&mut svc, post("http://up/pay", "{}"))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "blocked the caller");
    let rejected = tower_fault::find::<Rejected>(err.as_ref()).expect("the rejection");
    assert_eq!(rejected.reason(), RejectReason::BreakerOpen);
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_local_rejection_hint_within_the_wait_is_waited_out() {
    for (steps, waited) in [
        // Within the backoff's maximum (1 s): waited.
        ([Step::Rejected(Duration::from_millis(800))], 800 * MS),
        // A hint of zero, or none: the backoff.
        ([Step::Rejected(Duration::ZERO)], 10 * MS),
    ] {
        let (upstream, log) = scripted(steps);
        let mut svc = fast()
            .backoff(Backoff::exponential(10 * MS, 2.0, Duration::from_secs(1)))
            .build()
            .unwrap()
            .layer(upstream);
        let res = call(&mut svc, post("http://up/pay", "{}")).await.unwrap();
        assert_eq!(res.status(), 200);
        let seen = log.all();
        assert_eq!(seen[1].at - seen[0].at, waited);
    }
    // Up to a wait set explicitly.
    let (upstream, log) = scripted([Step::Rejected(Duration::from_secs(3))]);
    let mut svc = fast()
        .max_local_rejection_wait(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(upstream);
    let res = call(&mut svc, post("http://up/pay", "{}")).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = log.all();
    assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(3));
    // Upstream hints keep their own cap: a 429's 3 s is honoured with the same settings.
    let (upstream, log) = scripted([Step::StatusRetryAfter(429, "3")]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, post("http://up/pay", "{}")).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = log.all();
    assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(3));
}

/// An endpoint's own breaker rejecting (failover reports it with `EndpointError`): its hint is
/// about that endpoint, and the next attempt goes to another one after the normal backoff.
#[tokio::test(start_paused = true)]
async fn an_endpoints_own_rejection_is_not_waited() {
    for wait in [None, Some(Duration::ZERO)] {
        let (upstream, log) = scripted([Step::RejectedBy(4, Duration::from_secs(20))]);
        let mut builder = fast();
        if let Some(wait) = wait {
            builder = builder.max_local_rejection_wait(wait);
        }
        let mut svc = builder.build().unwrap().layer(upstream);
        let res = call(&mut svc, post("http://up/pay", "{}")).await.unwrap();
        assert_eq!(res.status(), 200);
        let seen = log.all();
        assert_eq!(
            seen[1].at - seen[0].at,
            10 * MS,
            "the backoff, not the hint"
        );
        assert_eq!(seen[1].tried, [EndpointId(4)], "the next attempt avoids it");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_returns_at_once() {
    let (upstream, log) = scripted([Step::StatusRetryAfter(503, "5")]);
    let mut svc = fast()
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(upstream);
    let start = Instant::now();
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "slept uselessly");
    assert_eq!(res.status(), 503);
    assert_eq!(log.len(), 1);
    assert_eq!(info(&res).outcome, RetryOutcome::Deadline);
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_cap_returns_at_once() {
    let (upstream, log) = scripted([Step::StatusRetryAfter(503, "120")]);
    let mut svc = fast()
        .max_retry_after(Duration::from_secs(60))
        .build()
        .unwrap()
        .layer(upstream);
    let start = Instant::now();
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!((res.status().as_u16(), log.len()), (503, 1));
}

#[tokio::test(start_paused = true)]
async fn deadline_is_never_exceeded() {
    let deadline = Duration::from_secs(1);
    for (steps, attempt_timeout, backoff) in [
        (vec![Step::Hang; 10], Some(300 * MS), 100 * MS),
        (vec![Step::Status(503); 10], None, 350 * MS),
        (vec![Step::Hang], None, 10 * MS),
        (
            vec![Step::Status(503), Step::Hang, Step::Status(503)],
            Some(900 * MS),
            50 * MS,
        ),
    ] {
        let (upstream, _log) = scripted(steps);
        let mut builder = RetryLayer::builder()
            .max_attempts(10)
            .deadline(deadline)
            .backoff(Backoff::constant(backoff))
            .jitter(Jitter::None);
        if let Some(t) = attempt_timeout {
            builder = builder.attempt_timeout(t);
        }
        let mut svc = builder.build().unwrap().layer(upstream);
        let start = Instant::now();
        let result = call(&mut svc, get("http://up/")).await;
        assert!(start.elapsed() <= deadline, "took {:?}", start.elapsed());
        if let Err(err) = result {
            assert!(
                err.is::<DeadlineExceeded>() || err.is::<AttemptTimedOut>(),
                "unexpected error {err}"
            );
        }
    }
}

/// The deadline's clock starts at the first poll of the response future (so a request answered
/// in its first poll never reads the clock for it), not when the future is made.
#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_the_first_poll() {
    use tower::ServiceExt;
    let (upstream, _log) = scripted([Step::Hang]);
    let mut svc = fast()
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(upstream);
    let fut = svc.ready().await.unwrap().call(get("http://up/"));
    tokio::time::advance(Duration::from_secs(5)).await;
    let start = Instant::now();
    let err = fut.await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_a_transient_failure() {
    let (upstream, log) = scripted([Step::Hang]);
    let mut svc = fast()
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(upstream);
    let start = Instant::now();
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(log.len(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(1) + 10 * MS);

    // a timed-out POST may have been processed: not retried
    let (upstream, log) = scripted([Step::Hang]);
    let mut svc = fast()
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(upstream);
    let err = call(&mut svc, post("http://up/pay", "{}"))
        .await
        .unwrap_err();
    assert!(err.is::<AttemptTimedOut>(), "{err}");
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn bodies_are_replayed_identical() {
    let (upstream, log) = scripted([Step::Status(503), Step::Status(500)]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let req = Request::put("http://up/doc")
        .body(chunked(&["alpha-", "beta-", "gamma"]))
        .unwrap();
    let res = call(&mut svc, req).await.unwrap();
    assert_eq!(res.status(), 200);
    let bodies: Vec<_> = log.all().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, ["alpha-beta-gamma"; 3]);
}

#[tokio::test(start_paused = true)]
async fn over_limit_streaming_body_is_sent_once_and_whole() {
    let (upstream, log) = scripted([Step::Status(503)]);
    let mut svc = fast().max_replay_bytes(8).build().unwrap().layer(upstream);
    let req = Request::put("http://up/doc")
        .body(chunked(&["0123", "4567", "89ab", "cdef"]))
        .unwrap();
    let res = call(&mut svc, req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(info(&res).outcome, RetryOutcome::NotReplayable);
    let seen = log.all();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "0123456789abcdef");
}

#[tokio::test(start_paused = true)]
async fn per_request_overrides() {
    let (upstream, log) = scripted([Step::Status(503); 10]);
    let mut svc = fast().build().unwrap().layer(upstream);
    let mut req = get("http://up/");
    req.extensions_mut().insert(RetryOverride::disabled());
    let res = call(&mut svc, req).await.unwrap();
    assert_eq!((res.status().as_u16(), log.len()), (503, 1));

    let mut req = get("http://up/");
    req.extensions_mut().insert(RetryOverride::max_attempts(2));
    let res = call(&mut svc, req).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(info(&res).attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn budget_caps_retries_under_a_total_outage() {
    for (ratio, floor) in [(0.2, 0), (0.5, 0), (0.0, 1), (1.0, 0)] {
        let (upstream, log) = scripted(vec![Step::Status(503); 10_000]);
        let mut svc = fast_with_budget()
            .backoff(Backoff::constant(Duration::ZERO))
            .budget_ratio(ratio)
            .budget_floor_per_sec(floor)
            .build()
            .unwrap()
            .layer(upstream);
        let requests = 500;
        for _ in 0..requests {
            let res = call(&mut svc, get("http://up/")).await.unwrap();
            assert_eq!(res.status(), 503);
        }
        let attempts = log.len() as f64;
        // No time passes (zero backoff, paused clock): the floor gives its one second's worth.
        let bound = f64::from(requests) * (1.0 + ratio) + f64::from(floor);
        assert!(
            attempts <= bound,
            "ratio {ratio}: {attempts} attempts > {bound}"
        );
        // without a budget it would be 4 attempts per request
        assert!(
            attempts >= bound - 4.0,
            "ratio {ratio}: budget too strict ({attempts})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn budget_is_shared_by_clones_of_the_layer() {
    let layer = fast_with_budget()
        .budget_ratio(0.0)
        .budget_floor_per_sec(0)
        .build()
        .unwrap();
    let (upstream, log) = scripted([Step::Status(503); 4]);
    let mut a = layer.clone().layer(upstream.clone());
    let mut b = layer.layer(upstream);
    let res = call(&mut a, get("http://up/")).await.unwrap();
    assert_eq!(info(&res).outcome, RetryOutcome::BudgetExhausted);
    call(&mut b, get("http://up/")).await.unwrap();
    assert_eq!(log.len(), 2);
}

/// Per attempt: (attempt, endpoints seen as tried, whether the request had a context).
type AttemptLog = Arc<std::sync::Mutex<Vec<(u32, Vec<EndpointId>, bool)>>>;
type Upstream = tower::util::BoxCloneSyncService<
    Request<ReplayBody<http_body_util::Full<Bytes>>>,
    Response<http_body_util::Full<Bytes>>,
    BoxError,
>;

/// An upstream behind "endpoints": attempt `n` goes to endpoint `n` and reports it the way
/// failover does — `ServedBy` on a transient response, `EndpointError` around an error.
fn reporting_upstream(fail_with_error: bool, failures: u32) -> (Upstream, AttemptLog) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let upstream = tower::service_fn(
        move |req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let has_ctx = req.extensions().get::<AttemptContext>().is_some();
            let ctx = AttemptContext::of(&req);
            let endpoint = EndpointId(ctx.attempt().into());
            log.lock()
                .unwrap()
                .push((ctx.attempt(), ctx.endpoints_tried().to_vec(), has_ctx));
            let fail = ctx.attempt() <= failures;
            async move {
                if fail && fail_with_error {
                    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                    return Err(EndpointError::new(endpoint, "e".into(), refused.into()).into());
                }
                let mut res = Response::builder()
                    .status(if fail { 503 } else { 200 })
                    .body(support::empty())
                    .unwrap();
                if fail {
                    res.extensions_mut().insert(ServedBy(endpoint));
                }
                Ok::<_, BoxError>(res)
            }
        },
    );
    (Upstream::new(upstream), seen)
}

#[tokio::test(start_paused = true)]
async fn retries_carry_the_endpoints_failover_reported() {
    for fail_with_error in [false, true] {
        let (upstream, seen) = reporting_upstream(fail_with_error, 2);
        let mut svc = fast().build().unwrap().layer(upstream);
        let res = call(&mut svc, get("http://up/")).await.unwrap();
        assert_eq!(res.status(), 200);
        let (e1, e2) = (EndpointId(1), EndpointId(2));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (1, vec![], false),
                (2, vec![e1], true),
                (3, vec![e1, e2], true)
            ],
            "errors: {fail_with_error}; the first attempt carries no context"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_info_only_when_the_layer_did_something() {
    let (upstream, _) = reporting_upstream(false, 0);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert!(
        res.extensions().get::<RetryInfo>().is_none(),
        "a first-attempt success allocates nothing for RetryInfo"
    );
    assert_eq!(RetryInfo::of(&res), RetryInfo::FIRST_ATTEMPT);
    let (upstream, _) = reporting_upstream(false, 1);
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.extensions().get::<RetryInfo>().unwrap().attempts, 2);
    let (upstream, _) = reporting_upstream(false, 9);
    let mut svc = fast().max_attempts(1).build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(
        res.extensions().get::<RetryInfo>().map(|i| i.outcome),
        Some(RetryOutcome::Exhausted),
        "giving up on the first attempt is reported"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_counts_as_tried() {
    // Attempt 1 hangs past the attempt timeout: it answers nothing, so only the `SentTo` slot
    // failover fills as it sends can tell the next attempt where not to go.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let upstream = tower::service_fn(
        move |req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let ctx = AttemptContext::of(&req);
            let endpoint = EndpointId(ctx.attempt().into());
            let sent_to = req.extensions().get::<SentTo>().cloned();
            if let Some(slot) = &sent_to {
                slot.record(endpoint);
            }
            log.lock().unwrap().push((
                ctx.attempt(),
                ctx.endpoints_tried().to_vec(),
                sent_to.is_some(),
            ));
            let hang = ctx.attempt() == 1;
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(Response::new(support::empty()))
            }
        },
    );
    let mut svc = fast()
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, vec![], true), (2, vec![EndpointId(1)], true)]
    );

    // Without an attempt timeout no attempt can be cancelled: no slot, nothing allocated.
    let (upstream, _) = reporting_upstream(false, 0);
    let probe = tower::service_fn(
        move |req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            assert!(req.extensions().get::<SentTo>().is_none());
            let mut upstream = upstream.clone();
            async move { upstream.call(req).await }
        },
    );
    let mut svc = fast().build().unwrap().layer(probe);
    assert_eq!(
        call(&mut svc, get("http://up/")).await.unwrap().status(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn nested_layers_with_attempt_timeouts_share_where_attempts_went() {
    // The inner layer times out twice and gives up; the outer layer's attempt therefore timed
    // out too, without an answer. Both layers read the one `SentTo` slot, so the outer retry
    // knows the endpoint its timed-out attempt last went to.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (counter, log) = (Arc::clone(&calls), Arc::clone(&seen));
    let upstream = tower::service_fn(
        move |req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(slot) = req.extensions().get::<SentTo>() {
                slot.record(EndpointId(n as u64));
            }
            log.lock()
                .unwrap()
                .push(AttemptContext::of(&req).endpoints_tried().to_vec());
            async move {
                if n <= 2 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(Response::new(support::empty()))
            }
        },
    );
    let inner = fast()
        .max_attempts(2)
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(upstream);
    let outer_service = tower::service_fn(
        move |req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let mut inner = inner.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
                inner
                    .call(Request::from_parts(parts, http_body_util::Full::new(body)))
                    .await
            }
        },
    );
    let mut outer = fast()
        .max_attempts(2)
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .layer(outer_service);
    let res = call(&mut outer, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        seen.lock().unwrap().last().cloned().unwrap(),
        [EndpointId(2)],
        "the outer retry carries the endpoint its timed-out attempt last went to"
    );
}

#[tokio::test(start_paused = true)]
async fn nested_layers_report_the_outer_layers_attempts() {
    let (upstream, _) = reporting_upstream(false, 2);
    let inner = fast().build().unwrap().layer(upstream);
    // The outer layer sees the inner one's final answer: a success on its first attempt.
    let outer_service = tower::service_fn(
        move |req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let mut inner = inner.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
                let req = Request::from_parts(parts, http_body_util::Full::new(body));
                let res = inner.call(req).await?;
                assert_eq!(
                    RetryInfo::of(&res).attempts,
                    3,
                    "the inner layer retried twice"
                );
                Ok::<_, BoxError>(res)
            }
        },
    );
    let mut outer = fast().build().unwrap().layer(outer_service);
    let res = call(&mut outer, get("http://up/")).await.unwrap();
    assert_eq!(
        RetryInfo::of(&res),
        RetryInfo::FIRST_ATTEMPT,
        "the info on the response is the outer layer's own"
    );
}

/// A caller's marker extension.
#[derive(Clone, Debug, PartialEq)]
struct Marker(&'static str);

#[tokio::test(start_paused = true)]
async fn caller_extensions_and_context_reach_every_attempt() {
    // (attempt, marker, endpoints tried) per attempt
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let upstream = tower::service_fn(
        move |req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let ctx = AttemptContext::of(&req);
            let marker = req.extensions().get::<Marker>().cloned();
            log.lock()
                .unwrap()
                .push((ctx.attempt(), marker, ctx.endpoints_tried().to_vec()));
            let status = if ctx.attempt() < 7 { 503 } else { 200 };
            async move {
                let mut res = Response::builder()
                    .status(status)
                    .body(support::empty())
                    .unwrap();
                res.extensions_mut().insert(ServedBy(EndpointId(9)));
                Ok::<_, BoxError>(res)
            }
        },
    );
    let mut svc = fast().build().unwrap().layer(upstream);
    // The caller's own context (an outer retry layer's) is continued: attempts count on from
    // it and its tried endpoints stay tried.
    let mut caller_ctx = AttemptContext::new();
    caller_ctx.record_endpoint(EndpointId(1));
    for _ in 0..4 {
        caller_ctx.advance();
    }
    let mut req = get("http://up/");
    req.extensions_mut().insert(Marker("kept"));
    req.extensions_mut().insert(caller_ctx);
    let res = call(&mut svc, req).await.unwrap();
    assert_eq!(res.status(), 200);
    let marker = Some(Marker("kept"));
    let (e1, e9) = (EndpointId(1), EndpointId(9));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (5, marker.clone(), vec![e1]),
            (6, marker.clone(), vec![e1, e9]),
            (7, marker, vec![e1, e9])
        ]
    );
}

/// Counts `poll_ready` calls, to prove readiness is driven per attempt.
#[derive(Clone)]
struct CountReady<S> {
    inner: S,
    ready: Arc<AtomicUsize>,
}

impl<S: Service<R>, R> Service<R> for CountReady<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.ready.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn inner_service_is_driven_ready_for_every_attempt() {
    let (upstream, _log) = scripted([Step::Status(503), Step::Status(503)]);
    let ready = Arc::new(AtomicUsize::new(0));
    let mut svc = fast().build().unwrap().layer(CountReady {
        inner: upstream,
        ready: Arc::clone(&ready),
    });
    call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(ready.load(Ordering::SeqCst), 3);
}

/// A response body that says whether it was read to its end.
struct Tracked {
    data: Option<Bytes>,
    finished: Arc<AtomicUsize>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.data.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => {
                self.finished.fetch_add(1, Ordering::SeqCst);
                Poll::Ready(None)
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn discarded_response_bodies_are_drained() {
    let finished = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f, c) = (Arc::clone(&finished), Arc::clone(&calls));
    let upstream = tower::service_fn(
        move |_req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let body = Tracked {
                data: Some(Bytes::from_static(b"error page")),
                finished: Arc::clone(&f),
            };
            let status = if n < 2 { 503 } else { 200 };
            async move { Ok::<_, BoxError>(Response::builder().status(status).body(body).unwrap()) }
        },
    );
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        2,
        "both 503 bodies read to their end"
    );
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_and_retry_info() {
    let capture = test_support::metrics::Capture::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = fast().name("orders").max_attempts(4).build().unwrap();
        let (upstream, _log) = scripted([Step::Status(503), Step::Status(503), Step::Status(200)]);
        let mut svc = layer.clone().layer(upstream);
        let res = call(&mut svc, get("http://up/")).await.unwrap();
        assert_eq!(info(&res).attempts, 3);
        let (upstream, _log) = scripted([Step::Status(503); 4]);
        let mut svc = layer.clone().layer(upstream);
        let res = call(&mut svc, get("http://up/")).await.unwrap();
        assert_eq!((info(&res).attempts, info(&res).total_delay), (4, 30 * MS));
        let (upstream, _log) = scripted([Step::Status(503)]);
        let mut svc = layer.clone().layer(upstream);
        call(&mut svc, post("http://up/", "x")).await.unwrap();
        let (upstream, _log) = scripted([Step::Rejected(Duration::from_secs(1))]);
        let mut svc = layer.layer(upstream);
        call(&mut svc, post("http://up/", "x")).await.unwrap_err();
    });
    let snap = capture.snapshot();
    let requests = |outcome| {
        snap.counter(
            tower_retry_plus::metrics::REQUESTS_TOTAL,
            &[("name", "orders"), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("success"), Some(1));
    assert_eq!(requests("exhausted"), Some(1));
    assert_eq!(requests("unsafe_method"), Some(1));
    assert_eq!(requests("budget_exhausted"), Some(0));
    assert_eq!(requests("rejected"), Some(1));
    assert_eq!(
        snap.counter(
            tower_retry_plus::metrics::ATTEMPTS_TOTAL,
            &[("name", "orders")]
        ),
        Some(3 + 4 + 1 + 1)
    );
    assert_eq!(
        snap.histogram_count(
            tower_retry_plus::metrics::BACKOFF_SECONDS,
            &[("name", "orders")]
        ),
        2 + 3
    );
    assert!(
        snap.histogram(
            tower_retry_plus::metrics::BACKOFF_SECONDS,
            &[("name", "orders")]
        )
        .iter()
        .all(|s| (*s - 0.01).abs() < 1e-9)
    );
}

#[test]
fn retry_service_is_clone_send_sync_and_its_future_is_send() {
    fn assert_bounds<T: Clone + Send + Sync + 'static>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let (upstream, _log) = scripted::<http_body_util::Full<Bytes>>([]);
    let mut svc = RetryLayer::default().layer(upstream);
    assert_bounds(&svc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let fut = svc.call(get("http://up/"));
    assert_send(&fut);
}

#[tokio::test(start_paused = true)]
async fn huge_durations_mean_no_limit_rather_than_a_panic() {
    // `Duration::MAX` as "no limit in practice" must not overflow the clock arithmetic.
    let (upstream, log) = scripted([Step::Status(503)]);
    let mut svc = fast()
        .deadline(Duration::MAX)
        .attempt_timeout(Duration::from_secs(u64::MAX / 2))
        .build()
        .unwrap()
        .layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!((res.status().as_u16(), log.len()), (200, 2));

    // a huge backoff is capped by the deadline: the layer returns instead of sleeping forever
    let (upstream, log) = scripted([Step::Status(503)]);
    let mut svc = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::MAX))
        .jitter(Jitter::None)
        .no_budget()
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!((res.status().as_u16(), log.len()), (503, 1));
    assert_eq!(info(&res).outcome, RetryOutcome::Deadline);
}

/// A response body of endless empty data frames (ends after a million, so a spinning drain
/// shows up as a failed assertion rather than a hung test).
struct EmptyFrames {
    polls: Arc<AtomicUsize>,
}

impl Body for EmptyFrames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.polls.fetch_add(1, Ordering::SeqCst) >= 1_000_000 {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::new()))))
    }
}

#[tokio::test(start_paused = true)]
async fn draining_endless_empty_frames_is_bounded() {
    let polls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (p, c) = (Arc::clone(&polls), Arc::clone(&calls));
    let upstream = tower::service_fn(
        move |_req: Request<ReplayBody<http_body_util::Full<Bytes>>>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let status = if n == 0 { 503 } else { 200 };
            let body = EmptyFrames {
                polls: Arc::clone(&p),
            };
            async move { Ok::<_, BoxError>(Response::builder().status(status).body(body).unwrap()) }
        },
    );
    let mut svc = fast().build().unwrap().layer(upstream);
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 200);
    let polls = polls.load(Ordering::SeqCst);
    assert!(polls <= 70_000, "the drain spun over {polls} empty frames");
}

/// Only a key a server can use makes a non-idempotent request retryable: an empty or malformed
/// `Idempotency-Key` is not a reason to send a POST twice.
#[tokio::test(start_paused = true)]
async fn an_invalid_idempotency_key_does_not_make_a_post_retryable() {
    for value in ["", "\"unterminated", "two words"] {
        assert!(IdempotencyKey::parse_str(value).is_err(), "{value:?}");
        let (upstream, log) = scripted([Step::Status(503), Step::Status(503)]);
        let mut svc = fast().build().unwrap().layer(upstream);
        let mut req = post("http://up/pay", "{}");
        req.headers_mut()
            .insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static(value));
        let res = call(&mut svc, req).await.unwrap();
        assert_eq!(res.status(), 503, "key {value:?}");
        assert_eq!(log.len(), 1, "key {value:?}: sent once");
        assert_eq!(info(&res).outcome, RetryOutcome::UnsafeMethod);
    }
    // With key stamping on, a caller's invalid key is kept, not replaced, and not trusted.
    let (upstream, log) = scripted([Step::Status(503), Step::Status(503)]);
    let mut svc = fast()
        .idempotency_key(true)
        .build()
        .unwrap()
        .layer(upstream);
    let mut req = post("http://up/pay", "{}");
    req.headers_mut()
        .insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static(""));
    assert_eq!(call(&mut svc, req).await.unwrap().status(), 503);
    assert_eq!(log.len(), 1);
    assert_eq!(log.all()[0].headers[IDEMPOTENCY_KEY], "");
}

/// With no delay between attempts, the future goes back to the runtime between them: an inner
/// service that fails at once does not hold the worker thread for every attempt.
#[tokio::test(flavor = "current_thread")]
async fn zero_delay_retries_yield_between_attempts() {
    let (upstream, log) = scripted([Step::Status(503); 50]);
    let mut svc = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::ZERO))
        .no_budget()
        .max_attempts(40)
        .build()
        .unwrap()
        .layer(upstream);
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }
    });
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    ticker.abort();
    assert_eq!(res.status(), 503);
    assert_eq!(log.len(), 40);
    assert!(
        ticks.load(Ordering::SeqCst) >= 30,
        "other tasks ran between attempts: {}",
        ticks.load(Ordering::SeqCst)
    );
}

/// A sleep that would end less than a timer tick before the deadline is not taken: the two
/// timers could fire together and turn the last response into `DeadlineExceeded`.
#[tokio::test(start_paused = true)]
async fn a_sleep_ending_within_a_tick_of_the_deadline_is_not_taken() {
    let (upstream, log) = scripted([Step::Status(503), Step::Status(503)]);
    let mut svc = fast()
        .backoff(Backoff::constant(Duration::from_micros(999_500)))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(upstream);
    let start = Instant::now();
    let res = call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(res.status(), 503, "the last response, not a deadline error");
    assert_eq!(log.len(), 1);
    assert_eq!(info(&res).outcome, RetryOutcome::Deadline);
    assert!(
        start.elapsed() < Duration::from_millis(1),
        "returned at once"
    );
}

/// A client that goes on sending an abandoned attempt's body (hyper writes it from the
/// connection task even after an early response) no longer spoils the retry: once the layer
/// decides to retry, that body stops, and the next attempt sends the whole body. Before, the
/// old attempt read on while the retry slept, pushed the body past the replay limit and the
/// request ended in `BodyNotReplayable` instead of the retry.
#[tokio::test(start_paused = true)]
async fn an_abandoned_attempt_still_sending_its_body_does_not_spoil_the_retry() {
    type Body = ReplayBody<support::Chunked>;
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let upstream = tower::service_fn({
        let (received, attempts) = (Arc::clone(&received), Arc::clone(&attempts));
        move |req: Request<Body>| {
            let (received, attempt) = (
                Arc::clone(&received),
                attempts.fetch_add(1, Ordering::SeqCst),
            );
            async move {
                let mut body = req.into_body();
                if attempt == 0 {
                    // Read a frame, answer 503 early, and keep sending the rest in the
                    // background, as a connection task would.
                    let _ = http_body_util::BodyExt::frame(&mut body).await;
                    tokio::spawn(async move {
                        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                            if frame.is_err() {
                                break;
                            }
                        }
                    });
                    return Ok::<_, BoxError>(
                        Response::builder()
                            .status(503)
                            .body(support::empty())
                            .unwrap(),
                    );
                }
                let bytes = http_body_util::BodyExt::collect(body).await?.to_bytes();
                received.lock().unwrap().push(bytes);
                Ok(Response::new(support::empty()))
            }
        }
    });
    let mut svc = fast().max_replay_bytes(8).build().unwrap().layer(upstream);
    let req = Request::put("http://up/blob")
        .body(chunked(&["1234", "5678", "9abc"]))
        .unwrap();
    let res = call(&mut svc, req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(*received.lock().unwrap(), ["123456789abc"]);
}
