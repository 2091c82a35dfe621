//! One hyper client serves both the requests a retry layer sends and failover's health probes.
//!
//! A hyper client is typed by its request body: under a `RetryLayer` that body is
//! `ReplayBody<Full<Bytes>>`, and `HttpProbe` builds its requests with the body's `Default`.
//! Without `ReplayBody: Default` the probe needs a second client of its own.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{ServiceBuilder, ServiceExt};
use tower_failover::{Endpoint, EndpointStatus, Failover, HttpProbe, InitialState};
use tower_retry_plus::{ReplayBody, RetryInfo, RetryLayer};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

type Body = ReplayBody<Full<Bytes>>;

#[tokio::test]
async fn one_client_sends_retried_requests_and_health_probes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/healthz"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    // The first order fails once, then succeeds: the retry goes through the same client.
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;

    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    // No traffic until the first probe, sent by this very client, passes.
    let failover = Failover::builder()
        .name("one-client")
        .tier([Endpoint::new("only", server.uri(), client.clone())])
        .probe(HttpProbe::shallow(client, "/healthz").request_body())
        .probe_interval(Duration::from_millis(20))
        .initial_state(InitialState::ProbeFirst)
        .build()
        .unwrap();
    let handle = failover.handle();
    let stack = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(tower_retry_plus::Backoff::constant(Duration::from_millis(
                    5,
                )))
                .idempotency_key(true)
                .build()
                .unwrap(),
        )
        .service(failover);

    let mut healthy = false;
    for _ in 0..250 {
        if handle.endpoint("only").map(|e| e.status) == Some(EndpointStatus::Healthy) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "the probe through the shared client never passed");

    let req = Request::post("/orders")
        .body(Full::new(Bytes::from_static(b"{\"sku\":\"A-1\"}")))
        .unwrap();
    let res = stack.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(RetryInfo::of(&res).attempts, 2);
    let received = server.received_requests().await.unwrap();
    assert!(received.iter().any(|r| r.url.path() == "/healthz"));
    assert_eq!(
        received
            .iter()
            .filter(|r| r.url.path() == "/orders")
            .count(),
        2
    );
}
