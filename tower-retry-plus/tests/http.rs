//! The retry layer over a real HTTP client (reqwest) against wiremock and a raw-TCP fault server.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use test_support::fault::{Action, FaultServer, Reply, refused_addr};
use tower::{Layer, Service, ServiceExt};
use tower_fault::{IDEMPOTENCY_KEY, reqwest::ReqwestService};
use tower_retry_plus::{
    Backoff, BodyTimeoutLayer, DEFAULT_DEADLINE, Jitter, RetryInfo, RetryLayer, RetryLayerBuilder,
    RetryOutcome,
    error::{BodyTimedOut, DeadlineExceeded},
};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

fn fast() -> RetryLayerBuilder {
    RetryLayer::builder()
        .backoff(Backoff::constant(Duration::from_millis(5)))
        .jitter(Jitter::None)
        .no_budget()
}

/// Counts the attempts that reach the client.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S: Service<R>, R> Service<R> for Counting<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}

fn client() -> (Counting<ReqwestService>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder().build().unwrap();
    (
        Counting {
            inner: ReqwestService::new(client),
            calls: Arc::clone(&calls),
        },
        calls,
    )
}

type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn chunked(chunks: Vec<Bytes>) -> Chunks {
    StreamBody::new(stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok(Frame::data(c)))
            .collect::<Vec<_>>(),
    ))
}

#[tokio::test]
async fn wiremock_503_503_200() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("done"))
        .mount(&server)
        .await;
    let (client, _) = client();
    let svc = fast().build().unwrap().layer(client);
    let req = Request::get(format!("{}/items", server.uri()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.extensions().get::<RetryInfo>().unwrap().attempts, 3);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn every_attempt_carries_the_same_head() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let (client, _) = client();
    let svc = fast().build().unwrap().layer(client);
    let mut secret = http::HeaderValue::from_static("Bearer 0123456789abcdef");
    secret.set_sensitive(true);
    let req = Request::put(format!("{}/orders/7?expand=items&x=%20y", server.uri()))
        .header("content-type", "application/json")
        .header("authorization", secret)
        .header("accept", "application/json")
        .header("accept", "text/plain")
        .header("x-request-id", "4f1c2a9e-6b7d-4e0a-9c3b-2d8f5a1e7c60")
        .header(
            "x-opaque",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 204);
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    let first = &received[0];
    assert_eq!(first.url.path(), "/orders/7");
    assert_eq!(first.url.query(), Some("expand=items&x=%20y"));
    let accept: Vec<_> = first.headers.get_all("accept").iter().collect();
    assert_eq!(accept, ["application/json", "text/plain"]);
    assert_eq!(first.headers["x-opaque"].as_bytes(), b"caf\xc3\xa9");
    for retry in &received[1..] {
        assert_eq!(retry.method, first.method);
        assert_eq!(retry.url, first.url);
        assert_eq!(retry.headers, first.headers, "a retry's headers differ");
        assert_eq!(retry.body, b"{}");
    }
}

#[tokio::test]
async fn streamed_post_with_stamped_key_is_replayed_identical() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/payments"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let (client, _) = client();
    let svc = fast().idempotency_key(true).build().unwrap().layer(client);
    let chunks: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(format!("chunk-{i:03};")))
        .collect();
    let expected: Vec<u8> = chunks.concat();
    let req = Request::post(format!("{}/payments", server.uri()))
        .body(chunked(chunks))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 201);
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    let key = received[0]
        .headers
        .get(IDEMPOTENCY_KEY.as_str())
        .expect("key stamped")
        .clone();
    for r in &received {
        assert_eq!(r.body, expected, "body differs on a replay");
        assert_eq!(r.headers.get(IDEMPOTENCY_KEY.as_str()), Some(&key));
    }
}

#[tokio::test]
async fn over_limit_stream_reaches_the_server_whole_once() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let (client, calls) = client();
    let svc = fast().max_replay_bytes(1024).build().unwrap().layer(client);
    let chunks: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; 100])).collect();
    let expected: Vec<u8> = chunks.concat();
    let req = Request::put(format!("{}/blob", server.uri()))
        .body(chunked(chunks))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.extensions().get::<RetryInfo>().unwrap().outcome,
        RetryOutcome::NotReplayable
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, expected);
}

#[tokio::test]
async fn post_against_a_refused_port_is_retried() {
    let (client, calls) = client();
    let svc = fast().max_attempts(3).build().unwrap().layer(client);
    let req = Request::post(format!("http://{}/pay", refused_addr()))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    let err = err
        .downcast_ref::<reqwest::Error>()
        .expect("the client's error is returned");
    assert!(err.is_connect(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn post_reset_after_send_is_retried_only_with_a_key() {
    let server = FaultServer::with_script([Action::ResetAfterRequest]).await;
    let (client, _) = client();
    let svc = fast().build().unwrap().layer(client);
    let req = Request::post(server.url("/pay"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert!(err.downcast_ref::<reqwest::Error>().is_some(), "{err}");
    assert_eq!(
        server.requests(),
        1,
        "a POST that reached the server was sent again"
    );

    server.push(Action::ResetAfterRequest);
    let req = Request::post(server.url("/pay"))
        .header(IDEMPOTENCY_KEY, "order-7")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.requests(), 3);
    let received = server.received();
    assert_eq!(received[1].body, received[2].body);
}

#[tokio::test]
async fn get_survives_resets_and_truncated_connections() {
    let server = FaultServer::with_script([
        Action::ResetAfterRequest,
        Action::CloseAfterRequest,
        Action::Respond(Reply::status(200).body("finally")),
    ])
    .await;
    let (client, _) = client();
    let svc = fast().build().unwrap().layer(client);
    let req = Request::get(server.url("/x"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn hanging_upstream_is_cut_by_the_attempt_timeout() {
    let server = FaultServer::with_script([Action::Hang]).await;
    let (client, _) = client();
    let svc = fast()
        .attempt_timeout(Duration::from_millis(200))
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(client);
    let req = Request::get(server.url("/slow"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let started = std::time::Instant::now();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.requests(), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Issue 16: `RetryLayer::default()` had no deadline, so an upstream that accepts and never
/// answers held the caller forever. The default deadline ends it (on the paused clock: the
/// runtime jumps to the deadline once nothing else can happen).
#[tokio::test(start_paused = true)]
async fn the_default_layer_ends_a_hanging_upstream_at_its_deadline() {
    let server = FaultServer::with_script([Action::Hang]).await;
    let (client, calls) = client();
    let svc = RetryLayer::default().layer(client);
    let req = Request::get(server.url("/never"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let start = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(3600), svc.oneshot(req))
        .await
        .expect("the default layer waited on a hanging upstream for an hour");
    let err = result.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(start.elapsed(), DEFAULT_DEADLINE);
    assert_eq!((calls.load(Ordering::SeqCst), server.requests()), (1, 1));
}

/// The deadline ends when the response head is returned; a body that stalls after its head is
/// bounded only by `BodyTimeoutLayer` (a real server sending half a body, then nothing).
#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_bounded_by_the_body_timeout_not_the_deadline() {
    use http_body_util::BodyExt;

    let stalled = || Action::StalledBody(Reply::status(200).body("0123456789"));
    let server = FaultServer::with_script([stalled(), stalled()]).await;
    let req = || {
        Request::get(server.url("/report"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // The retry layer alone: its deadline does not cover the body.
    let (upstream, _) = client();
    let res = RetryLayer::default().layer(upstream).oneshot(req()).await;
    let body = res.unwrap().into_body();
    let read = tokio::time::timeout(2 * DEFAULT_DEADLINE, body.collect()).await;
    assert!(read.is_err(), "the stalled body ended: {read:?}");

    // With the body timeout outside it: half the body, then `BodyTimedOut` at its time.
    let (upstream, _) = client();
    let svc = tower::ServiceBuilder::new()
        .layer(BodyTimeoutLayer::new(Duration::from_secs(5)).unwrap())
        .layer(RetryLayer::default())
        .service(upstream);
    let res = svc.oneshot(req()).await.unwrap();
    let head_at = tokio::time::Instant::now();
    let mut body = res.into_body();
    let mut got: Vec<u8> = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(frame)) => got.extend_from_slice(&frame.into_data().unwrap()[..]),
            Some(Err(err)) => break err,
            None => panic!("the body ended without its second half"),
        }
    };
    assert!(err.is::<BodyTimedOut>(), "{err}");
    assert_eq!(got, b"01234");
    assert_eq!(head_at.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn works_over_the_hyper_util_legacy_client() {
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    let server = FaultServer::with_script([
        Action::Respond(Reply::status(503).header("retry-after", "0")),
        Action::ResetAfterRequest,
    ])
    .await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let svc = fast().build().unwrap().layer(client);
    let req = Request::put(server.url("/doc"))
        .body(Full::new(Bytes::from_static(b"v2")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.extensions().get::<RetryInfo>().unwrap().attempts, 3);
    let bodies: Vec<_> = server.received().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [b"v2".to_vec(), b"v2".to_vec(), b"v2".to_vec()]);
}
