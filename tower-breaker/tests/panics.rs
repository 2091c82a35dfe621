//! An inner service that panics, in `call` or in its future: the call counts as a failure and
//! the panic reaches the caller unchanged; a half-open probe that panics re-opens the breaker
//! and leaks no permit. In client mode, keyed mode and server mode.

use std::{any::Any, panic::AssertUnwindSafe, time::Duration};

use futures_util::FutureExt;
use tower::{Service, ServiceExt, service_fn};
use tower_breaker::{
    Backoff, Breaker, BreakerBuilder, Clock, Jitter, State, keyed::KeyedBreakerLayer,
};
use tower_fault::BoxError;
use tower_layer::Layer;

type Req = http::Request<()>;

const S: Duration = Duration::from_secs(1);

/// Panics in `call` for `/call`, in its future for `/future`; answers 200 otherwise.
fn upstream()
-> impl Service<Req, Response = http::Response<()>, Error = BoxError, Future: Send + 'static> + Clone
{
    service_fn(|req: Req| {
        assert!(req.uri().path() != "/call", "panicked in call");
        let in_future = req.uri().path() == "/future";
        async move {
            assert!(!in_future, "panicked in the future");
            Ok(http::Response::new(()))
        }
    })
}

fn message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(not a string)".to_owned(), |s| (*s).to_owned()),
    }
}

/// Sends a request to `path`; `Err` holds the message of a panic that reached the caller.
async fn send<S>(svc: &mut S, path: &str) -> Result<Result<S::Response, S::Error>, String>
where
    S: Service<Req>,
{
    let Ok(svc) = svc.ready().await else {
        panic!("the service was not ready")
    };
    let req = http::Request::get(format!("http://upstream.test{path}"))
        .body(())
        .unwrap();
    let future = std::panic::catch_unwind(AssertUnwindSafe(|| svc.call(req))).map_err(message)?;
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(message)
}

/// Two panics, one in `call` and one in the future, trip a breaker that opens after two
/// failures in a row; each panic reaches the caller with its own message.
async fn panics_trip<S: Service<Req>>(svc: &mut S, breaker: impl Fn() -> Breaker) {
    assert_eq!(send(svc, "/call").await.err().unwrap(), "panicked in call");
    assert_eq!(
        breaker().counts().failures,
        1,
        "a panic in call is a failure"
    );
    assert_eq!(breaker().state(), State::Closed);
    assert_eq!(
        send(svc, "/future").await.err().unwrap(),
        "panicked in the future"
    );
    assert_eq!(breaker().state(), State::Open, "{:?}", breaker().counts());
}

fn trips_after_two() -> BreakerBuilder {
    Breaker::builder()
        .clock(Clock::Tokio)
        .name("up")
        .consecutive_failures(2)
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_service_counts_as_a_failure_in_client_mode() {
    let breaker = trips_after_two().build().unwrap();
    let mut svc = breaker.layer().layer(upstream());
    send(&mut svc, "/ok").await.unwrap().unwrap();
    panics_trip(&mut svc, || breaker.clone()).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_service_counts_as_a_failure_in_server_mode() {
    let breaker = trips_after_two().build().unwrap();
    let mut svc = breaker.layer().server_mode().layer(upstream());
    panics_trip(&mut svc, || breaker.clone()).await;
    let rejected = send(&mut svc, "/ok").await.unwrap().unwrap();
    assert_eq!(rejected.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_service_counts_as_a_failure_for_its_key() {
    let layer = KeyedBreakerLayer::builder(trips_after_two())
        .build()
        .unwrap();
    let mut svc = layer.layer(upstream());
    let key = "upstream.test".parse().unwrap();
    send(&mut svc, "/ok").await.unwrap().unwrap();
    panics_trip(&mut svc, || layer.breaker(&key).unwrap()).await;

    let server = KeyedBreakerLayer::builder(trips_after_two())
        .build()
        .unwrap();
    let mut svc = server.clone().server_mode().layer(upstream());
    send(&mut svc, "/ok").await.unwrap().unwrap();
    panics_trip(&mut svc, || server.breaker(&key).unwrap()).await;
    assert_eq!(server.open_count(), 1);
}

/// A probe whose call panics re-opens the breaker (a panic is a failed probe) and takes its
/// permit with it: once the open period is over, the next probe is admitted and closes it.
#[tokio::test(start_paused = true)]
async fn a_probe_that_panics_reopens_the_breaker_and_leaks_no_permit() {
    for path in ["/call", "/future"] {
        let breaker = Breaker::builder()
            .clock(Clock::Tokio)
            .consecutive_failures(1)
            .open_backoff(Backoff::exponential(S, 2.0, 60 * S))
            .open_jitter(Jitter::None)
            .half_open_permits(1)
            .no_half_open_timeout()
            .build()
            .unwrap();
        breaker.try_acquire().unwrap().failure();
        tokio::time::advance(S).await;
        let mut svc = breaker.layer().layer(upstream());
        assert!(
            send(&mut svc, path).await.is_err(),
            "the panic reached the caller"
        );
        assert_eq!(breaker.state(), State::Open, "{path}: the probe failed");
        let wait = breaker.retry_after().unwrap();
        tokio::time::advance(wait).await;
        send(&mut svc, "/ok").await.unwrap().unwrap();
        assert_eq!(
            breaker.state(),
            State::Closed,
            "{path}: the next probe was admitted and closed the breaker"
        );
    }
}
