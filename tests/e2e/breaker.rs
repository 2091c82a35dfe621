//! The breaker keeps retries from hammering a dead upstream.

use std::time::{Duration, Instant};

use resilience_tests::payment_request;
use test_support::fault::{Action, FaultServer};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{Breaker, State, error::BreakerError};
use tower_fault::reqwest::ReqwestService;
use tower_retry_plus::{Backoff, RetryLayer};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

fn breaker() -> Breaker {
    Breaker::builder()
        .name("dead-upstream")
        .consecutive_failures(3)
        .open_backoff(Backoff::exponential(
            Duration::from_secs(30),
            2.0,
            Duration::from_secs(60),
        ))
        .build()
        .unwrap()
}

fn retry() -> RetryLayer {
    RetryLayer::builder()
        .max_attempts(4)
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .max_retry_after(Duration::from_secs(1))
        .idempotency_key(true)
        .no_budget()
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_open_breaker_stops_retries_reaching_a_failing_upstream() {
    let upstream = MockServer::start().await;
    // 20 payments x 4 attempts would be 80 requests without the breaker.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&upstream)
        .await;
    let breaker = breaker();
    let client = ServiceBuilder::new()
        .layer(retry())
        .layer(breaker.layer())
        .service(ReqwestService::new(reqwest::Client::new()));

    let started = Instant::now();
    for i in 0..20 {
        let err = client
            .clone()
            .oneshot(payment_request(&upstream.uri(), &format!("p{i}"), 1))
            .await
            .expect_err("rejected by the breaker");
        // The first payment's fourth attempt, and every later payment, met the open breaker.
        let open = err
            .downcast_ref::<BreakerError>()
            .expect("a breaker rejection");
        assert!(open.is_open());
    }
    assert_eq!(breaker.state(), State::Open);
    // The open breaker's Retry-After (30 s) is over the retry layer's cap: no waiting either.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    upstream.verify().await;
}

#[tokio::test]
async fn resets_from_a_dead_upstream_trip_the_breaker_too() {
    let upstream = FaultServer::start().await;
    upstream.set_fallback(Action::ResetBeforeRequest);
    let breaker = breaker();
    let client = ServiceBuilder::new()
        .layer(retry())
        .layer(breaker.layer())
        .service(ReqwestService::new(reqwest::Client::new()));

    for i in 0..10 {
        let err = client
            .clone()
            .oneshot(payment_request(&upstream.url(""), &format!("p{i}"), 1))
            .await
            .expect_err("nothing answers");
        if i > 0 {
            assert!(err.downcast_ref::<BreakerError>().is_some(), "{err}");
        }
    }
    assert_eq!(breaker.state(), State::Open);
    assert!(
        upstream.connections() <= 3,
        "{} connections reached the dead upstream",
        upstream.connections()
    );
}
