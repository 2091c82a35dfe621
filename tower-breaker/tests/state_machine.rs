//! The breaker's state machine on tokio's paused clock.

use std::{future::Future, pin::pin, task::Poll, time::Duration};

use tower::{Service, ServiceExt, service_fn};
use tower_breaker::{Backoff, Breaker, Cause, Clock, Jitter, State, Window, error::BreakerError};
use tower_fault::{BoxError, Class, Delivery, RetryAfterHint};

const S: Duration = Duration::from_secs(1);

fn fail(breaker: &Breaker) {
    breaker.try_acquire().expect("admitted").failure();
}

fn succeed(breaker: &Breaker) {
    breaker.try_acquire().expect("admitted").success();
}

#[tokio::test(start_paused = true)]
async fn opens_after_the_threshold_even_after_100k_successes() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::count(100))
        .minimum_calls(20)
        .failure_rate_threshold(0.5)
        .rate_confidence(0.0)
        .build()
        .unwrap();
    for _ in 0..100_000 {
        succeed(&breaker);
    }
    assert_eq!(breaker.counts().calls, 100);
    // A true ring: 50 failures out of the last 100 calls reach 50%.
    for i in 1..=50 {
        assert_eq!(
            breaker.state(),
            State::Closed,
            "opened early, after {i} failures"
        );
        fail(&breaker);
    }
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_a_success_resets_the_run() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .no_failure_rate()
        .consecutive_failures(3)
        .build()
        .unwrap();
    fail(&breaker);
    fail(&breaker);
    succeed(&breaker);
    fail(&breaker);
    fail(&breaker);
    assert_eq!(breaker.state(), State::Closed);
    fail(&breaker);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_failures_exactly_when_they_age_out() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::time_with_buckets(10 * S, 10))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap();
    tokio::time::advance(S / 2).await;
    for _ in 0..3 {
        fail(&breaker); // 3 calls < minimum: no trip
    }
    tokio::time::advance(9 * S + S / 2 - Duration::from_millis(1)).await; // t = 9.999 s
    assert_eq!(breaker.counts().failures, 3);
    tokio::time::advance(Duration::from_millis(1)).await; // t = 10 s: bucket [0, 1) left
    assert_eq!(breaker.counts().failures, 0);
    succeed(&breaker);
    fail(&breaker);
    assert_eq!(
        breaker.state(),
        State::Closed,
        "old failures must not count"
    );
    assert_eq!(breaker.counts().calls, 2);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_with_the_remaining_time_as_a_local_rejection() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(10 * S, 2.0, 60 * S))
        .open_jitter(Jitter::None)
        .build()
        .unwrap();
    fail(&breaker);
    tokio::time::advance(4 * S).await;
    let err = breaker.try_acquire().unwrap_err();
    assert_eq!(err.state(), State::Open);
    assert_eq!(err.retry_after(), Some(6 * S));
    let boxed: BoxError = Box::new(err);
    let class = tower_fault::Classify::<http::Response<()>, BoxError>::classify(
        &tower_fault::HttpClassifier::default(),
        Err(&boxed),
    );
    assert_eq!(
        class,
        Class::Transient {
            retry_after: Some(6 * S),
            delivery: Delivery::LocallyRejected
        }
    );
}

/// An outer breaker above an inner one that is open (here: one breaker per endpoint behind
/// failover, and one for the whole upstream) must not count the inner breaker's rejections as
/// the upstream's failures: one upstream failure would become as many failures as calls the
/// inner breaker refuses, and the outer breaker would open on its own echo.
#[tokio::test(start_paused = true)]
async fn an_outer_breaker_does_not_count_an_inner_breakers_rejections() {
    let inner = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(10 * S, 2.0, 60 * S))
        .build()
        .unwrap();
    let outer = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::count(20))
        .minimum_calls(5)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap();
    fail(&inner);
    assert_eq!(inner.state(), State::Open);
    let calls = {
        let inner = inner.clone();
        service_fn(move |_req: ()| {
            let rejected = inner.try_acquire().map(drop);
            async move {
                rejected
                    .map(|()| http::Response::new(()))
                    .map_err(BoxError::from)
            }
        })
    };
    let mut svc = outer.layer().layer(calls);
    for _ in 0..50 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(tower_fault::find::<BreakerError>(err.as_ref()).is_some());
    }
    assert_eq!(outer.state(), State::Closed);
    assert_eq!(outer.counts().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_ignored_unless_configured() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(2)
        .build()
        .unwrap();
    for _ in 0..10 {
        breaker.try_acquire().unwrap().record(Class::Permanent);
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.counts().calls, 0);

    let strict = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(2)
        .permanent_outcome(tower_breaker::Outcome::Failure)
        .build()
        .unwrap();
    for _ in 0..2 {
        strict.try_acquire().unwrap().record(Class::Permanent);
    }
    assert_eq!(strict.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_successes_trip_the_slow_call_rule() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .no_failure_rate()
        .slow_calls(S, 0.5)
        .window(Window::count(10))
        .minimum_calls(4)
        .rate_confidence(0.0)
        .build()
        .unwrap();
    let mut events = breaker.subscribe();
    let mut svc = breaker
        .layer()
        .layer(service_fn(|delay: Duration| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(http::Response::new(()))
        }));
    for _ in 0..2 {
        svc.ready().await.unwrap().call(S / 10).await.unwrap();
    }
    for _ in 0..2 {
        svc.ready().await.unwrap().call(2 * S).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Open);
    let event = events.recv().await.unwrap();
    assert_eq!(event.cause, Cause::SlowCallRate);
    assert_eq!(event.slow_call_rate, Some(0.5));
    assert_eq!(event.failure_rate, Some(0.0));
}

use tower_layer::Layer;

/// Trips a half-open-capable breaker and waits for its open duration.
async fn half_open(permits: u32, timeout: Option<Duration>) -> Breaker {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .no_failure_rate()
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(S, 2.0, 60 * S))
        .open_jitter(Jitter::None)
        .half_open_permits(permits);
    let breaker = match timeout {
        Some(timeout) => breaker.half_open_timeout(timeout),
        None => breaker.no_half_open_timeout(),
    }
    .build()
    .unwrap();
    fail(&breaker);
    tokio::time::advance(S).await;
    breaker
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permits_and_closes_after_them() {
    let breaker = half_open(3, None).await;
    let probes: Vec<_> = (0..3).map(|_| breaker.try_acquire().unwrap()).collect();
    assert_eq!(breaker.state(), State::HalfOpen);
    let err = breaker.try_acquire().unwrap_err();
    assert_eq!(err.state(), State::HalfOpen);
    let mut probes = probes.into_iter();
    probes.next().unwrap().success();
    // A success keeps its slot: still only 3 probes per half-open period.
    assert!(breaker.try_acquire().is_err());
    probes.next().unwrap().success();
    assert_eq!(breaker.state(), State::HalfOpen);
    probes.next().unwrap().success();
    assert_eq!(breaker.state(), State::Closed);
    succeed(&breaker);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens() {
    let breaker = half_open(2, None).await;
    let a = breaker.try_acquire().unwrap();
    let b = breaker.try_acquire().unwrap();
    a.failure();
    assert_eq!(breaker.state(), State::Open);
    b.success(); // a probe of the old half-open period: ignored
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_permit() {
    let breaker = half_open(1, None).await;
    let mut svc = breaker.layer().layer(service_fn(|_: ()| async {
        std::future::pending::<Result<http::Response<()>, BoxError>>().await
    }));
    let probe = svc.ready().await.unwrap().call(());
    // The only permit is taken.
    let rejected = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(rejected.downcast_ref::<BreakerError>().is_some());
    drop(probe); // the caller gave up
    let mut second = pin!(svc.ready().await.unwrap().call(()));
    assert!(
        futures_util::poll!(second.as_mut()).is_pending(),
        "the freed permit admits the next probe"
    );
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn the_half_open_deadline_reopens_when_probes_hang() {
    let breaker = half_open(1, Some(5 * S)).await;
    let mut events = breaker.subscribe();
    let hung = breaker.try_acquire_owned().unwrap();
    tokio::time::advance(5 * S - Duration::from_millis(1)).await;
    assert_eq!(breaker.try_acquire().unwrap_err().state(), State::HalfOpen);
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = breaker.try_acquire().unwrap_err();
    assert_eq!(err.state(), State::Open);
    assert_eq!(
        err.retry_after(),
        Some(2 * S),
        "second open in a row doubles"
    );
    let seen: Vec<_> = std::iter::from_fn(|| events.try_recv())
        .map(|t| (t.from, t.to, t.cause))
        .collect();
    assert_eq!(
        seen,
        [
            (State::Open, State::HalfOpen, Cause::OpenElapsed),
            (State::HalfOpen, State::Open, Cause::HalfOpenTimeout)
        ]
    );
    hung.success(); // finally answers: too late to count
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_caps_and_resets_after_staying_closed() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(S, 2.0, 8 * S))
        .open_jitter(Jitter::None)
        .half_open_permits(1)
        .backoff_reset_after(30 * S)
        .build()
        .unwrap();
    let mut events = breaker.subscribe();
    let mut opens = Vec::new();
    fail(&breaker);
    for _ in 0..5 {
        let open_for = breaker.retry_after().unwrap();
        opens.push(open_for.as_secs());
        tokio::time::advance(open_for).await;
        fail(&breaker); // the probe fails
    }
    assert_eq!(opens, [1, 2, 4, 8, 8]);
    tokio::time::advance(8 * S).await;
    succeed(&breaker);
    assert_eq!(breaker.state(), State::Closed);
    // Re-tripping soon after closing continues the streak...
    tokio::time::advance(10 * S).await;
    fail(&breaker);
    assert_eq!(breaker.retry_after(), Some(8 * S));
    tokio::time::advance(8 * S).await;
    succeed(&breaker);
    // ...staying closed long enough resets it.
    tokio::time::advance(30 * S).await;
    fail(&breaker);
    assert_eq!(breaker.retry_after(), Some(S));
    let opened: Vec<_> = std::iter::from_fn(|| events.try_recv())
        .filter_map(|t| t.open_for)
        .map(|d| d.as_secs())
        .collect();
    assert_eq!(opened, [1, 2, 4, 8, 8, 8, 8, 1]);
}

/// The open periods follow any curve of the shared backoff vocabulary: a constant one keeps
/// every re-open as long as the first, a decorrelated one grows from the previous period.
#[tokio::test(start_paused = true)]
async fn open_periods_follow_the_open_backoff_curve() {
    async fn opens(backoff: Backoff) -> Vec<u64> {
        let breaker = Breaker::builder()
            .clock(Clock::Tokio)
            .consecutive_failures(1)
            .open_backoff(backoff)
            .open_jitter(Jitter::None)
            .half_open_permits(1)
            .build()
            .unwrap();
        let mut opens = Vec::new();
        fail(&breaker);
        for _ in 0..4 {
            let open_for = breaker.retry_after().unwrap();
            opens.push(open_for.as_secs());
            tokio::time::advance(open_for).await;
            fail(&breaker); // the probe fails
        }
        opens
    }
    assert_eq!(opens(Backoff::constant(3 * S)).await, [3, 3, 3, 3]);
    assert_eq!(
        opens(Backoff::decorrelated(S, 20 * S)).await,
        [3, 9, 20, 20]
    );
    assert_eq!(
        opens(Backoff::exponential(2 * S, 3.0, 40 * S)).await,
        [2, 6, 18, 40]
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_its_fraction() {
    for seed in 0..50 {
        let breaker = Breaker::builder()
            .clock(Clock::Tokio)
            .consecutive_failures(1)
            .open_backoff(Backoff::exponential(10 * S, 2.0, 60 * S))
            .open_jitter(Jitter::Proportional(0.2))
            .seed(seed)
            .build()
            .unwrap();
        fail(&breaker);
        let open_for = breaker.retry_after().unwrap();
        assert!((8 * S..=10 * S).contains(&open_for), "{open_for:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_upstream_retry_after_longer_than_the_open_duration_sets_it() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(S, 2.0, 60 * S))
        .open_jitter(Jitter::None)
        .half_open_permits(1)
        .build()
        .unwrap();
    breaker
        .try_acquire()
        .unwrap()
        .record(Class::TRANSIENT.with_retry_after(Some(30 * S)));
    assert_eq!(breaker.retry_after(), Some(30 * S));
    tokio::time::advance(30 * S).await;
    // Capped at the max open duration.
    breaker
        .try_acquire()
        .unwrap()
        .record(Class::TRANSIENT.with_retry_after(Some(600 * S)));
    assert_eq!(breaker.retry_after(), Some(60 * S));
}

#[tokio::test(start_paused = true)]
async fn events_arrive_in_order_with_their_causes() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::count(10))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .rate_confidence(0.0)
        .half_open_permits(1)
        .open_backoff(Backoff::exponential(S, 2.0, 10 * S))
        .build()
        .unwrap();
    let mut events = breaker.subscribe();
    succeed(&breaker);
    succeed(&breaker);
    fail(&breaker);
    fail(&breaker);
    tokio::time::advance(S).await;
    succeed(&breaker);
    breaker.force_open();
    breaker.reset();
    breaker.disable();
    breaker.force_closed();
    let seen: Vec<_> = std::iter::from_fn(|| events.try_recv())
        .map(|t| (t.from, t.to, t.cause))
        .collect();
    assert_eq!(
        seen,
        [
            (State::Closed, State::Open, Cause::FailureRate),
            (State::Open, State::HalfOpen, Cause::OpenElapsed),
            (State::HalfOpen, State::Closed, Cause::ProbesSucceeded),
            (State::Closed, State::ForcedOpen, Cause::Manual),
            (State::ForcedOpen, State::Closed, Cause::Manual),
            (State::Closed, State::Disabled, Cause::Manual),
            (State::Disabled, State::ForcedClosed, Cause::Manual),
        ]
    );
}

/// A subscriber that stops reading holds at most the bound of unread transitions and counts
/// the ones it missed; the breaker goes on changing state without waiting for it.
#[tokio::test(start_paused = true)]
async fn a_subscriber_that_stops_reading_is_bounded_and_counts_what_it_missed() {
    let breaker = Breaker::builder().clock(Clock::Tokio).build().unwrap();
    let mut idle = breaker.subscribe();
    for _ in 0..200 {
        breaker.force_open();
        breaker.reset();
    }
    let bound = tower_fault::events::DEFAULT_CAPACITY;
    assert_eq!(idle.len(), bound);
    assert_eq!(idle.missed(), 400 - bound as u64);
    // The oldest transitions are kept, in order.
    let first = idle.try_recv().unwrap();
    assert_eq!((first.from, first.to), (State::Closed, State::ForcedOpen));
    let second = idle.try_recv().unwrap();
    assert_eq!((second.from, second.to), (State::ForcedOpen, State::Closed));
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn manual_control() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(2)
        .build()
        .unwrap();
    breaker.force_open();
    let err = breaker.try_acquire().unwrap_err();
    assert_eq!((err.state(), err.retry_after()), (State::ForcedOpen, None));

    breaker.force_closed();
    for _ in 0..10 {
        fail(&breaker);
    }
    assert_eq!(breaker.state(), State::ForcedClosed);
    assert_eq!(breaker.counts().calls, 0, "forced closed records nothing");

    breaker.disable();
    for _ in 0..10 {
        fail(&breaker);
    }
    assert_eq!(
        breaker.state(),
        State::Disabled,
        "metrics only: never trips"
    );
    assert_eq!(breaker.counts().failures, 10);

    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.counts().calls, 0);
    fail(&breaker);
    fail(&breaker);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_admitted_before_a_transition_is_not_counted_after_it() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(2)
        .build()
        .unwrap();
    let old = breaker.try_acquire_owned().unwrap();
    breaker.force_open();
    breaker.reset();
    old.failure();
    fail(&breaker);
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the stale failure must not count"
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_delegates_and_rejection_is_immediate() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(1)
        .build()
        .unwrap();
    breaker.force_open();
    let mut svc = breaker.layer().layer(service_fn(|_: ()| async {
        Ok::<_, BoxError>(http::Response::new(()))
    }));
    let fut = svc.ready().await.unwrap().call(());
    let mut fut = pin!(fut);
    let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    let Poll::Ready(Err(err)) = polled else {
        panic!("rejection must be ready at the first poll");
    };
    assert!(err.is::<BreakerError>());
}

#[test]
fn rules_set_and_turned_off_again_leave_the_defaults() {
    // A rule turned off after being set is gone: with every rule off the breaker could never
    // open, which is a build error naming the failure-rate rule.
    let err = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(3)
        .slow_calls(S, 0.5)
        .no_failure_rate()
        .no_consecutive_failures()
        .no_slow_calls()
        .build()
        .unwrap_err();
    assert_eq!(err.field(), Some("failure_rate_threshold"));
    // Turning off a rule that was never set changes nothing.
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .no_slow_calls()
        .no_consecutive_failures()
        .build()
        .unwrap();
    assert_eq!(breaker.name(), "default");
}

#[test]
fn nonsense_configuration_is_a_build_error() {
    let cases: Vec<(tower_breaker::BreakerBuilder, &str)> = vec![
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .failure_rate_threshold(0.0),
            "failure_rate_threshold",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .failure_rate_threshold(1.5),
            "failure_rate_threshold",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .window(Window::count(0)),
            "window",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .window(Window::time(Duration::ZERO)),
            "window",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .window(Window::count(10))
                .minimum_calls(11),
            "minimum_calls",
        ),
        (
            Breaker::builder().clock(Clock::Tokio).no_failure_rate(),
            "failure_rate_threshold",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .consecutive_failures(0),
            "consecutive_failures",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .open_backoff(Backoff::exponential(10 * S, 2.0, S)),
            "open_backoff",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .open_backoff(Backoff::exponential(Duration::ZERO, 2.0, S)),
            "open_backoff",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .open_backoff(Backoff::exponential(
                    Duration::from_secs(5),
                    0.5,
                    Duration::from_secs(60),
                )),
            "open_backoff",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .open_jitter(Jitter::Proportional(1.5)),
            "open_jitter",
        ),
        (
            Breaker::builder().clock(Clock::Tokio).half_open_permits(0),
            "half_open_permits",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .half_open_timeout(Duration::ZERO),
            "half_open_timeout",
        ),
        (
            Breaker::builder()
                .clock(Clock::Tokio)
                .slow_calls(Duration::ZERO, 0.5),
            "slow_calls",
        ),
        (Breaker::builder().clock(Clock::Tokio).name(""), "name"),
    ];
    for (builder, field) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert!(!err.message().is_empty());
    }
}

#[test]
fn a_slow_call_threshold_shorter_than_the_coarse_clock_measures_needs_the_tokio_clock() {
    let short = Duration::from_millis(10);
    let err = Breaker::builder()
        .clock(Clock::Coarse)
        .slow_calls(short, 0.5)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), Some("slow_calls"), "{err}");
    assert!(err.message().contains("Clock::Tokio"), "{err}");
    Breaker::builder()
        .clock(Clock::Coarse)
        .slow_calls(Duration::from_millis(50), 0.5)
        .build()
        .expect("the shortest threshold the coarse clock takes");
    Breaker::builder()
        .clock(Clock::Tokio)
        .slow_calls(short, 0.5)
        .build()
        .expect("the exact clock measures any duration");
}

#[tokio::test(start_paused = true)]
async fn an_unbounded_max_open_duration_does_not_panic_when_tripping() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(Duration::MAX, 2.0, Duration::MAX))
        .open_jitter(Jitter::None)
        .build()
        .unwrap();
    fail(&breaker);
    assert_eq!(breaker.state(), State::Open);
    let err = breaker.try_acquire().unwrap_err();
    assert!(err.retry_after().unwrap() > Duration::from_secs(100 * 365 * 86_400));
}

/// A success that brings the window to `minimum_calls` is judged like a failure would be: five
/// failures then five successes in a window of ten is 50 %, and trips at the tenth call.
#[tokio::test(start_paused = true)]
async fn the_call_that_reaches_minimum_calls_is_judged_even_if_it_succeeds() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::count(10))
        .minimum_calls(10)
        .failure_rate_threshold(0.5)
        .rate_confidence(0.0)
        .build()
        .unwrap();
    for _ in 0..5 {
        fail(&breaker);
    }
    for _ in 0..4 {
        succeed(&breaker);
    }
    assert_eq!(breaker.state(), State::Closed, "9 calls < minimum");
    succeed(&breaker);
    assert_eq!(breaker.state(), State::Open);
}

/// In a time window, successes that ageing out leaves behind the failures raise the rate: the
/// first record of a new bucket judges the window again.
#[tokio::test(start_paused = true)]
async fn a_rate_raised_by_successes_ageing_out_trips_on_the_next_call() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::time_with_buckets(10 * S, 10))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .rate_confidence(0.0)
        .build()
        .unwrap();
    for _ in 0..10 {
        succeed(&breaker);
    }
    tokio::time::advance(5 * S).await;
    for _ in 0..4 {
        fail(&breaker); // 4 of 14: 29 %
    }
    assert_eq!(breaker.state(), State::Closed);
    tokio::time::advance(5 * S).await; // the ten successes leave the window
    succeed(&breaker); // 4 of 5: 80 %
    assert_eq!(breaker.state(), State::Open);
}

/// With a slow-call rule, a slow probe reopens: the breaker the rule tripped does not close on
/// an upstream that is still slow.
#[tokio::test(start_paused = true)]
async fn a_slow_probe_reopens() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .no_failure_rate()
        .slow_calls(S, 0.5)
        .window(Window::count(2))
        .minimum_calls(2)
        .rate_confidence(0.0)
        .half_open_permits(1)
        .open_backoff(Backoff::exponential(S, 2.0, S))
        .open_jitter(Jitter::None)
        .build()
        .unwrap();
    for _ in 0..2 {
        let permit = breaker.try_acquire().unwrap();
        tokio::time::advance(2 * S).await;
        permit.success();
    }
    assert_eq!(breaker.state(), State::Open);
    let mut events = breaker.subscribe();
    tokio::time::advance(S).await;
    let probe = breaker.try_acquire().expect("half-open");
    tokio::time::advance(2 * S).await;
    probe.success();
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(events.recv().await.unwrap().cause, Cause::OpenElapsed);
    assert_eq!(events.recv().await.unwrap().cause, Cause::ProbeSlow);
    // A fast probe closes it.
    tokio::time::advance(S).await;
    breaker.try_acquire().expect("half-open").success();
    assert_eq!(breaker.state(), State::Closed);
}

/// A `Retry-After` is an instant: one received long before the trip does not stretch the open
/// period from the trip on.
#[tokio::test(start_paused = true)]
async fn an_old_retry_after_does_not_stretch_a_later_open_period() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(2)
        .open_backoff(Backoff::exponential(5 * S, 2.0, 60 * S))
        .open_jitter(Jitter::None)
        .build()
        .unwrap();
    breaker
        .try_acquire()
        .unwrap()
        .record(Class::TRANSIENT.with_retry_after(Some(120 * S)));
    succeed(&breaker);
    tokio::time::advance(3600 * S).await;
    fail(&breaker);
    fail(&breaker);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.retry_after(), Some(5 * S));

    // A hint received 100 s before the trip asked for 20 s more, not 120.
    breaker.reset();
    breaker
        .try_acquire()
        .unwrap()
        .record(Class::TRANSIENT.with_retry_after(Some(120 * S)));
    tokio::time::advance(100 * S).await;
    fail(&breaker);
    assert_eq!(breaker.retry_after(), Some(20 * S));
}

/// A reset of a closed breaker discards the results of calls admitted before it, as every
/// transition does: they would otherwise land in the fresh window and could trip it at once.
#[tokio::test(start_paused = true)]
async fn results_of_calls_admitted_before_a_reset_are_not_counted() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .no_failure_rate()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let before: Vec<_> = (0..2).map(|_| breaker.try_acquire().unwrap()).collect();
    breaker.reset();
    for permit in before {
        permit.failure();
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.counts().calls, 0);
}

/// An open period is never longer than the configured maximum, however short.
#[tokio::test(start_paused = true)]
async fn a_sub_millisecond_max_open_duration_is_respected() {
    let tiny = Duration::from_micros(10);
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(tiny, 2.0, tiny))
        .build()
        .unwrap();
    fail(&breaker);
    assert!(breaker.retry_after().is_some_and(|d| d <= tiny));
}

/// A classifier that panics leaves the half-open permit to the permit's drop, which frees it.
#[tokio::test(start_paused = true)]
async fn a_panicking_classifier_does_not_leak_a_probe_permit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let breaker = half_open(1, None).await;
    static PANIC: AtomicBool = AtomicBool::new(true);
    let classifier = tower_fault::classify_fn(|_: Result<&http::Response<()>, &BoxError>| {
        assert!(!PANIC.swap(false, Ordering::SeqCst), "classifier bug");
        Class::Success
    });
    let mut svc = breaker
        .layer()
        .classifier(classifier)
        .layer(service_fn(|(): ()| async {
            Ok::<_, BoxError>(http::Response::new(()))
        }));
    let probe = svc.ready().await.unwrap().call(());
    let panicked = tokio::spawn(probe).await;
    assert!(panicked.is_err_and(|e| e.is_panic()));
    assert_eq!(breaker.state(), State::HalfOpen);
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the slot was freed for the next probe"
    );
}
