//! The full client stack against wiremock and the raw-TCP fault server.

use std::time::Duration;

use http_body_util::BodyExt;
use resilience_examples::stack::{ClientSettings, ProtectedClient};
use resilience_tests::payment_request;
use test_support::fault::{Action, FaultServer, Reply};
use tower::{ServiceBuilder, ServiceExt};
use tower_failover::{Endpoint, Failover};
use tower_fault::reqwest::ReqwestService;
use tower_retry_plus::{Backoff, RetryInfo, RetryLayer};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

async fn healthy(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/healthz"))
        .respond_with(ResponseTemplate::new(200))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_503_on_the_primary_is_retried_on_the_standby_with_the_same_key() {
    let (primary, standby) = (MockServer::start().await, MockServer::start().await);
    healthy(&primary).await;
    healthy(&standby).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&primary)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("{\"ok\":true}"))
        .expect(1)
        .mount(&standby)
        .await;
    let client =
        ProtectedClient::new(&primary.uri(), &standby.uri(), &ClientSettings::default()).unwrap();

    let res = client
        .stack()
        .oneshot(payment_request("", "p1", 5))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.extensions().get::<RetryInfo>().unwrap().attempts, 2);

    let key = |reqs: Vec<wiremock::Request>| {
        let post = reqs
            .into_iter()
            .find(|r| r.method.as_str() == "POST")
            .unwrap();
        post.headers["idempotency-key"].to_str().unwrap().to_owned()
    };
    let first = key(primary.received_requests().await.unwrap());
    let second = key(standby.received_requests().await.unwrap());
    assert_eq!(first, second, "one key per payment, on every attempt");
    assert!(tower_fault::IdempotencyKey::parse_str(&first).is_ok());
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_for() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&upstream)
        .await;
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::constant(Duration::from_millis(1)))
                .build()
                .unwrap(),
        )
        .service(ReqwestService::new(reqwest::Client::new()));

    let started = std::time::Instant::now();
    // No idempotency key: a 429 proves the request was not processed, so a POST is retried.
    let res = client
        .oneshot(payment_request(&upstream.uri(), "p", 1))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn resets_and_dropped_connections_are_retried_with_the_same_key_and_body() {
    let server = FaultServer::with_script([
        Action::ResetAfterRequest,
        Action::CloseAfterRequest,
        Action::Respond(Reply::status(201).body("created")),
    ])
    .await;
    let failover = Failover::builder()
        .name("single")
        .tier([Endpoint::new(
            "only",
            server.url("").as_str(),
            ReqwestService::new(reqwest::Client::new()),
        )])
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::constant(Duration::from_millis(1)))
                .idempotency_key(true)
                .build()
                .unwrap(),
        )
        .service(failover);

    let res = client.oneshot(payment_request("", "p1", 5)).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.extensions().get::<RetryInfo>().unwrap().attempts, 3);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "created"
    );

    let received = server.received();
    assert_eq!(received.len(), 3);
    let key = received[0]
        .header("idempotency-key")
        .expect("a key is stamped");
    assert!(
        received
            .iter()
            .all(|r| r.header("idempotency-key") == Some(key))
    );
    // The body is replayed byte for byte.
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["id"], "p1");
    assert!(received.iter().all(|r| r.body == received[0].body));
}

#[tokio::test]
async fn an_attempt_that_times_out_on_a_hung_primary_is_retried_on_the_standby() {
    // The primary accepts the request and never answers: the retry layer's attempt timeout
    // cancels the attempt, which therefore returns nothing that names the endpoint. Failover
    // wrote where it sent it (`SentTo`), so the retry goes to the standby instead of hanging on
    // the primary again.
    let primary = FaultServer::with_script([Action::Hang, Action::Hang, Action::Hang]).await;
    let standby =
        FaultServer::with_script([Action::Respond(Reply::status(201).body("created"))]).await;
    let http = ReqwestService::new(reqwest::Client::new());
    let failover = Failover::builder()
        .name("hung-primary")
        .tier([Endpoint::new(
            "primary",
            primary.url("").as_str(),
            http.clone(),
        )])
        .tier([Endpoint::new("standby", standby.url("").as_str(), http)])
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::constant(Duration::from_millis(1)))
                .attempt_timeout(Duration::from_millis(300))
                .idempotency_key(true)
                .build()
                .unwrap(),
        )
        .service(failover);

    let res = client.oneshot(payment_request("", "p1", 5)).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(RetryInfo::of(&res).attempts, 2);
    assert_eq!(
        primary.received().len(),
        1,
        "the hung primary got one attempt"
    );
    assert_eq!(standby.received().len(), 1);
}
