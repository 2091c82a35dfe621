//! Every row of the default classification table, produced by real clients (hyper-util's legacy
//! client, reqwest, tower's timeout) against real misbehaving servers.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use test_support::fault::{Action, FaultServer, Reply, refused_addr};
use tower::{ServiceBuilder, ServiceExt};
use tower_fault::{
    BoxError, Class, Classify, Delivery, ErrorKind, HttpClassifier, inspect,
    reqwest::ReqwestService,
};

type HyperClient = Client<HttpConnector, Full<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn post(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .body(Full::new(Bytes::from_static(b"{\"amount\":1}")))
        .unwrap()
}

fn classify_err<E: tower_fault::AsError>(err: &E) -> Class {
    Classify::<Response<()>, E>::classify(&HttpClassifier::default(), Err(err))
}

/// Sends one request through hyper and returns its class and, for errors, the inspected kind.
async fn via_hyper(action: Action) -> (Class, Option<ErrorKind>) {
    let server = FaultServer::with_script([action]).await;
    let outcome = hyper_client().request(post(&server.url("/pay"))).await;
    classify_outcome(outcome.map_err(BoxError::from))
}

async fn via_reqwest(action: Action) -> (Class, Option<ErrorKind>) {
    let server = FaultServer::with_script([action]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let outcome = ReqwestService::new(client)
        .oneshot(post(&server.url("/pay")))
        .await;
    classify_outcome(outcome.map_err(BoxError::from))
}

fn classify_outcome<B>(outcome: Result<Response<B>, BoxError>) -> (Class, Option<ErrorKind>) {
    let classifier = HttpClassifier::default();
    match &outcome {
        Ok(res) => (
            Classify::<Response<B>, BoxError>::classify(&classifier, Ok(res)),
            None,
        ),
        Err(err) => (
            Classify::<Response<B>, BoxError>::classify(&classifier, Err(err)),
            Some(inspect(&**err).kind),
        ),
    }
}

#[tokio::test]
async fn statuses_from_a_real_server() {
    let cases = [
        (200, Class::Success),
        (204, Class::Success),
        (304, Class::Success),
        (400, Class::Permanent),
        (404, Class::Permanent),
        (422, Class::Permanent),
        (408, Class::TRANSIENT),
        (500, Class::TRANSIENT),
        (502, Class::TRANSIENT),
        (504, Class::TRANSIENT),
        (501, Class::Permanent),
        (505, Class::Permanent),
    ];
    for (status, expected) in cases {
        let (class, _) = via_hyper(Action::Respond(Reply::status(status))).await;
        assert_eq!(class, expected, "status {status}");
    }
}

#[tokio::test]
async fn retry_after_on_429_and_503() {
    let (class, _) = via_hyper(Action::Respond(
        Reply::status(429).header("Retry-After", "7"),
    ))
    .await;
    assert_eq!(
        class,
        Class::Transient {
            retry_after: Some(Duration::from_secs(7)),
            delivery: Delivery::NotProcessed
        }
    );
    let (class, _) = via_hyper(Action::Respond(
        Reply::status(503).header("Retry-After", "not-a-number"),
    ))
    .await;
    assert_eq!(class, Class::TRANSIENT);
    let (class, _) = via_reqwest(Action::Respond(
        Reply::status(503).header("Retry-After", "2"),
    ))
    .await;
    assert_eq!(class.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn refused_connection_is_not_processed() {
    let url = format!("http://{}/pay", refused_addr());
    let err = hyper_client().request(post(&url)).await.unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::Connect);
    assert_eq!(classify_err(&err), Class::NOT_PROCESSED);

    let err = reqwest::Client::new().post(&url).send().await.unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::Connect);
    assert_eq!(classify_err(&err), Class::NOT_PROCESSED);
}

#[tokio::test]
async fn reset_after_send_is_transient_and_possibly_processed() {
    for (class, kind) in [
        via_hyper(Action::ResetAfterRequest).await,
        via_reqwest(Action::ResetAfterRequest).await,
    ] {
        assert_eq!(class, Class::TRANSIENT);
        assert!(class.possibly_processed());
        assert_eq!(kind, Some(ErrorKind::Reset));
    }
}

#[tokio::test]
async fn close_before_answer_is_an_incomplete_message() {
    for (class, kind) in [
        via_hyper(Action::CloseAfterRequest).await,
        via_reqwest(Action::CloseAfterRequest).await,
    ] {
        assert_eq!(class, Class::TRANSIENT);
        assert_eq!(kind, Some(ErrorKind::Incomplete));
    }
}

#[tokio::test]
async fn timeouts_from_tower_and_reqwest() {
    let server = FaultServer::with_script([Action::Hang, Action::Hang]).await;
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(hyper_client());
    let err = svc.oneshot(post(&server.url("/"))).await.unwrap_err();
    assert_eq!(inspect(&*err).kind, ErrorKind::Timeout);
    assert_eq!(classify_err(&err), Class::TRANSIENT);

    let (class, kind) = via_reqwest(Action::Hang).await;
    assert_eq!(kind, Some(ErrorKind::Timeout));
    assert_eq!(class, Class::TRANSIENT);
}

#[tokio::test]
async fn invalid_response_is_a_permanent_protocol_error() {
    // A reply whose status line hyper cannot parse.
    let server = FaultServer::with_script([Action::Respond(Reply::status(99))]).await;
    let err = hyper_client()
        .request(post(&server.url("/")))
        .await
        .unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::Protocol, "{err:?}");
    assert_eq!(classify_err(&err), Class::Permanent);
}

#[tokio::test]
async fn invalid_request_is_permanent() {
    // reqwest refuses a relative URI before sending anything.
    let req = Request::post("/relative")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = ReqwestService::new(reqwest::Client::new())
        .oneshot(req)
        .await
        .unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::Request, "{err:?}");
    assert_eq!(classify_err(&err), Class::Permanent);
}

#[tokio::test]
async fn h2_refused_stream_is_not_processed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    });
    let client: HyperClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let err = client
        .request(post(&format!("http://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::RefusedStream, "{err:?}");
    assert_eq!(classify_err(&err), Class::NOT_PROCESSED);
}

/// A GOAWAY carrying REFUSED_STREAM ends every stream still open, including ones the server
/// may have processed: it is a reset (possibly processed), not a refused stream.
#[tokio::test]
async fn h2_goaway_with_refused_stream_code_is_possibly_processed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        if let Some(Ok((_req, _respond))) = conn.accept().await {
            // The request was received (and may have been acted on); then the connection goes.
            conn.abrupt_shutdown(h2::Reason::REFUSED_STREAM);
            while conn.accept().await.is_some() {}
        }
    });
    let client: HyperClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let err = client
        .request(post(&format!("http://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::Reset, "{err:?}");
    assert!(classify_err(&err).possibly_processed(), "{err:?}");
}

/// hyper-util's legacy client refuses a relative URI before sending anything: the caller's
/// bug, permanent, not an upstream failure to retry or count against its health.
#[tokio::test]
async fn hyper_util_refusing_a_request_is_permanent() {
    let req = Request::post("/relative")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = hyper_client().request(req).await.unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::Request, "{err:?}");
    assert_eq!(classify_err(&err), Class::Permanent);
}

#[tokio::test]
async fn reqwest_adapter_round_trip() {
    let server = FaultServer::with_script([Action::Respond(
        Reply::status(201).header("x-a", "1").body("created"),
    )])
    .await;
    let res = ReqwestService::new(reqwest::Client::new())
        .oneshot(post(&server.url("/pay")))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-a"], "1");
    use http_body_util::BodyExt;
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "created"
    );
    let received = server.received();
    assert_eq!(received[0].method, "POST");
    assert_eq!(received[0].body, b"{\"amount\":1}");
}

#[test]
fn infallible_is_classifiable() {
    let ok: Result<&Response<()>, &Infallible> = Ok(&Response::new(()));
    assert!(HttpClassifier::default().classify(ok).is_success());
}

#[tokio::test]
async fn failing_request_body_is_a_permanent_body_error() {
    use http_body_util::StreamBody;
    let server = FaultServer::start().await;
    let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"partial"))),
        Err(std::io::Error::other("the caller's body failed")),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::post(server.url("/pay")).body(body).unwrap();
    let err = ReqwestService::new(reqwest::Client::new())
        .oneshot(req)
        .await
        .unwrap_err();
    assert_eq!(inspect(&err).kind, ErrorKind::Body, "{err:?}");
    assert_eq!(classify_err(&err), Class::Permanent);
}
