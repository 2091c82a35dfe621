//! The metrics a breaker emits.
#![cfg(feature = "metrics")]

use std::time::Duration;

use test_support::metrics::capture;
use tower_breaker::{
    Backoff, Breaker, Clock,
    metrics::{CALLS_TOTAL, STATE, TRANSITIONS_TOTAL},
};
use tower_fault::Class;

/// Runs `f` to completion on a current-thread runtime (the capturing recorder is thread-local)
/// with tokio's clock paused.
fn on_paused_clock<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn calls_states_and_transitions_are_counted() {
    let ((), snap) = capture(|| {
        on_paused_clock(async {
            let breaker = Breaker::builder()
                .clock(Clock::Tokio)
                .name("billing")
                .consecutive_failures(2)
                .slow_calls(Duration::from_secs(1), 1.0)
                .open_backoff(Backoff::exponential(
                    Duration::from_secs(1),
                    2.0,
                    Duration::from_secs(10),
                ))
                .half_open_permits(1)
                .build()
                .unwrap();
            breaker.try_acquire().unwrap().success();
            let slow = breaker.try_acquire().unwrap();
            tokio::time::advance(Duration::from_secs(2)).await;
            slow.success();
            breaker.try_acquire().unwrap().record(Class::Permanent);
            breaker.try_acquire().unwrap().failure();
            breaker.try_acquire().unwrap().failure(); // opens
            for _ in 0..3 {
                assert!(breaker.try_acquire().is_err());
            }
            tokio::time::advance(Duration::from_secs(1)).await;
            breaker.try_acquire().unwrap().success(); // half-open probe closes it
        });
    });
    let calls = |result| snap.counter(CALLS_TOTAL, &[("name", "billing"), ("result", result)]);
    assert_eq!(calls("success"), Some(2));
    assert_eq!(calls("slow"), Some(1));
    assert_eq!(calls("ignored"), Some(1));
    assert_eq!(calls("failure"), Some(2));
    assert_eq!(calls("rejected"), Some(3));
    let transitions = |from, to| {
        snap.counter(
            TRANSITIONS_TOTAL,
            &[("name", "billing"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(transitions("closed", "open"), Some(1));
    assert_eq!(transitions("open", "half_open"), Some(1));
    assert_eq!(transitions("half_open", "closed"), Some(1));
    assert_eq!(snap.gauge(STATE, &[("name", "billing")]), Some(0.0));
    assert_eq!(snap.series_count(STATE), 1, "one state series per breaker");
}

#[test]
fn the_state_gauge_follows_the_state() {
    let ((), snap) = capture(|| {
        let breaker = Breaker::builder()
            .clock(Clock::Tokio)
            .name("gauge")
            .build()
            .unwrap();
        breaker.force_open();
    });
    assert_eq!(snap.gauge(STATE, &[("name", "gauge")]), Some(2.0));
}

/// Keyed breakers past `max_metric_keys` share one set of series: 50 hosts through a layer
/// capped at 3 make the series of 3 hosts plus `hosts/other`, not 50 hosts' worth — also while
/// the map evicts and re-creates breakers (a key keeps its own series when it comes back).
#[test]
fn keyed_breakers_past_the_cap_share_one_set_of_series() {
    use tower::{Service, ServiceExt, service_fn};
    use tower_breaker::keyed::KeyedBreakerLayer;
    use tower_layer::Layer;

    let ((), snap) = capture(|| {
        on_paused_clock(async {
            let layer = KeyedBreakerLayer::builder(
                Breaker::builder()
                    .clock(Clock::Tokio)
                    .name("hosts")
                    .consecutive_failures(1),
            )
            .max_keys(4)
            .max_metric_keys(3)
            .build()
            .unwrap();
            let mut svc = layer.layer(service_fn(|req: http::Request<()>| async move {
                let down = req.uri().host().is_some_and(|h| h.starts_with("down"));
                let status = if down { 503 } else { 200 };
                Ok::<_, tower_fault::BoxError>(
                    http::Response::builder().status(status).body(()).unwrap(),
                )
            }));
            let mut send = async |host: &str| {
                let req = http::Request::get(format!("http://{host}/"))
                    .body(())
                    .unwrap();
                svc.ready().await.unwrap().call(req).await
            };
            for i in 0..50 {
                send(&format!("host-{i}.test")).await.unwrap();
                // Least recently used first: on a clock that moves, the order is the calls'.
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            // host-0 was evicted long ago (at most 4 breakers live); back, it keeps its series.
            assert!(layer.breaker(&"host-0.test".parse().unwrap()).is_none());
            send("host-0.test").await.unwrap();
            // A key past the cap trips: its transition is counted in the shared series.
            send("down-1.test").await.unwrap();
            assert!(send("down-1.test").await.is_err(), "open");
        });
    });
    let calls =
        |name: &str, result: &str| snap.counter(CALLS_TOTAL, &[("name", name), ("result", result)]);
    assert_eq!(
        snap.series_count(CALLS_TOTAL),
        4 * 5,
        "hosts/host-0, -1, -2 and hosts/other, five results each"
    );
    assert_eq!(
        snap.series_count(STATE),
        3,
        "no state gauge for the shared series"
    );
    assert_eq!(calls("hosts/host-0.test", "success"), Some(2));
    assert_eq!(calls("hosts/host-2.test", "success"), Some(1));
    assert_eq!(calls("hosts/other", "success"), Some(47));
    assert_eq!(calls("hosts/other", "failure"), Some(1));
    assert_eq!(calls("hosts/other", "rejected"), Some(1));
    assert_eq!(
        snap.counter(
            TRANSITIONS_TOTAL,
            &[("name", "hosts/other"), ("from", "closed"), ("to", "open")]
        ),
        Some(1)
    );
    assert_eq!(snap.series_count(TRANSITIONS_TOTAL), 1);
}

#[test]
fn max_metric_keys_is_validated_and_zero_shares_every_key() {
    use tower::{Service, ServiceExt, service_fn};
    use tower_breaker::keyed::{KeyedBreakerLayer, MAX_METRIC_KEYS};
    use tower_layer::Layer;

    let err = KeyedBreakerLayer::builder(Breaker::builder().clock(Clock::Tokio))
        .max_metric_keys(MAX_METRIC_KEYS + 1)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_metric_keys"), "{err}");
    assert!(
        KeyedBreakerLayer::builder(Breaker::builder().clock(Clock::Tokio))
            .max_metric_keys(MAX_METRIC_KEYS)
            .build()
            .is_ok()
    );
    let ((), snap) = capture(|| {
        let layer =
            KeyedBreakerLayer::builder(Breaker::builder().clock(Clock::Tokio).name("routes"))
                .max_metric_keys(0)
                .key_fn(|req: &http::Request<()>| Some(req.uri().path().to_owned()))
                .build()
                .unwrap();
        let mut svc = layer.layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, tower_fault::BoxError>(http::Response::new(()))
        }));
        on_paused_clock(async {
            for path in ["/a", "/b"] {
                let req = http::Request::get(path).body(()).unwrap();
                svc.ready().await.unwrap().call(req).await.unwrap();
            }
        });
    });
    assert_eq!(
        snap.counter(
            CALLS_TOTAL,
            &[("name", "routes/other"), ("result", "success")]
        ),
        Some(2)
    );
    assert_eq!(snap.series_count(CALLS_TOTAL), 5);
    assert_eq!(snap.series_count(STATE), 0);
}
