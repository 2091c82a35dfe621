//! Shared test helpers: an axum app that counts executions, a loopback server, a client.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use tower_idempotency::{
    FencingToken, Fingerprint, IdempotencyKey, IdempotencyLayer, IdempotencyStore, RecordKey,
    Scope,
    record::{CompletedRecord, Outcome, StoredResponse},
    store::Claim,
};

/// What the handler does, shared by every route of the app.
#[derive(Clone, Default)]
pub struct Handler {
    pub executions: Arc<AtomicUsize>,
    pub delay: Duration,
    /// Status of the first `fail_first` executions (then 201).
    pub fail_status: Option<StatusCode>,
    pub fail_first: usize,
    /// Size of the response body (0: a short text).
    pub body_len: usize,
    /// How long the response body takes to produce its one frame once the handler answered
    /// (work done while it is polled, as with `Body::from_stream`).
    pub body_delay: Duration,
}

impl Handler {
    pub fn count(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }
}

async fn handle(State(h): State<Handler>, req: Request) -> Response {
    let n = h.executions.fetch_add(1, Ordering::SeqCst) + 1;
    let token = req.extensions().get::<FencingToken>().map(|t| t.get());
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    if !h.delay.is_zero() {
        tokio::time::sleep(h.delay).await;
    }
    if let Some(status) = h.fail_status
        && n <= h.fail_first
    {
        return (status, "try again").into_response();
    }
    let text = if h.body_len > 0 {
        "x".repeat(h.body_len)
    } else {
        format!(
            "execution {n} token {token:?} body {}",
            String::from_utf8_lossy(&body)
        )
    };
    let body = if h.body_delay.is_zero() {
        Body::from(text)
    } else {
        Body::new(Delayed::new(h.body_delay, text))
    };
    Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "text/plain")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("set-cookie", "session=secret")
        .header("www-authenticate", "Bearer")
        .body(body)
        .unwrap()
}

/// A body that yields its one frame `delay` after it is first polled (work done while it is
/// polled, as with `Body::from_stream`).
pub struct Delayed {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    data: Option<bytes::Bytes>,
}

impl Delayed {
    pub fn new(delay: Duration, data: impl Into<bytes::Bytes>) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(delay)),
            data: Some(data.into()),
        }
    }
}

impl http_body::Body for Delayed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::ready!(self.sleep.as_mut().poll(cx));
        std::task::Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }
}

/// Sends a keyed `POST /orders` over a raw HTTP/1.1 connection and closes the connection
/// `after` that, before the response arrives: a client whose timeout fired.
pub async fn post_and_hang_up(addr: SocketAddr, key: &str, after: Duration) {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!(
            "POST /orders HTTP/1.1\r\nhost: x\r\nidempotency-key: {key}\r\n\
             content-type: text/plain\r\ncontent-length: 1\r\n\r\nx"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(after).await;
    drop(conn);
}

/// `POST /orders` and `POST /other`, both counting into `handler`.
pub fn app<St: IdempotencyStore>(handler: Handler, layer: IdempotencyLayer<St>) -> Router {
    Router::new()
        .route("/orders", post(handle))
        .route("/other", post(handle))
        .with_state(handler)
        .layer(layer)
}

/// Serves `app` on a loopback port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A POST with a key (and optional principal) and a body.
pub async fn post_key(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    key: &str,
    auth: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = client
        .post(format!("http://{addr}{path}"))
        .header("idempotency-key", key)
        .header("content-type", "text/plain")
        .body(body.to_owned());
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send().await.unwrap()
}

/// A keyed `POST /orders` with extra request headers (credentials, say) and a body.
pub async fn post_with(
    client: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Response {
    let mut req = client
        .post(format!("http://{addr}/orders"))
        .header("idempotency-key", key)
        .header("content-type", "text/plain")
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// The `type` of a problem+json body.
pub async fn problem_type(res: reqwest::Response) -> String {
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let doc: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    doc["type"].as_str().unwrap().to_owned()
}

/// A stale owner (its lease expired, someone else claimed) cannot complete, renew or release.
pub async fn stale_owner_is_fenced<St, F, Fut>(store: &St, lease: Duration, pass: F)
where
    St: IdempotencyStore,
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let key = RecordKey::new(&Scope::new("fence"), &IdempotencyKey::generate());
    let fp = Fingerprint::from_bytes([7; 32]);
    let Claim::Acquired(stale) = store.claim(&key, &fp, lease).await.unwrap() else {
        panic!("free key")
    };
    pass(lease + Duration::from_millis(50)).await;
    let Claim::Acquired(fresh) = store.claim(&key, &fp, lease).await.unwrap() else {
        panic!("lease expired")
    };
    assert!(fresh > stale, "tokens grow: {fresh:?} > {stale:?}");
    let record = |body: &'static str| CompletedRecord {
        fingerprint: fp,
        outcome: Outcome::Response(StoredResponse {
            status: StatusCode::OK,
            headers: vec![],
            body: body.into(),
            trailers: vec![],
        }),
    };
    let ttl = Duration::from_secs(60);
    assert!(!store.renew(&key, stale, lease).await.unwrap());
    assert!(
        !store
            .complete(&key, stale, &record("stale"), ttl)
            .await
            .unwrap()
    );
    assert!(!store.release(&key, stale).await.unwrap());
    assert!(
        store
            .complete(&key, fresh, &record("fresh"), ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete(&key, fresh, &record("again"), ttl)
            .await
            .unwrap(),
        "completed records are final"
    );
    match store.claim(&key, &fp, lease).await.unwrap() {
        Claim::Completed(rec) => assert_eq!(*rec, record("fresh")),
        other => panic!("expected the fresh record, got {other:?}"),
    }
}

/// A lease short enough for a test to outlast: what a layer under
/// [`outcome_is_recorded_for_a_client_gone_mid_body`] must be built with.
pub const SHORT_LEASE: Duration = Duration::from_millis(150);

/// The handler charges and answers 201 with a body that takes a moment; the client closes its
/// connection before the body is read (its timeout fired), so hyper drops the layer's future
/// while the layer reads that body to store it. The outcome must be recorded all the same: the
/// client's retry, once the lease (`SHORT_LEASE`) is long over, gets the replay — never a
/// second execution.
pub async fn outcome_is_recorded_for_a_client_gone_mid_body<St: IdempotencyStore>(
    layer: IdempotencyLayer<St>,
) {
    let handler = Handler {
        body_delay: Duration::from_millis(300),
        ..Handler::default()
    };
    let addr = serve(app(handler.clone(), layer)).await;
    post_and_hang_up(addr, "k-gone", Duration::from_millis(100)).await;
    assert_eq!(handler.count(), 1, "the handler ran before the client left");
    // The body is done at 300 ms; a claim left behind would have expired by about 250 ms.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let retry = post_key(&client(), addr, "/orders", "k-gone", None, "x").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "the retry executed again"
    );
    assert!(retry.text().await.unwrap().starts_with("execution 1 "));
    assert_eq!(handler.count(), 1);
}
