//! Health: active probes with hysteresis, passive ejection, all-down policies, events,
//! metrics, runtime membership, probe task lifetime. Paused clock throughout.

mod common;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use common::{Mock, get, paused_runtime, send, sleep_ms, who};
use futures_util::StreamExt;
use http::Response;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_failover::{
    AllDown, Backoff, Cause, Endpoint, EndpointStatus, Failover, HealthEvent, HttpProbe,
    InitialState, Jitter, ProbeOutcome, error::NoHealthyEndpoint, metrics, probe_fn,
};
use tower_fault::{BoxError, Classify, HttpClassifier, RetryAfterHint};

type F = Failover<Mock>;

fn ep(m: &Mock) -> Endpoint<Mock> {
    m.endpoint()
}

fn status(f: &F, name: &str) -> EndpointStatus {
    f.handle().endpoint(name).unwrap().status
}

/// Primary + standby, HTTP probe on `/healthz` through the same mock client, 1 s interval,
/// no jitter, thresholds (healthy 2, unhealthy 3).
fn probed(p: &Mock, s: &Mock) -> F {
    Failover::builder()
        .tier([ep(p)])
        .tier([ep(s)])
        .probe(HttpProbe::shallow(p.clone(), "/healthz").request_body())
        .probe_interval(Duration::from_secs(1))
        .probe_jitter(Duration::ZERO)
        .thresholds(2, 3)
        .no_passive_ejection()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn probes_detect_within_threshold_times_interval_and_fail_back() {
    // The probe goes through the client of `p` but to each endpoint's URI: route by host.
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .probe(probe_fn({
            let (p, s) = (p.clone(), s.clone());
            move |info| {
                let m = if &*info.name == "p" {
                    p.clone()
                } else {
                    s.clone()
                };
                async move {
                    m.oneshot(get("/healthz"))
                        .await
                        .map_or(ProbeOutcome::unhealthy("error"), |r| {
                            if r.status().is_success() {
                                ProbeOutcome::Healthy
                            } else {
                                ProbeOutcome::unhealthy(r.status().to_string())
                            }
                        })
                }
            }
        }))
        .probe_interval(Duration::from_secs(1))
        .probe_jitter(Duration::ZERO)
        .thresholds(2, 3)
        .build()
        .unwrap();
    sleep_ms(500).await; // first probes at t=0 passed
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "p");
    p.set_health(503); // probes at t=1, 2, 3 fail
    let down_at = Instant::now();
    sleep_ms(2000).await; // t=2.5: two failures, still up (hysteresis)
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "p");
    sleep_ms(1000).await; // t=3.5: third failure
    assert_eq!(status(&f, "p"), EndpointStatus::Unhealthy);
    assert!(
        down_at.elapsed() <= Duration::from_secs(3),
        "detected within unhealthy_threshold × interval"
    );
    assert_eq!(
        who(&send(&mut f, get("/")).await.unwrap()),
        "s",
        "fails over to the standby"
    );
    p.set_health(200); // probes at t=4, 5 pass
    sleep_ms(1000).await; // t=4.5: one pass, not yet back
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "s");
    sleep_ms(1000).await; // t=5.5: two passes
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    assert_eq!(
        who(&send(&mut f, get("/")).await.unwrap()),
        "p",
        "fails back to the primary"
    );
}

#[tokio::test(start_paused = true)]
async fn http_probe_goes_through_the_shared_client_to_each_endpoint() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let f = probed(&p, &s);
    sleep_ms(3500).await;
    // One client (p's mock) probed both endpoints, each at its own authority.
    assert_eq!(p.probes(), 8, "4 rounds × 2 endpoints at t=0,1,2,3");
    assert_eq!(s.probes(), 0);
    drop(f);
}

#[tokio::test(start_paused = true)]
async fn half_the_probes_lost_does_not_flap_but_would_without_hysteresis() {
    async fn transitions(healthy: u32, unhealthy: u32) -> usize {
        let (p, s) = (Mock::new("p"), Mock::new("s"));
        let n = Arc::new(AtomicUsize::new(0));
        let f = Failover::builder()
            .tier([ep(&p)])
            .tier([ep(&s)])
            .probe(probe_fn(move |_| {
                let i = n.fetch_add(1, Ordering::SeqCst);
                // Every endpoint loses every other probe (two endpoints probed per round).
                async move {
                    if (i / 2).is_multiple_of(2) {
                        ProbeOutcome::Healthy
                    } else {
                        ProbeOutcome::unhealthy("lost")
                    }
                }
            }))
            .probe_interval(Duration::from_secs(1))
            .probe_jitter(Duration::ZERO)
            .thresholds(healthy, unhealthy)
            .build()
            .unwrap();
        let mut events = f.subscribe();
        sleep_ms(100_000).await;
        let mut changes = 0;
        while let Some(e) = events.try_recv() {
            if e.cause != Cause::Snapshot {
                changes += 1;
            }
        }
        changes
    }
    assert_eq!(
        transitions(2, 3).await,
        0,
        "hysteresis absorbs 50% probe loss"
    );
    assert!(
        transitions(1, 1).await > 50,
        "without hysteresis the same probes flap"
    );
}

#[tokio::test(start_paused = true)]
async fn probe_timeout_counts_as_failure() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .probe(probe_fn(|info| {
            let hang = &*info.name == "p";
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                ProbeOutcome::Healthy
            }
        }))
        .probe_interval(Duration::from_secs(1))
        .probe_timeout(Duration::from_millis(200))
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 2)
        .build()
        .unwrap();
    let mut events = f.subscribe();
    sleep_ms(1300).await; // timeouts at t=0.2 and t=1.4
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    sleep_ms(200).await;
    assert_eq!(status(&f, "p"), EndpointStatus::Unhealthy);
    assert_eq!(
        status(&f, "s"),
        EndpointStatus::Healthy,
        "a hung probe does not delay the others"
    );
    let down = events
        .by_ref()
        .filter(|e| std::future::ready(e.cause != Cause::Snapshot))
        .next()
        .await
        .unwrap();
    assert!(
        matches!(&down.cause, Cause::ProbeFailed(reason) if reason.contains("timed out")),
        "{down:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn probes_run_with_bounded_concurrency() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mocks: Vec<Mock> = ["a", "b", "c", "d", "e", "f"]
        .into_iter()
        .map(Mock::new)
        .collect();
    let probe = {
        let (running, peak) = (running.clone(), peak.clone());
        probe_fn(move |_| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                ProbeOutcome::Healthy
            }
        })
    };
    let f = Failover::builder()
        .tier(mocks.iter().map(ep))
        .probe(probe)
        .max_concurrent_probes(2)
        .probe_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    sleep_ms(5000).await;
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "at most 2 at once, and they do run in parallel"
    );
    drop(f);
}

#[tokio::test(start_paused = true)]
async fn probe_first_takes_no_traffic_until_a_probe_passes() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .probe(HttpProbe::shallow(p.clone(), "/healthz").request_body())
        .initial_state(InitialState::ProbeFirst)
        .probe_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(status(&f, "p"), EndpointStatus::Unknown);
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>());
    assert_eq!(p.hits() + s.hits(), 0);
    sleep_ms(10).await; // probe-first: the first probes run at once
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "p");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_service_stops_the_probes() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let f = probed(&p, &s);
    let clone = f.clone();
    sleep_ms(2500).await;
    let before = p.probes();
    assert!(before >= 4);
    drop(f);
    sleep_ms(3000).await;
    assert!(p.probes() > before, "a live clone keeps probing");
    drop(clone);
    tokio::task::yield_now().await;
    let after = p.probes();
    sleep_ms(60_000).await;
    assert_eq!(p.probes(), after, "no probe after the last clone is gone");
}

#[tokio::test(start_paused = true)]
async fn passive_ejection_is_immediate_and_returns_after_a_trial() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(3)
        .ejection_backoff(Backoff::exponential(
            Duration::from_secs(10),
            2.0,
            Duration::from_secs(100),
        ))
        .seed(1)
        .build()
        .unwrap();
    let mut events = f.subscribe();
    p.set_status(503);
    for _ in 0..3 {
        assert_eq!(send(&mut f, get("/")).await.unwrap().status(), 503);
    }
    assert_eq!(status(&f, "p"), EndpointStatus::Ejected);
    // The very next request goes to the standby: no waiting for a probe.
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "s");
    let snap = f.handle().endpoint("p").unwrap();
    assert_eq!(snap.ejections, 1);
    // Still ejected before the shortest possible ejection (base/2 = 5 s).
    sleep_ms(4900).await;
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "s");
    // After the ejection, one trial request goes to the primary; it fails: ejected for longer.
    sleep_ms(5200).await;
    let trial = send(&mut f, get("/")).await.unwrap();
    assert_eq!((who(&trial), trial.status().as_u16()), ("p", 503));
    assert_eq!(f.handle().endpoint("p").unwrap().ejections, 2);
    let hits = p.hits();
    sleep_ms(9000).await; // second ejection is 10..=20 s: p still out
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "s");
    assert_eq!(p.hits(), hits);
    // Primary fixed; after the second ejection the trial passes and traffic fails back.
    p.set_status(200);
    sleep_ms(11_000).await;
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "p");
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "p");
    let causes: Vec<Cause> = std::iter::from_fn(|| events.try_recv())
        .map(|e| e.cause)
        .collect();
    assert_eq!(
        causes,
        [
            Cause::Snapshot,
            Cause::Snapshot,
            Cause::ConsecutiveFailures(3),
            Cause::TrialFailed,
            Cause::TrialPassed
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_do_not_eject() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(2)
        .build()
        .unwrap();
    p.set_status(404);
    for _ in 0..20 {
        assert_eq!(send(&mut f, get("/")).await.unwrap().status(), 404);
    }
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    // Transient errors (refused connections) do, after a run that 20 quiet calls make
    // evidence (a short history allows some noise, so it takes a few more than 2).
    p.set_status(0);
    for _ in 0..10 {
        if status(&f, "p") == EndpointStatus::Ejected {
            break;
        }
        let err = send(&mut f, get("/")).await.unwrap_err();
        let failed = err.downcast_ref::<tower_fault::EndpointError>().unwrap();
        assert!(failed.inner().downcast_ref::<std::io::Error>().is_some());
    }
    assert_eq!(status(&f, "p"), EndpointStatus::Ejected);
}

#[tokio::test(start_paused = true)]
async fn all_down_fails_fast_with_a_typed_retryable_error() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(1)
        .max_ejected_fraction(1.0) // every endpoint may be ejected: all down is the point
        .ejection_backoff(Backoff::constant(Duration::from_secs(30)))
        .build()
        .unwrap();
    p.set_status(502);
    s.set_status(502);
    send(&mut f, get("/")).await.unwrap();
    send(&mut f, get("/")).await.unwrap();
    let start = Instant::now();
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "fast: no waiting");
    let typed = err
        .downcast_ref::<NoHealthyEndpoint>()
        .expect("typed error");
    let hint = typed.retry_after().unwrap();
    assert!(
        hint >= Duration::from_secs(15) && hint <= Duration::from_secs(30),
        "{hint:?}"
    );
    let class =
        Classify::<Response<String>, BoxError>::classify(&HttpClassifier::default(), Err(&err));
    assert!(
        class.is_transient() && !class.possibly_processed(),
        "{class:?}"
    );
    assert_eq!(p.hits() + s.hits(), 2, "nothing sent while all down");
}

/// Counts polls of a future.
struct Counted<Fut> {
    inner: Pin<Box<Fut>>,
    polls: Arc<AtomicUsize>,
}

impl<Fut: Future> Future for Counted<Fut> {
    type Output = Fut::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Fut::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_while_all_ejected_costs_nothing_and_wakes_on_recovery() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(1)
        .max_ejected_fraction(1.0) // every endpoint may be ejected: all down is the point
        .ejection_backoff(Backoff::constant(Duration::from_secs(20)))
        .when_all_down(AllDown::Wait(Duration::from_secs(60)))
        .seed(9)
        .build()
        .unwrap();
    p.set_status(503);
    s.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    send(&mut f, get("/")).await.unwrap();
    let handle = f.handle();
    assert!(
        handle
            .endpoints()
            .iter()
            .all(|e| e.status == EndpointStatus::Ejected)
    );
    let polls = Arc::new(AtomicUsize::new(0));
    let ready_polls = p.polls() + s.polls();
    let fut = Counted {
        inner: Box::pin(f.clone().oneshot(get("/"))),
        polls: polls.clone(),
    };
    p.set_status(200);
    s.set_status(200);
    let start = Instant::now();
    let task = tokio::spawn(fut);
    sleep_ms(9_000).await; // ejections last 10..=20 s: nothing can happen yet
    assert!(
        polls.load(Ordering::SeqCst) <= 2,
        "a waiting request is not polled: {}",
        polls.load(Ordering::SeqCst)
    );
    assert_eq!(
        p.polls() + s.polls(),
        ready_polls,
        "no endpoint is polled while all are ejected"
    );
    let res = task.await.unwrap().unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_secs(20),
        "woken when an ejection ended: {waited:?}"
    );
    assert_eq!(res.status(), 200, "the waiting request is the trial");
    assert!(
        polls.load(Ordering::SeqCst) <= 6,
        "polls: {}",
        polls.load(Ordering::SeqCst)
    );
    assert_eq!(
        status(&f, who(&res)),
        EndpointStatus::Healthy,
        "the passed trial brought it back"
    );
}

#[tokio::test(start_paused = true)]
async fn bounded_wait_is_woken_by_a_probe_recovery_and_ends_in_an_error_when_nothing_recovers() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    p.set_health(503);
    s.set_health(503);
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .probe(HttpProbe::shallow(p.clone(), "/healthz").request_body())
        .probe_interval(Duration::from_secs(1))
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 1)
        .when_all_down(AllDown::Wait(Duration::from_secs(5)))
        .build()
        .unwrap();
    sleep_ms(100).await;
    assert_eq!(status(&f, "p"), EndpointStatus::Unhealthy);
    // Nothing recovers: the wait ends at its bound with the typed error.
    let start = Instant::now();
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>());
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    // A recovery during the wait releases the request at once.
    let waiting = tokio::spawn(f.clone().oneshot(get("/")));
    sleep_ms(1500).await;
    p.set_health(200);
    let start = Instant::now();
    let res = waiting.await.unwrap().unwrap();
    assert!(
        start.elapsed() <= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(who(&res), "p");
}

#[tokio::test(start_paused = true)]
async fn server_mode_answers_503_problem() {
    let p = Mock::new("p");
    p.set_status(503);
    let f = Failover::builder()
        .tier([ep(&p)])
        .eject_after(1)
        .ejection_backoff(Backoff::constant(Duration::from_secs(8)))
        .build()
        .unwrap();
    let mut server = f.server_mode();
    let upstream = server.ready().await.unwrap().call(get("/")).await.unwrap();
    assert_eq!(
        upstream.status(),
        503,
        "the upstream's own answer passes through"
    );
    let res = server.ready().await.unwrap().call(get("/")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let secs: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((4..=8).contains(&secs), "{secs}");
    use http_body_util::BodyExt;
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains(tower_failover::NO_HEALTHY_ENDPOINT_TYPE)
    );
}

#[tokio::test(start_paused = true)]
async fn runtime_add_and_remove_with_drain() {
    let (a, b, c) = (Mock::new("a"), Mock::new("b"), Mock::new("c"));
    let mut f = Failover::builder().tier([ep(&a)]).build().unwrap();
    let handle = f.handle();
    let mut events = handle.subscribe();
    let id = handle.add(0, ep(&b)).unwrap();
    assert!(
        handle
            .add(0, ep(&b))
            .unwrap_err()
            .message()
            .contains("already in use")
    );
    assert!(
        handle
            .add(0, Endpoint::new("bad", "not a uri", c.clone()))
            .is_err()
    );
    handle.add(1, ep(&c)).unwrap();
    assert_eq!(handle.endpoint("b").unwrap().info.id, id);
    for _ in 0..50 {
        send(&mut f, get("/")).await.unwrap();
    }
    assert!(
        a.hits() > 10 && b.hits() > 10 && c.hits() == 0,
        "{} {} {}",
        a.hits(),
        b.hits(),
        c.hits()
    );
    // Hold a request on `a`, then remove `a`: the drain waits for it.
    a.0.hang.store(true, Ordering::SeqCst);
    let mut held = None;
    while held.is_none() {
        let fut = f.ready().await.unwrap().call(get("/"));
        if handle.endpoint("a").unwrap().in_flight == 1 {
            held = Some(fut);
        }
    }
    let drain = handle.remove("a").unwrap();
    assert!(handle.remove("a").is_none());
    let mut drain = tokio_test::task::spawn(drain);
    assert!(
        drain.poll().is_pending(),
        "one request still in flight on `a`"
    );
    let hits = a.hits();
    for _ in 0..20 {
        assert_ne!(who(&send(&mut f, get("/")).await.unwrap()), "a");
    }
    assert_eq!(a.hits(), hits);
    drop(held);
    assert!(drain.is_woken());
    assert!(drain.poll().is_ready());
    // Remove `b` too: the standby tier takes over.
    drop(handle.remove("b").unwrap());
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "c");
    let seen: Vec<(String, Cause)> = std::iter::from_fn(|| events.try_recv())
        .map(|e: HealthEvent| (e.endpoint.name.to_string(), e.cause))
        .collect();
    let expected = [
        ("a", Cause::Snapshot),
        ("b", Cause::Added),
        ("c", Cause::Added),
        ("a", Cause::Removed),
        ("b", Cause::Removed),
    ];
    assert_eq!(seen, expected.map(|(n, c)| (n.to_owned(), c)));
}

/// A subscriber that stops reading holds a bounded number of events (an unbounded queue grew
/// with every health change for as long as the set lived): it keeps its snapshot and the oldest
/// changes, misses the newest and counts them; a subscriber that reads misses nothing.
#[tokio::test(start_paused = true)]
async fn a_subscriber_that_stops_reading_holds_a_bounded_queue() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let f = Failover::builder().tier([ep(&a)]).build().unwrap();
    let handle = f.handle();
    let mut idle = handle.subscribe();
    let mut reader = handle.subscribe();
    let mut read = 0;
    const CHANGES: usize = 1_000;
    for _ in 0..CHANGES / 2 {
        handle.add(0, ep(&b)).unwrap();
        drop(handle.remove("b").unwrap());
        read += std::iter::from_fn(|| reader.try_recv()).count();
    }
    assert_eq!(read, 1 + CHANGES, "the snapshot and every change");
    assert_eq!(reader.missed(), 0);
    let held: Vec<HealthEvent> = std::iter::from_fn(|| idle.try_recv()).collect();
    let bound = tower_fault::events::DEFAULT_CAPACITY;
    assert_eq!(held.len(), 1 + bound, "the snapshot and the bound");
    assert_eq!(held[0].cause, Cause::Snapshot);
    assert_eq!(
        (held[1].cause.clone(), held[2].cause.clone()),
        (Cause::Added, Cause::Removed)
    );
    assert_eq!(idle.missed(), (CHANGES - bound) as u64);
}

#[test]
fn events_and_metrics() {
    let capture = test_support::metrics::Capture::start();
    let rt = paused_runtime();
    rt.block_on(async {
        let (p, s) = (Mock::new("p"), Mock::new("s"));
        let mut f = Failover::builder()
            .name("pay")
            .tier([ep(&p)])
            .tier([ep(&s)])
            .eject_after(2)
            .build()
            .unwrap();
        let mut events = f.subscribe();
        p.set_status(500);
        for _ in 0..5 {
            send(&mut f, get("/")).await.unwrap();
        }
        if cfg!(feature = "metrics") {
            let snap = capture.snapshot();
            let l = |e: &'static str| [("name", "pay"), ("endpoint", e)];
            assert_eq!(snap.counter(metrics::REQUESTS_TOTAL, &l("p")), Some(2));
            assert_eq!(snap.counter(metrics::REQUESTS_TOTAL, &l("s")), Some(3));
            assert_eq!(
                snap.counter(
                    metrics::EJECTIONS_TOTAL,
                    &[
                        ("name", "pay"),
                        ("endpoint", "p"),
                        ("cause", "consecutive_failures")
                    ]
                ),
                Some(1)
            );
            assert_eq!(snap.gauge(metrics::ENDPOINT_HEALTHY, &l("p")), Some(0.0));
            assert_eq!(snap.gauge(metrics::ENDPOINT_HEALTHY, &l("s")), Some(1.0));
            assert_eq!(
                snap.gauge(metrics::ACTIVE_TIER, &[("name", "pay")]),
                Some(1.0)
            );
        }
        let all: Vec<HealthEvent> = std::iter::from_fn(|| events.try_recv()).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[0].from, all[0].to, &all[0].cause),
            (
                EndpointStatus::Healthy,
                EndpointStatus::Healthy,
                &Cause::Snapshot
            )
        );
        let ejected = &all[2];
        assert_eq!(&*ejected.endpoint.name, "p");
        assert_eq!(
            (ejected.from, ejected.to, &ejected.cause),
            (
                EndpointStatus::Healthy,
                EndpointStatus::Ejected,
                &Cause::ConsecutiveFailures(2)
            )
        );
    });
}

#[test]
fn bad_configuration_is_a_build_error() {
    let m = Mock::new("m");
    let e = |name: &'static str| Endpoint::new(name, "http://h:1", m.clone());
    let cases: Vec<(tower_failover::FailoverBuilder<Endpoint<Mock>>, &str)> = vec![
        (Failover::builder(), "no tiers"),
        (
            Failover::builder().tier([e("a")]).tier([]),
            "tier 1 has no endpoints",
        ),
        (
            Failover::builder().tier([e("a")]).tier([e("a")]),
            "used twice",
        ),
        (
            Failover::builder().tier([Endpoint::new("r", "/relative", m.clone())]),
            "scheme and an authority",
        ),
        (
            Failover::builder().tier([e("a")]).spill(0.5),
            "overprovisioning",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .ejection_backoff(Backoff::exponential(
                    Duration::from_secs(60),
                    2.0,
                    Duration::from_secs(1),
                )),
            "larger than its max delay",
        ),
        (
            // Passive ejection off: a failed readiness still ejects, for these times.
            Failover::builder()
                .tier([e("a")])
                .no_passive_ejection()
                .ejection_backoff(Backoff::exponential(
                    Duration::from_secs(60),
                    2.0,
                    Duration::from_secs(1),
                )),
            "larger than its max delay",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .ejection_decay(Duration::ZERO),
            "`ejection_decay` period must be non-zero",
        ),
        (
            Failover::builder().tier([e("a")]).eject_after(0),
            "`eject_after` must be at least 1 (no_passive_ejection()",
        ),
        (
            Failover::builder().name("").tier([e("a")]),
            "`name` must not be empty",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .ejection_backoff(Backoff::constant(Duration::ZERO)),
            "`ejection_backoff` base delay must be non-zero",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .ejection_jitter(Jitter::Proportional(2.0)),
            "`ejection_jitter` proportional jitter must be in [0, 1]",
        ),
        (
            Failover::builder().tier([e("a")]).max_ejected_fraction(0.0),
            "`max_ejected_fraction` must be in (0, 1]",
        ),
        (
            Failover::builder().tier([e("a")]).max_ejected_fraction(1.5),
            "`max_ejected_fraction` must be in (0, 1]",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .max_ejected_fraction(f64::NAN),
            "`max_ejected_fraction` must be in (0, 1]",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .when_all_down(AllDown::Wait(Duration::ZERO)),
            "non-zero",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .initial_state(InitialState::ProbeFirst),
            "needs a probe",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .probe(probe_fn(|_| async { ProbeOutcome::Healthy }))
                .thresholds(0, 1),
            "at least 1",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .probe(probe_fn(|_| async { ProbeOutcome::Healthy }))
                .probe_interval(Duration::ZERO),
            "non-zero",
        ),
        (
            Failover::builder()
                .tier([e("a")])
                .probe(probe_fn(|_| async { ProbeOutcome::Healthy })),
            "inside a tokio runtime",
        ),
    ];
    for (builder, needle) in cases {
        let err = builder.build().unwrap_err();
        assert!(
            err.to_string().contains(needle),
            "`{err}` should mention `{needle}`"
        );
    }
    // The handle holds names to the same rule as the builder.
    let f = Failover::builder().tier([e("a")]).build().unwrap();
    let err = f.handle().add(0, e("")).unwrap_err();
    assert!(err.to_string().contains("empty name"), "{err}");
}

/// A probe path written without its leading slash is the same path, not `GET healthz`.
#[tokio::test(start_paused = true)]
async fn a_probe_path_without_a_leading_slash_is_absolute() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .probe(HttpProbe::shallow(p.clone(), "healthz").request_body())
        .probe_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let info = f.handle().endpoint("p").unwrap().info;
    assert_eq!(info.uri_for("healthz").path(), "/healthz");
    assert_eq!(
        info.uri_for("/healthz?deep=1").path_and_query().unwrap(),
        "/healthz?deep=1"
    );
    sleep_ms(3_000).await;
    assert!(p.probes() > 0, "the probe reached /healthz");
}

/// Ejection times follow the configured backoff and jitter: a decorrelated curve grows from
/// the previous ejection of the streak, and without decay a long healthy period forgives
/// nothing.
#[tokio::test(start_paused = true)]
async fn ejection_times_follow_the_configured_backoff_and_jitter() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let build = |backoff: Backoff| {
        Failover::builder()
            .tier([ep(&p)])
            .tier([ep(&s)])
            .eject_after(1)
            .ejection_backoff(backoff)
            .ejection_jitter(Jitter::None)
            .no_ejection_decay()
            .build()
            .unwrap()
    };
    let ejected_for = |f: &F| f.handle().endpoint("p").unwrap().ejected_for;
    // Ejects `p`, then returns it through a passing trial once the ejection is over.
    async fn eject_and_recover(f: &mut F, p: &Mock) -> Duration {
        p.set_status(503);
        send(f, get("/")).await.unwrap();
        let out = f
            .handle()
            .endpoint("p")
            .unwrap()
            .ejected_for
            .expect("ejected");
        p.set_status(200);
        tokio::time::sleep(out).await;
        assert_eq!(who(&send(f, get("/")).await.unwrap()), "p", "the trial");
        out
    }
    let secs = Duration::from_secs;
    let mut f = build(Backoff::decorrelated(secs(10), secs(100)));
    let mut outs = Vec::new();
    for _ in 0..3 {
        outs.push(eject_and_recover(&mut f, &p).await);
    }
    assert_eq!(
        outs,
        [secs(30), secs(90), secs(100)],
        "three times the previous"
    );
    assert_eq!(ejected_for(&f), None);

    let mut f = build(Backoff::exponential(secs(10), 2.0, secs(1_000)));
    assert_eq!(eject_and_recover(&mut f, &p).await, secs(10));
    tokio::time::sleep(secs(3_600)).await;
    assert_eq!(
        eject_and_recover(&mut f, &p).await,
        secs(20),
        "an hour healthy forgives nothing without decay"
    );
}

#[tokio::test(start_paused = true)]
async fn ejection_time_grows_exponentially_then_decays_while_stable() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(1)
        .ejection_backoff(Backoff::exponential(
            Duration::from_secs(10),
            2.0,
            Duration::from_secs(100),
        ))
        .ejection_decay(Duration::from_secs(30))
        .seed(4)
        .build()
        .unwrap();
    let ejected_for = |f: &F| {
        f.handle()
            .endpoint("p")
            .unwrap()
            .ejected_for
            .expect("ejected")
    };
    let secs = |lo: u64, hi: u64| Duration::from_secs(lo)..=Duration::from_secs(hi);
    // Returns p to service through a passing trial once its ejection is over.
    async fn recover(f: &mut F, p: &Mock, wait: Duration) {
        p.set_status(200);
        tokio::time::sleep(wait).await;
        assert_eq!(who(&send(f, get("/")).await.unwrap()), "p");
        assert_eq!(status(f, "p"), EndpointStatus::Healthy);
    }
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    assert!(
        secs(5, 10).contains(&ejected_for(&f)),
        "1st: {:?}",
        ejected_for(&f)
    );
    recover(&mut f, &p, Duration::from_secs(10)).await;
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    assert!(
        secs(10, 20).contains(&ejected_for(&f)),
        "2nd in a row doubles: {:?}",
        ejected_for(&f)
    );
    recover(&mut f, &p, Duration::from_secs(20)).await;
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    assert!(
        secs(20, 40).contains(&ejected_for(&f)),
        "3rd in a row doubles again: {:?}",
        ejected_for(&f)
    );
    recover(&mut f, &p, Duration::from_secs(40)).await;
    // Stable for two decay periods: the streak drops from 3 to 1, so the next is 2nd-sized.
    tokio::time::sleep(Duration::from_secs(65)).await;
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    assert!(
        secs(10, 20).contains(&ejected_for(&f)),
        "decayed: {:?}",
        ejected_for(&f)
    );
}

#[tokio::test(start_paused = true)]
async fn unhealthy_endpoints_are_probed_at_their_own_interval() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .probe(HttpProbe::shallow(p.clone(), "/healthz").request_body())
        .probe_interval(Duration::from_secs(1))
        .unhealthy_interval(Duration::from_secs(5))
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 1)
        .build()
        .unwrap();
    p.set_health(503); // both endpoints share p's health route: both go down at t=0
    sleep_ms(100).await;
    assert_eq!(status(&f, "p"), EndpointStatus::Unhealthy);
    let before = p.probes();
    sleep_ms(20_000).await; // probes at t=5, 10, 15, 20 for each endpoint
    assert_eq!(p.probes() - before, 8);
    p.set_health(200);
    sleep_ms(5_000).await; // back at t=25, then every second
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    let before = p.probes();
    sleep_ms(4_000).await;
    assert_eq!(p.probes() - before, 8);
}

#[tokio::test(start_paused = true)]
async fn duration_max_settings_mean_forever_and_never_panic() {
    // Ejection "forever": the request that triggers it must not panic computing its end.
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(1)
        .max_ejected_fraction(1.0) // every endpoint may be ejected: all down is the point
        .ejection_backoff(Backoff::constant(Duration::MAX))
        .when_all_down(AllDown::Wait(Duration::MAX))
        .build()
        .unwrap();
    p.set_status(503);
    assert_eq!(send(&mut f, get("/")).await.unwrap().status(), 503);
    assert_eq!(status(&f, "p"), EndpointStatus::Ejected);
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "s");
    // Waiting "forever" for a recovery: still pending after a year, no panic.
    s.set_status(503);
    // One quiet call is little evidence: the run that ejects the standby is a long one.
    for _ in 0..100 {
        if status(&f, "s") == EndpointStatus::Ejected {
            break;
        }
        assert_eq!(send(&mut f, get("/")).await.unwrap().status(), 503);
    }
    assert_eq!(status(&f, "s"), EndpointStatus::Ejected);
    let waiting = tokio::spawn(f.clone().oneshot(get("/")));
    sleep_ms(365 * 24 * 3600 * 1000).await;
    assert!(!waiting.is_finished());
    waiting.abort();

    // An unhealthy endpoint probed "never again" must not kill the probe task for the others.
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let probe = {
        let (a, b) = (a.clone(), b.clone());
        probe_fn(move |e| {
            let m = if &*e.name == "a" {
                a.clone()
            } else {
                b.clone()
            };
            m.0.probes.fetch_add(1, Ordering::SeqCst);
            async move {
                if m.0.health.load(Ordering::SeqCst) == 200 {
                    ProbeOutcome::Healthy
                } else {
                    ProbeOutcome::unhealthy("down")
                }
            }
        })
    };
    a.set_health(503);
    let g = Failover::builder()
        .tier([ep(&a), ep(&b)])
        .probe(probe)
        .probe_interval(Duration::from_secs(1))
        .unhealthy_interval(Duration::MAX)
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 1)
        .build()
        .unwrap();
    sleep_ms(10_500).await;
    assert_eq!(status(&g, "a"), EndpointStatus::Unhealthy);
    assert_eq!(
        a.probes(),
        1,
        "an unhealthy endpoint waits its (endless) interval"
    );
    assert_eq!(b.probes(), 11, "the others are still probed every second");
}

#[tokio::test(start_paused = true)]
async fn add_past_the_last_tier_appends_one_and_removal_after_poll_ready_is_honoured() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let mut f = Failover::builder().tier([ep(&a)]).build().unwrap();
    let handle = f.handle();
    // A tier index far past the end (even usize::MAX) is "a new tier after the last one".
    handle.add(usize::MAX, ep(&b)).unwrap();
    assert_eq!(handle.endpoint("b").unwrap().info.tier, 1);
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "a");
    // `a` was polled ready, then removed before the call: the call must not reach it.
    f.ready().await.unwrap();
    let drain = handle.remove("a").unwrap();
    let res = f.call(get("/")).await.unwrap();
    assert_eq!(who(&res), "b");
    assert_eq!(a.hits(), 1);
    tokio::time::timeout(Duration::from_secs(1), drain)
        .await
        .expect("nothing in flight on `a`");
}

/// A request waiting while all are ejected, that already tried every endpoint, is not woken by
/// the end of those endpoints' ejections (it cannot be their trial): it sleeps to its deadline
/// instead of spinning from the end of the ejections on. Real clock: a busy loop never lets a
/// paused clock advance.
#[tokio::test]
async fn a_waiting_request_that_tried_every_endpoint_does_not_spin() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(1)
        .max_ejected_fraction(1.0) // every endpoint may be ejected: all down is the point
        .ejection_backoff(Backoff::constant(Duration::from_millis(50)))
        .when_all_down(AllDown::Wait(Duration::from_millis(500)))
        .build()
        .unwrap();
    p.set_status(503);
    s.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    send(&mut f, get("/")).await.unwrap();
    let handle = f.handle();
    let mut ctx = tower_fault::AttemptContext::default();
    for name in ["p", "s"] {
        ctx.record_endpoint(handle.endpoint(name).unwrap().info.id);
    }
    let mut req = get("/");
    req.extensions_mut().insert(ctx);
    let polls = Arc::new(AtomicUsize::new(0));
    let fut = Counted {
        inner: Box::pin(f.clone().oneshot(req)),
        polls: polls.clone(),
    };
    let err = fut.await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
    assert!(
        polls.load(Ordering::SeqCst) <= 10,
        "polled {} times while waiting",
        polls.load(Ordering::SeqCst)
    );
}

/// The stable time since a recovery is forgiven once: an endpoint that recovered once and then
/// stays dead backs off to the maximum through its failed trials, instead of the same healthy
/// period being subtracted again at every trial (which settled it at the base time).
#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_backs_off_to_the_maximum_through_failed_trials() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .eject_after(1)
        .ejection_backoff(Backoff::exponential(
            Duration::from_secs(10),
            2.0,
            Duration::from_secs(100),
        ))
        .ejection_decay(Duration::from_secs(30))
        .seed(4)
        .build()
        .unwrap();
    let ejected_for = |f: &F| f.handle().endpoint("p").unwrap().ejected_for;
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap(); // 1st ejection: 5..=10 s
    p.set_status(200);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        who(&send(&mut f, get("/")).await.unwrap()),
        "p",
        "trial passed"
    );
    p.set_status(503);
    // From here p is dead for good: every ejection ends in a failed trial.
    let mut seen = Vec::new();
    for _ in 0..6 {
        send(&mut f, get("/")).await.unwrap();
        let d = ejected_for(&f).expect("ejected");
        seen.push(d);
        tokio::time::sleep(d).await;
    }
    assert!(
        seen[3..].iter().all(|d| *d >= Duration::from_secs(50)),
        "backs off to the maximum (50..=100 s jittered) and stays there: {seen:?}"
    );
}

/// Endpoints added from two threads at once leave the published generation with the newest
/// snapshot, so every clone sees every endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_are_seen_by_every_clone() {
    let mocks: Vec<Mock> = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        .into_iter()
        .map(Mock::new)
        .collect();
    for round in 0..20 {
        let mut f = Failover::builder()
            .tier([ep(&mocks[0])])
            .balance(tower_failover::Balance::RoundRobin)
            .build()
            .unwrap();
        let handle = f.handle();
        let start = Arc::new(std::sync::Barrier::new(2));
        let adders: Vec<_> = mocks[1..]
            .chunks(4)
            .map(|chunk| {
                let (handle, start) = (handle.clone(), start.clone());
                let chunk: Vec<Mock> = chunk.to_vec();
                std::thread::spawn(move || {
                    start.wait();
                    for m in &chunk {
                        handle.add(0, ep(m)).unwrap();
                        // A clone polled between the adds loads an intermediate snapshot.
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            f.ready().await.unwrap();
            tokio::task::yield_now().await;
        }
        for adder in adders {
            adder.join().unwrap();
        }
        let before: Vec<usize> = mocks.iter().map(Mock::hits).collect();
        for _ in 0..(2 * mocks.len()) {
            send(&mut f, get("/")).await.unwrap();
        }
        for (m, before) in mocks.iter().zip(before) {
            assert!(m.hits() > before, "round {round}: {} got nothing", m.0.name);
        }
    }
}

/// A trial that started for one ejection and finishes during a later one (a probe brought the
/// endpoint back meanwhile, live failures ejected it again) says nothing about the later one.
#[tokio::test(start_paused = true)]
async fn a_late_trial_does_not_end_a_later_ejection() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let hour = Duration::from_secs(3600);
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .tier([ep(&s)])
        .probe(HttpProbe::shallow(p.clone(), "/healthz").request_body())
        .probe_interval(hour)
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 1)
        .eject_after(1)
        .ejection_backoff(Backoff::constant(Duration::from_secs(10)))
        .build()
        .unwrap();
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    assert_eq!(status(&f, "p"), EndpointStatus::Ejected);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The trial is slow: it answers (200) after 1.5 h.
    p.set_status(200);
    p.0.delay_ms.store(5_400_000, Ordering::SeqCst);
    let trial = tokio::spawn(f.clone().oneshot(get("/")));
    sleep_ms(10).await;
    assert_eq!(
        f.handle().endpoint("p").unwrap().in_flight,
        1,
        "the trial is in flight"
    );
    // The hourly probe passes: p is healthy again; then a live failure ejects it again.
    tokio::time::sleep(hour).await;
    assert_eq!(status(&f, "p"), EndpointStatus::Healthy);
    p.0.delay_ms.store(0, Ordering::SeqCst);
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    assert_eq!(status(&f, "p"), EndpointStatus::Ejected);
    // The old trial answers 200 now: the new ejection stands (the next probe or trial ends it).
    let res = trial.await.unwrap().unwrap();
    assert_eq!((who(&res), res.status().as_u16()), ("p", 200));
    assert_eq!(status(&f, "p"), EndpointStatus::Ejected);
}

/// A trial cancelled before it answered frees the trial slot at once for a request waiting for
/// an endpoint (not at that request's deadline).
#[tokio::test(start_paused = true)]
async fn a_cancelled_trial_wakes_a_waiting_request() {
    let p = Mock::new("p");
    let mut f = Failover::builder()
        .tier([ep(&p)])
        .eject_after(1)
        .ejection_backoff(Backoff::constant(Duration::from_secs(10)))
        .when_all_down(AllDown::Wait(Duration::from_secs(60)))
        .build()
        .unwrap();
    p.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    p.set_status(200);
    p.0.hang.store(true, Ordering::SeqCst);
    let trial = tokio::spawn(f.clone().oneshot(get("/")));
    sleep_ms(10).await;
    assert_eq!(
        f.handle().endpoint("p").unwrap().in_flight,
        1,
        "the trial is in flight"
    );
    p.0.hang.store(false, Ordering::SeqCst);
    let waiting = tokio::spawn(f.clone().oneshot(get("/")));
    sleep_ms(1_000).await;
    assert!(!waiting.is_finished(), "no endpoint to send it to yet");
    let cancelled_at = Instant::now();
    trial.abort();
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), 200, "the waiting request became the trial");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "woken by the cancellation, not its deadline: {:?}",
        cancelled_at.elapsed()
    );
}
