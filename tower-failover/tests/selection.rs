//! Picking endpoints: p2c, round-robin, tiers, spill, readiness, retried requests, URIs.

mod common;

use std::time::Duration;

use common::{Mock, get, send, who};
use http::Response;
use tower::{Service, ServiceExt};
use tower_failover::{AllDown, Backoff, Balance, Endpoint, EndpointStatus, Failover};
use tower_fault::{AttemptContext, BoxError, Classify, EndpointError, HttpClassifier, ServedBy};

type F = Failover<Mock>;

fn endpoints(mocks: &[&Mock]) -> Vec<Endpoint<Mock>> {
    mocks.iter().map(|m| m.endpoint()).collect()
}

#[tokio::test]
async fn p2c_keeps_in_flight_load_balanced() {
    let mocks: Vec<Mock> = ["a", "b", "c", "d"].into_iter().map(Mock::new).collect();
    for m in &mocks {
        m.0.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let mut f = Failover::builder()
        .tier(endpoints(&mocks.iter().collect::<Vec<_>>()))
        .seed(7)
        .build()
        .unwrap();
    // Keep every request in flight: p2c must keep the in-flight counts within a small gap,
    // where a uniform random pick would drift apart by tens (sd ≈ 8.7 per endpoint at 400).
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(f.ready().await.unwrap().call(get("/")));
    }
    let loads: Vec<usize> = f.handle().endpoints().iter().map(|e| e.in_flight).collect();
    let (min, max) = (*loads.iter().min().unwrap(), *loads.iter().max().unwrap());
    assert_eq!(loads.iter().sum::<usize>(), 400);
    assert!(max - min <= 3, "p2c load gap too wide: {loads:?}");
    drop(held);
    assert!(
        f.handle().endpoints().iter().all(|e| e.in_flight == 0),
        "dropped futures release their slot"
    );
}

#[tokio::test]
async fn p2c_spreads_sequential_load_within_a_statistical_bound() {
    let mocks: Vec<Mock> = ["a", "b", "c", "d"].into_iter().map(Mock::new).collect();
    let mut f = Failover::builder()
        .tier(endpoints(&mocks.iter().collect::<Vec<_>>()))
        .seed(3)
        .build()
        .unwrap();
    for _ in 0..4000 {
        send(&mut f, get("/")).await.unwrap();
    }
    for m in &mocks {
        // Binomial(4000, 1/4): sd ≈ 27; 5 sd either side.
        assert!(
            (865..=1135).contains(&m.hits()),
            "{}: {}",
            m.0.name,
            m.hits()
        );
    }
}

#[tokio::test]
async fn round_robin_is_exact() {
    let mocks: Vec<Mock> = ["a", "b", "c"].into_iter().map(Mock::new).collect();
    let mut f = Failover::builder()
        .tier(endpoints(&mocks.iter().collect::<Vec<_>>()))
        .balance(Balance::RoundRobin)
        .build()
        .unwrap();
    for _ in 0..300 {
        send(&mut f, get("/")).await.unwrap();
    }
    assert!(
        mocks.iter().all(|m| m.hits() == 100),
        "{:?}",
        mocks.iter().map(Mock::hits).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn clones_share_health_and_spread_load() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let f = Failover::builder()
        .tier(endpoints(&[&a, &b]))
        .balance(Balance::RoundRobin)
        .build()
        .unwrap();
    // axum clones the service per request: the spread must survive that.
    for _ in 0..10 {
        f.clone().oneshot(get("/")).await.unwrap();
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test]
async fn strict_priority_sends_everything_to_the_primary_tier() {
    let (p1, p2, s) = (Mock::new("p1"), Mock::new("p2"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier(endpoints(&[&p1, &p2]))
        .tier(endpoints(&[&s]))
        .build()
        .unwrap();
    for _ in 0..100 {
        send(&mut f, get("/")).await.unwrap();
    }
    assert_eq!(s.hits(), 0);
    assert_eq!(p1.hits() + p2.hits(), 100);
    assert!(p1.hits() > 20 && p2.hits() > 20);
}

#[tokio::test]
async fn spill_moves_a_share_to_the_standby_tier() {
    let primaries: Vec<Mock> = ["p1", "p2", "p3", "p4"]
        .into_iter()
        .map(Mock::new)
        .collect();
    let s = Mock::new("s");
    let mut f = Failover::builder()
        .tier(endpoints(&primaries.iter().collect::<Vec<_>>()))
        .tier(endpoints(&[&s]))
        .spill(1.4)
        .eject_after(1)
        .ejection_backoff(Backoff::constant(Duration::from_secs(600)))
        .seed(11)
        .build()
        .unwrap();
    let handle = f.handle();
    // All healthy: the primary tier keeps everything (4/4 × 1.4 ≥ 1).
    for _ in 0..200 {
        send(&mut f, get("/")).await.unwrap();
    }
    assert_eq!(s.hits(), 0);
    // Eject two primaries: 2/4 × 1.4 = 70% stays, 30% spills.
    primaries[0].set_status(503);
    primaries[1].set_status(503);
    while ["p1", "p2"]
        .iter()
        .any(|n| handle.endpoint(n).unwrap().status != EndpointStatus::Ejected)
    {
        send(&mut f, get("/")).await.unwrap();
    }
    let before = s.hits();
    for _ in 0..2000 {
        send(&mut f, get("/")).await.unwrap();
    }
    let spilled = s.hits() - before;
    assert!(
        (520..=680).contains(&spilled),
        "expected ~600 of 2000 on the standby, got {spilled}"
    );
}

#[tokio::test]
async fn a_pending_endpoint_does_not_stall_the_tier() {
    let (hung, b, c) = (Mock::new("hung"), Mock::new("b"), Mock::new("c"));
    hung.set_ready(false);
    let mut f = Failover::builder()
        .tier(endpoints(&[&hung, &b, &c]))
        .seed(5)
        .build()
        .unwrap();
    for _ in 0..100 {
        let res = tokio::time::timeout(Duration::from_secs(1), send(&mut f, get("/"))).await;
        let res = res
            .expect("poll_ready must not wait for the pending endpoint")
            .unwrap();
        assert_ne!(who(&res), "hung");
    }
    assert_eq!(hung.hits(), 0);
    assert_eq!(b.hits() + c.hits(), 100);
}

#[tokio::test]
async fn poll_ready_waits_for_any_endpoint_and_is_woken() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    a.set_ready(false);
    b.set_ready(false);
    let mut f = Failover::builder()
        .tier(endpoints(&[&a, &b]))
        .build()
        .unwrap();
    let mut task = tokio_test::task::spawn(async move { send(&mut f, get("/")).await });
    assert!(task.poll().is_pending());
    let polls = a.polls() + b.polls();
    assert!(task.poll().is_pending());
    assert!(
        !task.is_woken(),
        "nothing changed: no self-wake (no busy spin)"
    );
    b.set_ready(true);
    assert!(
        task.is_woken(),
        "the ready endpoint's waker reaches the caller"
    );
    let res = match task.poll() {
        std::task::Poll::Ready(res) => res.unwrap(),
        std::task::Poll::Pending => panic!("b is ready"),
    };
    assert_eq!(who(&res), "b");
    assert!(a.polls() + b.polls() <= polls + 4);
}

#[tokio::test]
async fn retried_request_goes_to_an_untried_endpoint() {
    let (a, b, s) = (Mock::new("a"), Mock::new("b"), Mock::new("s"));
    let mut f = Failover::builder()
        .tier(endpoints(&[&a, &b]))
        .tier(endpoints(&[&s]))
        .build()
        .unwrap();
    let ids: Vec<_> = f
        .handle()
        .endpoints()
        .iter()
        .map(|e| (e.info.name.clone(), e.info.id))
        .collect();
    let id = |n: &str| ids.iter().find(|(name, _)| &**name == n).unwrap().1;
    for _ in 0..20 {
        let first = send(&mut f, get("/")).await.unwrap();
        let first = who(&first).to_owned();
        // What a retry layer builds from the endpoint the first attempt reported.
        let mut ctx = AttemptContext::new();
        ctx.record_endpoint(id(&first));
        ctx.advance();
        let mut retry = get("/");
        retry.extensions_mut().insert(ctx.clone());
        let second = send(&mut f, retry).await.unwrap();
        assert_ne!(
            who(&second),
            first,
            "a retry avoids the endpoint already tried"
        );
        assert_ne!(
            who(&second),
            "s",
            "another primary is untried: no need for the standby"
        );
        // Third attempt: both primaries tried, the standby is the untried one.
        ctx.record_endpoint(id(who(&second)));
        ctx.advance();
        let mut third = get("/");
        third.extensions_mut().insert(ctx);
        assert_eq!(who(&send(&mut f, third).await.unwrap()), "s");
    }
}

#[tokio::test]
async fn answers_other_than_success_report_the_endpoint() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let mut f = Failover::builder()
        .tier(endpoints(&[&a]))
        .tier(endpoints(&[&b]))
        .no_passive_ejection()
        .build()
        .unwrap();
    let a_id = f.handle().endpoints()[0].info.id;
    let ok = send(&mut f, get("/")).await.unwrap();
    assert_eq!(
        ServedBy::of(Ok::<_, &BoxError>(&ok)),
        None,
        "a success pays nothing"
    );
    a.set_status(404);
    let not_found = send(&mut f, get("/")).await.unwrap();
    assert_eq!(
        ServedBy::of(Ok::<_, &BoxError>(&not_found)),
        Some(a_id),
        "any answer that is not a success names its endpoint (a retry layer may classify it \
         differently)"
    );
    a.set_status(503);
    let unavailable = send(&mut f, get("/")).await.unwrap();
    assert_eq!(
        ServedBy::of(Ok::<_, &BoxError>(&unavailable)),
        Some(a_id),
        "a transient response names its endpoint"
    );
    a.set_status(0);
    let err = send(&mut f, get("/")).await.unwrap_err();
    assert_eq!(ServedBy::of::<(), _>(Err(&err)), Some(a_id));
    let failed = err.downcast_ref::<EndpointError>().expect("wrapped");
    assert_eq!(failed.name(), "a");
    assert!(failed.inner().downcast_ref::<std::io::Error>().is_some());
    assert!(
        HttpClassifier::default()
            .classify(Err::<&Response<String>, _>(&err))
            .is_transient(),
        "classification reads through the wrapper"
    );
}

#[tokio::test]
async fn uri_is_rewritten_to_the_endpoint() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let mut f = Failover::builder()
        .tier([Endpoint::new("a", "http://10.0.0.1:8080/api/", a)])
        .tier([Endpoint::new("b", "https://b.internal", b)])
        .build()
        .unwrap();
    let res = send(&mut f, get("http://public.example/orders?id=7"))
        .await
        .unwrap();
    assert_eq!(res.body(), "a http://10.0.0.1:8080/api/orders?id=7");
    let _ = f.handle().remove("a");
    let res = send(&mut f, get("/orders?id=7")).await.unwrap();
    assert_eq!(res.body(), "b https://b.internal/orders?id=7");
}

#[tokio::test]
async fn panic_mode_uses_every_endpoint_when_all_are_down() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    a.set_status(503);
    b.set_status(503);
    let mut f = Failover::builder()
        .tier(endpoints(&[&a]))
        .tier(endpoints(&[&b]))
        .eject_after(1)
        .max_ejected_fraction(1.0) // every endpoint may be ejected: all down is the point
        .when_all_down(AllDown::Panic)
        .build()
        .unwrap();
    for _ in 0..40 {
        let res = send(&mut f, get("/")).await.unwrap();
        assert_eq!(res.status(), 503);
    }
    assert!(
        f.handle()
            .endpoints()
            .iter()
            .all(|e| e.status == EndpointStatus::Ejected)
    );
    assert!(
        a.hits() > 5 && b.hits() > 5,
        "panic mode spreads over all: {} / {}",
        a.hits(),
        b.hits()
    );
}

#[test]
fn service_and_future_have_the_bounds_axum_and_tokio_need() {
    fn service<T: Clone + Send + Sync + 'static>() {}
    fn future<T: Send + 'static>() {}
    type Hyper = hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >;
    service::<Failover<Hyper>>();
    service::<tower_failover::ServerMode<Failover<Hyper>>>();
    service::<tower_failover::FailoverHandle<Hyper>>();
    future::<
        tower_failover::future::ResponseFuture<
            Hyper,
            http_body_util::Full<bytes::Bytes>,
            HttpClassifier,
        >,
    >();
    future::<tower_failover::Drain>();
}

#[tokio::test]
async fn uri_rewriting_can_be_turned_off_for_bound_services() {
    let a = Mock::new("a");
    let mut f = Failover::builder()
        .tier([Endpoint::new("a", "http://10.0.0.1:8080/api", a)])
        .rewrite_uris(false)
        .build()
        .unwrap();
    let res = send(&mut f, get("http://public.example/orders"))
        .await
        .unwrap();
    assert_eq!(res.body(), "a http://public.example/orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clones_under_flapping_health_keep_counts_consistent() {
    let mocks: Vec<Mock> = ["a", "b", "c"].into_iter().map(Mock::new).collect();
    let s = Mock::new("s");
    let f = Failover::builder()
        .tier(endpoints(&mocks.iter().collect::<Vec<_>>()))
        .tier(endpoints(&[&s]))
        .eject_after(2)
        .ejection_backoff(Backoff::exponential(
            Duration::from_millis(1),
            2.0,
            Duration::from_millis(4),
        ))
        .build()
        .unwrap();
    let flapper = {
        let a = mocks[0].clone();
        tokio::spawn(async move {
            for i in 0..200 {
                a.set_status(if i % 2 == 0 { 503 } else { 200 });
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            a.set_status(200);
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                let res = f.clone().oneshot(get("/")).await.unwrap();
                assert!(res.status() == 200 || res.status() == 503);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    flapper.await.unwrap();
    let total: usize = mocks.iter().map(Mock::hits).sum::<usize>() + s.hits();
    assert_eq!(total, 4000, "every request reached exactly one endpoint");
    let snaps = f.handle().endpoints();
    assert!(
        snaps.iter().all(|e| e.in_flight == 0),
        "in-flight counters return to zero: {snaps:?}"
    );
    let ejections: u64 = snaps.iter().map(|e| e.ejections).sum();
    assert!(
        ejections >= 1,
        "the flapping endpoint was ejected at least once"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_failing_readiness_is_ejected_at_once_without_spinning() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let mut f = Failover::builder()
        .tier(endpoints(&[&a, &b]))
        .no_passive_ejection() // passive ejection off: readiness errors still eject
        .ejection_backoff(Backoff::constant(Duration::from_secs(10)))
        .build()
        .unwrap();
    let mut events = f.subscribe();
    a.0.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "b");
    }
    assert_eq!(
        f.handle().endpoint("a").unwrap().status,
        EndpointStatus::Ejected
    );
    assert!(
        a.polls() <= 2,
        "the broken endpoint is polled once, then left alone: {}",
        a.polls()
    );
    let cause = std::iter::from_fn(|| events.try_recv())
        .map(|e| e.cause)
        .last()
        .unwrap();
    assert!(
        matches!(&cause, tower_failover::Cause::ReadinessFailed(m) if m.contains("pool closed")),
        "{cause:?}"
    );
    // Repaired: after its ejection, a trial brings it back.
    a.0.broken.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(who(&send(&mut f, get("/")).await.unwrap()), "a");
    assert_eq!(
        f.handle().endpoint("a").unwrap().status,
        EndpointStatus::Healthy
    );
}

#[tokio::test]
async fn panic_mode_with_every_endpoint_broken_fails_instead_of_spinning() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    a.0.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    b.0.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut f = Failover::builder()
        .tier(endpoints(&[&a]))
        .tier(endpoints(&[&b]))
        .when_all_down(AllDown::Panic)
        .build()
        .unwrap();
    let res = tokio::time::timeout(Duration::from_millis(500), send(&mut f, get("/"))).await;
    let polls = a.polls() + b.polls();
    let err = res
        .expect("an answer, not a hang or a spin")
        .expect_err("every endpoint is broken");
    let failed = err
        .downcast_ref::<EndpointError>()
        .expect("names its endpoint");
    assert!(failed.inner().to_string().contains("pool closed"), "{err}");
    assert!(polls <= 8, "readiness is not polled in a loop: {polls}");
    let ejections: u64 = f.handle().endpoints().iter().map(|e| e.ejections).sum();
    assert_eq!(ejections, 2, "each broken endpoint is ejected once");
}

/// A tier larger than the inline pick buffer (64) is picked from by walking it: round-robin is
/// still exact over 100 endpoints, p2c reaches all of them, and an ejected half takes nothing.
#[tokio::test]
async fn large_tiers_are_picked_from_exactly() {
    tiers_are_picked_from_exactly(100).await;
}

/// A tier whose endpoints are all healthy is picked from by index, one with an ejected half from
/// the list of the admitted ones: the same as [`large_tiers_are_picked_from_exactly`] over 10.
#[tokio::test]
async fn small_tiers_are_picked_from_exactly() {
    tiers_are_picked_from_exactly(10).await;
}

async fn tiers_are_picked_from_exactly(n: usize) {
    let mocks: Vec<Mock> = (0..n)
        .map(|i| Mock::new(Box::leak(format!("m{i}").into_boxed_str())))
        .collect();
    let all: Vec<&Mock> = mocks.iter().collect();
    let mut rr = Failover::builder()
        .tier(endpoints(&all))
        .balance(Balance::RoundRobin)
        .build()
        .unwrap();
    for _ in 0..10 * n {
        send(&mut rr, get("/")).await.unwrap();
    }
    assert!(mocks.iter().all(|m| m.hits() == 10), "round-robin over {n}");
    let mut p2c = Failover::builder()
        .tier(endpoints(&all))
        .eject_after(1)
        .build()
        .unwrap();
    for m in mocks.iter().step_by(2) {
        m.set_status(503);
    }
    // Every request that lands on a failing endpoint ejects it, until only the healthy half is
    // left; from then on, nothing reaches the ejected half.
    let ejected = |f: &F| {
        f.handle()
            .endpoints()
            .iter()
            .filter(|e| e.status == EndpointStatus::Ejected)
            .count()
    };
    for _ in 0..10_000 {
        if ejected(&p2c) == n / 2 {
            break;
        }
        send(&mut p2c, get("/")).await.unwrap();
    }
    assert_eq!(ejected(&p2c), n / 2);
    let before: Vec<usize> = mocks.iter().map(Mock::hits).collect();
    for _ in 0..2000 {
        let res = send(&mut p2c, get("/")).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    for (i, (m, before)) in mocks.iter().zip(before).enumerate() {
        if i % 2 == 0 {
            assert_eq!(m.hits(), before, "{} is ejected", m.0.name);
        } else {
            assert!(m.hits() > before, "{} got nothing", m.0.name);
        }
    }
}
