//! An endpoint's own circuit breaker steers traffic: while it refuses requests and says for how
//! long, failover holds the endpoint out of rotation (no failure counted, no ejection backoff
//! grown) and brings it back like an ejected endpoint. Real `tower_breaker` breakers, one per
//! endpoint, on the paused clock.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::{Mock, get, paused_runtime, send, sleep_ms, who};
use http::Response;
use tower_breaker::{Backoff, Breaker, CircuitBreaker, Clock, Jitter, State};
use tower_failover::{
    Cause, Endpoint, EndpointStatus, Failover, FailoverBuilder, HealthEvent, ProbeOutcome,
    error::NoHealthyEndpoint, metrics, probe_fn,
};
use tower_fault::{BoxError, Classify, EndpointError, HttpClassifier};

type Guarded = CircuitBreaker<Mock>;
type F = Failover<Guarded>;

/// A breaker that opens after 3 failures in a row for exactly `open` (no jitter).
fn breaker(name: &str, open: Duration) -> Breaker {
    Breaker::builder()
        .clock(Clock::Tokio)
        .name(name)
        .no_failure_rate()
        .consecutive_failures(3)
        .open_backoff(Backoff::exponential(open, 2.0, open))
        .open_jitter(Jitter::None)
        .build()
        .unwrap()
}

fn ep(m: &Mock, b: &Breaker) -> Endpoint<Guarded> {
    Endpoint::new(
        m.0.name,
        m.base(),
        CircuitBreaker::new(m.clone(), b.clone(), HttpClassifier::default()),
    )
}

fn snapshot(f: &F, name: &str) -> tower_failover::EndpointSnapshot {
    f.handle().endpoint(name).unwrap()
}

/// The error of a request the endpoint's own breaker refused.
fn assert_refused_by(err: &BoxError, endpoint: &str) {
    let wrapped = err
        .downcast_ref::<EndpointError>()
        .expect("an endpoint's error");
    assert_eq!(wrapped.name(), endpoint);
    let class = HttpClassifier::default().classify(Err::<&Response<String>, _>(err));
    assert!(class.is_local_rejection(), "{class:?}");
}

fn primary_and_standby(
    p: &Mock,
    bp: &Breaker,
    s: &Mock,
    bs: &Breaker,
) -> FailoverBuilder<Endpoint<Guarded>> {
    Failover::builder()
        .tier([ep(p, bp)])
        .tier([ep(s, bs)])
        .ejection_backoff(Backoff::exponential(
            Duration::from_secs(10),
            2.0,
            Duration::from_secs(300),
        ))
}

/// The defect this guards against: an endpoint whose breaker was open stayed in rotation, so
/// every request sent there was refused (and failed, or cost a retry) until the breaker closed.
#[test]
fn an_open_breaker_steers_traffic_to_the_standby_until_its_open_period_is_over() {
    let capture = test_support::metrics::Capture::start();
    let rt = paused_runtime();
    rt.block_on(async {
        let (p, s) = (Mock::new("p"), Mock::new("s"));
        let open = Duration::from_secs(5);
        let (bp, bs) = (breaker("p", open), breaker("s", open));
        let mut f = primary_and_standby(&p, &bp, &s, &bs)
            .name("h")
            .build()
            .unwrap();
        let mut events = f.subscribe();
        p.set_status(503);
        for _ in 0..3 {
            let res = send(&mut f, get("/")).await.unwrap();
            assert_eq!((who(&res), res.status().as_u16()), ("p", 503));
        }
        assert_eq!(bp.state(), State::Open);
        assert_eq!(snapshot(&f, "p").status, EndpointStatus::Healthy);
        // The request that meets the open breaker is refused, and tells failover for how long.
        let err = send(&mut f, get("/")).await.unwrap_err();
        assert_refused_by(&err, "p");
        let held = snapshot(&f, "p");
        assert_eq!(held.status, EndpointStatus::Ejected);
        assert!(held.held_out);
        assert_eq!(held.ejected_for, Some(open));
        // From now on the standby takes the traffic, without a retry.
        for _ in 0..10 {
            let res = send(&mut f, get("/")).await.unwrap();
            assert_eq!((who(&res), res.status().as_u16()), ("s", 200));
        }
        assert_eq!(p.hits(), 3, "nothing more reached the primary");
        // The primary recovers; once its breaker's open period is over, one trial goes there,
        // passes (the breaker, half-open, admits it), and traffic fails back.
        p.set_status(200);
        sleep_ms(4_900).await;
        let res = send(&mut f, get("/")).await.unwrap();
        assert_eq!(who(&res), "s", "still held out");
        sleep_ms(100).await;
        for _ in 0..5 {
            let res = send(&mut f, get("/")).await.unwrap();
            assert_eq!((who(&res), res.status().as_u16()), ("p", 200));
        }
        assert_eq!(bp.state(), State::Closed);
        assert_eq!(snapshot(&f, "p").status, EndpointStatus::Healthy);
        let all: Vec<HealthEvent> = std::iter::from_fn(|| events.try_recv())
            .filter(|e| &*e.endpoint.name == "p" && e.cause != Cause::Snapshot)
            .collect();
        let causes: Vec<_> = all
            .iter()
            .map(|e| (e.from, e.to, e.cause.clone()))
            .collect();
        assert_eq!(
            causes,
            [
                (
                    EndpointStatus::Healthy,
                    EndpointStatus::Ejected,
                    Cause::HeldOut(open)
                ),
                (
                    EndpointStatus::Ejected,
                    EndpointStatus::Healthy,
                    Cause::TrialPassed
                ),
            ]
        );
        if cfg!(feature = "metrics") {
            let snap = capture.snapshot();
            let ejections = |cause| {
                snap.counter(
                    metrics::EJECTIONS_TOTAL,
                    &[("name", "h"), ("endpoint", "p"), ("cause", cause)],
                )
            };
            assert_eq!(ejections("held_out"), Some(1));
            assert_eq!(ejections("consecutive_failures"), Some(0));
        }
        // The hold did not grow the ejection backoff: the next real ejection (the client's
        // connection pool breaks) is a first one, at most the base time.
        p.0.broken.store(true, Ordering::SeqCst);
        let _ = send(&mut f, get("/")).await;
        let ejected = snapshot(&f, "p");
        assert_eq!(ejected.status, EndpointStatus::Ejected);
        assert!(!ejected.held_out);
        assert!(
            ejected.ejected_for.unwrap() <= Duration::from_secs(10),
            "{:?}",
            ejected.ejected_for
        );
    });
}

#[tokio::test(start_paused = true)]
async fn when_every_endpoint_is_held_out_a_retry_sees_no_healthy_endpoint_and_the_earliest_return()
{
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let (bp, bs) = (
        breaker("p", Duration::from_secs(8)),
        breaker("s", Duration::from_secs(5)),
    );
    let mut f = primary_and_standby(&p, &bp, &s, &bs).build().unwrap();
    p.set_status(503);
    s.set_status(503);
    for _ in 0..3 {
        send(&mut f, get("/")).await.unwrap();
    }
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert_refused_by(&err, "p");
    for _ in 0..3 {
        let res = send(&mut f, get("/")).await.unwrap();
        assert_eq!(who(&res), "s");
    }
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert_refused_by(&err, "s");
    // Both out: the max-ejected guard does not hold back a breaker's verdict.
    for name in ["p", "s"] {
        assert!(snapshot(&f, name).held_out, "{name}");
    }
    sleep_ms(1_000).await;
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
    let class = HttpClassifier::default().classify(Err::<&Response<String>, _>(&err));
    assert!(class.is_local_rejection());
    assert_eq!(
        class.retry_after(),
        Some(Duration::from_secs(4)),
        "the standby's breaker half-opens first"
    );
    // Waiting that long finds the standby's trial.
    s.set_status(200);
    sleep_ms(4_000).await;
    let res = send(&mut f, get("/")).await.unwrap();
    assert_eq!((who(&res), res.status().as_u16()), ("s", 200));
}

/// A refusal without a hint (a breaker forced open) says nothing about when to come back: a
/// healthy endpoint stays in rotation. A trial it refuses keeps its endpoint out for the base
/// ejection time, so the next requests are not trials spent on refusals.
#[tokio::test(start_paused = true)]
async fn a_refusal_without_a_hint_holds_out_only_a_trial() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let (bp, bs) = (
        breaker("p", Duration::from_secs(5)),
        breaker("s", Duration::from_secs(5)),
    );
    let mut f = primary_and_standby(&p, &bp, &s, &bs)
        .eject_after(2)
        .build()
        .unwrap();
    bp.force_open();
    for _ in 0..3 {
        let err = send(&mut f, get("/")).await.unwrap_err();
        assert_refused_by(&err, "p");
        assert_eq!(snapshot(&f, "p").status, EndpointStatus::Healthy);
    }
    assert_eq!(
        snapshot(&f, "p").consecutive_failures,
        0,
        "refusals are no failures"
    );
    bp.reset();
    p.set_status(503);
    for _ in 0..2 {
        send(&mut f, get("/")).await.unwrap();
    }
    assert_eq!(snapshot(&f, "p").status, EndpointStatus::Ejected);
    bp.force_open();
    sleep_ms(10_000).await;
    // The trial meets the forced-open breaker.
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert_refused_by(&err, "p");
    let held = snapshot(&f, "p");
    assert!(held.held_out);
    assert_eq!(held.ejected_for, Some(Duration::from_secs(10)));
    for _ in 0..5 {
        let res = send(&mut f, get("/")).await.unwrap();
        assert_eq!(who(&res), "s", "no trial spent on the primary meanwhile");
    }
}

#[tokio::test(start_paused = true)]
async fn a_passing_probe_brings_a_held_out_endpoint_back_once_the_hold_is_over() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let (bp, bs) = (
        breaker("p", Duration::from_secs(5)),
        breaker("s", Duration::from_secs(5)),
    );
    let mut f = primary_and_standby(&p, &bp, &s, &bs)
        .probe(probe_fn(|_| async { ProbeOutcome::Healthy }))
        .probe_interval(Duration::from_secs(1))
        .probe_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let mut events = f.subscribe();
    p.set_status(503);
    for _ in 0..3 {
        send(&mut f, get("/")).await.unwrap();
    }
    let _ = send(&mut f, get("/")).await.unwrap_err();
    assert!(snapshot(&f, "p").held_out);
    sleep_ms(4_500).await;
    assert_eq!(
        snapshot(&f, "p").status,
        EndpointStatus::Ejected,
        "passing probes do not cut the hold short"
    );
    sleep_ms(1_000).await;
    assert_eq!(snapshot(&f, "p").status, EndpointStatus::Healthy);
    let back = std::iter::from_fn(|| events.try_recv())
        .filter(|e| &*e.endpoint.name == "p")
        .last()
        .unwrap();
    assert_eq!(back.cause, Cause::ProbePassed);
}
