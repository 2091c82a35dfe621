//! The max-ejected guard: passive ejection keeps at most its share of the endpoints out of
//! rotation, so failures every endpoint shares never turn into "no healthy endpoint"; active
//! probes and failed readiness are verdicts and are not limited. Paused clock throughout.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::{Mock, get, paused_runtime, send, sleep_ms, who};
use tower_failover::{
    Backoff, Balance, Cause, Endpoint, EndpointStatus, Failover, HealthEvent, HttpProbe,
    error::NoHealthyEndpoint, metrics,
};

type F = Failover<Mock>;

fn ep(m: &Mock) -> Endpoint<Mock> {
    m.endpoint()
}

fn ejected(f: &F) -> Vec<String> {
    f.handle()
        .endpoints()
        .iter()
        .filter(|e| e.status == EndpointStatus::Ejected)
        .map(|e| e.info.name.to_string())
        .collect()
}

/// The defect this guards against: two endpoints failing together (both dead, or a blip in
/// front of both) were both ejected, and every request failed with "no healthy endpoint".
#[test]
fn two_endpoints_failing_together_leave_one_in_rotation_and_the_refusal_is_counted() {
    let capture = test_support::metrics::Capture::start();
    let rt = paused_runtime();
    rt.block_on(async {
        let (a, b) = (Mock::new("a"), Mock::new("b"));
        let mut f = Failover::builder()
            .name("g")
            .tier([ep(&a), ep(&b)])
            .eject_after(3)
            .seed(1)
            .build()
            .unwrap();
        a.set_status(503);
        b.set_status(503);
        for i in 0..30 {
            let res = send(&mut f, get("/")).await;
            assert_eq!(
                res.expect("never `no healthy endpoint`").status(),
                503,
                "{i}"
            );
        }
        let out = ejected(&f);
        assert_eq!(out.len(), 1, "{out:?}");
        let kept = if out[0] == "a" { "b" } else { "a" };
        if cfg!(feature = "metrics") {
            let snap = capture.snapshot();
            let refused = |e| {
                snap.counter(
                    metrics::EJECTIONS_REFUSED_TOTAL,
                    &[("name", "g"), ("endpoint", e)],
                )
            };
            assert_eq!(refused(kept), Some(1), "one refusal per run");
            assert_eq!(refused(&out[0]), Some(0));
        }
        // Back to normal: the kept endpoint serves at once.
        a.set_status(200);
        b.set_status(200);
        let res = send(&mut f, get("/")).await.unwrap();
        assert_eq!((who(&res), res.status().as_u16()), (kept, 200));
    });
}

#[tokio::test(start_paused = true)]
async fn a_blip_on_every_endpoint_ejects_at_most_the_allowed_fraction() {
    for (fraction, endpoints, most) in [
        (None, 4, 2),
        (None, 5, 2),
        (Some(0.25), 4, 1),
        (Some(0.1), 3, 1), // at least one may always be ejected
        (Some(1.0), 3, 3),
    ] {
        let mocks: Vec<Mock> = ["a", "b", "c", "d", "e"][..endpoints]
            .iter()
            .map(|n| Mock::new(n))
            .collect();
        let mut builder = Failover::builder()
            .tier(mocks.iter().map(ep))
            .eject_after(2)
            .seed(2);
        if let Some(fraction) = fraction {
            builder = builder.max_ejected_fraction(fraction);
        }
        let mut f = builder.build().unwrap();
        for m in &mocks {
            m.set_status(502);
        }
        for _ in 0..60 {
            match send(&mut f, get("/")).await {
                Ok(res) => assert_eq!(res.status(), 502),
                Err(err) => {
                    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
                    assert_eq!(most, endpoints, "all down only when all may be ejected");
                }
            }
        }
        assert_eq!(ejected(&f).len(), most, "{fraction:?} of {endpoints}");
    }
}

/// A live ejection the guard refused happens once another endpoint is back in rotation: the
/// run goes on and asks again at its next failure.
#[tokio::test(start_paused = true)]
async fn a_refused_ejection_happens_once_the_other_endpoint_returns() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let mut f = Failover::builder()
        .tier([ep(&a), ep(&b)])
        .balance(Balance::RoundRobin)
        .eject_after(2)
        .ejection_backoff(Backoff::constant(Duration::from_secs(10)))
        .build()
        .unwrap();
    // A quiet history for both, so that a short run is evidence (after a cold start it is not).
    for _ in 0..200 {
        send(&mut f, get("/")).await.unwrap();
    }
    a.set_status(503);
    for _ in 0..20 {
        if !ejected(&f).is_empty() {
            break;
        }
        send(&mut f, get("/")).await.unwrap();
    }
    assert_eq!(ejected(&f), ["a"]);
    b.set_status(503);
    for _ in 0..5 {
        let res = send(&mut f, get("/")).await.unwrap();
        assert_eq!(who(&res), "b", "kept in rotation: the last one");
    }
    assert_eq!(ejected(&f), ["a"]);
    assert_eq!(f.handle().endpoint("b").unwrap().consecutive_failures, 5);
    // a's trial passes: a is back in rotation.
    a.set_status(200);
    sleep_ms(10_000).await;
    let res = send(&mut f, get("/")).await.unwrap();
    assert_eq!((who(&res), res.status().as_u16()), ("a", 200));
    assert!(ejected(&f).is_empty());
    // b's next failure ejects it: its run went on.
    let hits = b.hits();
    while b.hits() == hits {
        send(&mut f, get("/")).await.unwrap();
    }
    assert_eq!(ejected(&f), ["b"]);
}

/// A trial that fails while the guard's share is taken brings its endpoint back into rotation
/// (keeping it out would leave nothing), with an event saying why.
#[tokio::test(start_paused = true)]
async fn a_failed_trial_the_guard_refuses_returns_its_endpoint_to_rotation() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let mut f = Failover::builder()
        .tier([ep(&a)])
        .tier([ep(&b)])
        .eject_after(1)
        .ejection_backoff(Backoff::constant(Duration::from_secs(10)))
        .build()
        .unwrap();
    let mut events = f.subscribe();
    a.set_status(503);
    send(&mut f, get("/")).await.unwrap();
    assert_eq!(ejected(&f), ["a"]);
    // b breaks (its readiness fails): ejected although a is out too (a verdict, not limited).
    b.0.broken.store(true, Ordering::SeqCst);
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
    assert_eq!(ejected(&f), ["a", "b"]);
    sleep_ms(10_000).await;
    // a's trial fails; ejecting it again would keep both out: a returns to rotation.
    let res = send(&mut f, get("/")).await.unwrap();
    assert_eq!((who(&res), res.status().as_u16()), ("a", 503));
    assert_eq!(
        f.handle().endpoint("a").unwrap().status,
        EndpointStatus::Healthy
    );
    let all: Vec<HealthEvent> = std::iter::from_fn(|| events.try_recv()).collect();
    let last = all.last().unwrap();
    assert_eq!(
        (&*last.endpoint.name, last.from, last.to, &last.cause),
        (
            "a",
            EndpointStatus::Ejected,
            EndpointStatus::Healthy,
            &Cause::MaxEjected
        )
    );
    let res = send(&mut f, get("/")).await.unwrap();
    assert_eq!(who(&res), "a", "in rotation");
}

/// Active probes are real health checks: every endpoint may be taken down by them.
#[tokio::test(start_paused = true)]
async fn probes_may_take_every_endpoint_down() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let mut f = Failover::builder()
        .tier([ep(&a)])
        .tier([ep(&b)])
        .probe(HttpProbe::shallow(a.clone(), "/healthz").request_body())
        .probe_interval(Duration::from_secs(1))
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 2)
        .build()
        .unwrap();
    // The probe's client is `a`'s mock, which answers `/healthz` for every endpoint.
    a.set_health(503);
    sleep_ms(3_500).await;
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
}
