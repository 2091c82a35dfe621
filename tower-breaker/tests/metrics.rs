//! The metrics a breaker emits.

use std::time::Duration;

use test_support::metrics::capture;
use tower_breaker::Breaker;
use tower_fault::Class;

#[test]
fn calls_states_and_transitions_are_counted() {
    let ((), snap) = capture(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let breaker = Breaker::builder()
                .name("billing")
                .consecutive_failures(2)
                .slow_calls(Duration::from_secs(1), 1.0)
                .open_duration(Duration::from_secs(1), Duration::from_secs(10))
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
    let calls = |result| {
        snap.counter(
            "breaker_calls_total",
            &[("name", "billing"), ("result", result)],
        )
    };
    assert_eq!(calls("success"), Some(2));
    assert_eq!(calls("slow"), Some(1));
    assert_eq!(calls("ignored"), Some(1));
    assert_eq!(calls("failure"), Some(2));
    assert_eq!(calls("rejected"), Some(3));
    let transitions = |from, to| {
        snap.counter(
            "breaker_transitions_total",
            &[("name", "billing"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(transitions("closed", "open"), Some(1));
    assert_eq!(transitions("open", "half_open"), Some(1));
    assert_eq!(transitions("half_open", "closed"), Some(1));
    assert_eq!(
        snap.gauge("breaker_state", &[("name", "billing")]),
        Some(0.0)
    );
    assert_eq!(
        snap.series_count("breaker_state"),
        1,
        "one state series per breaker"
    );
}

#[test]
fn the_state_gauge_follows_the_state() {
    let ((), snap) = capture(|| {
        let breaker = Breaker::builder().name("gauge").build().unwrap();
        breaker.force_open();
    });
    assert_eq!(snap.gauge("breaker_state", &[("name", "gauge")]), Some(2.0));
}
