//! The layer over the memory store, on real axum servers (and in-process routers where the
//! clock is paused).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{body::Body, http::StatusCode};
use common::{Handler, app, client, post_key, problem_type, serve};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_idempotency::{
    Concurrency, IdempotencyKey, IdempotencyLayer, IdempotencyStore, MemoryStore, OutagePolicy,
    RecordKey, Scope, metrics, problems, store::Claim,
};

fn slow(delay_ms: u64) -> Handler {
    Handler {
        delay: Duration::from_millis(delay_ms),
        ..Handler::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_duplicates_execute_once_and_the_rest_get_409() {
    let handler = slow(600);
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let client = client();
    let mut set = JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        set.spawn(async move { post_key(&client, addr, "/orders", "k-50", None, "item").await });
    }
    let (mut created, mut conflicts) = (0, 0);
    while let Some(res) = set.join_next().await {
        let res = res.unwrap();
        match res.status().as_u16() {
            201 => created += 1,
            409 => {
                assert_eq!(res.headers()["retry-after"], "1");
                assert_eq!(problem_type(res).await, problems::IN_FLIGHT);
                conflicts += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, conflicts), (1, 49));
    assert_eq!(handler.count(), 1);

    // Once complete, a duplicate is a byte-identical replay with the marker.
    let first_body = "execution 1 token Some";
    let replay = post_key(&client, addr, "/orders", "k-50", None, "item").await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert!(replay.text().await.unwrap().starts_with(first_body));
    assert_eq!(handler.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_gives_every_duplicate_the_replay() {
    let handler = slow(300);
    let layer = IdempotencyLayer::builder()
        .concurrency(Concurrency::Wait {
            max: Duration::from_secs(10),
        })
        .build()
        .unwrap();
    let addr = serve(app(handler.clone(), layer)).await;
    let client = client();
    let mut set = JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        set.spawn(async move {
            let res = post_key(&client, addr, "/orders", "k-wait", None, "item").await;
            let replayed = res.headers().contains_key("idempotent-replayed");
            (res.status(), replayed, res.text().await.unwrap())
        });
    }
    let mut bodies = Vec::new();
    let mut replays = 0;
    while let Some(res) = set.join_next().await {
        let (status, replayed, body) = res.unwrap();
        assert_eq!(status, 201);
        replays += usize::from(replayed);
        bodies.push(body);
    }
    assert_eq!(handler.count(), 1);
    assert_eq!(replays, 49);
    assert!(bodies.iter().all(|b| b == &bodies[0]));
}

#[tokio::test]
async fn replay_is_byte_identical_keeps_multi_values_and_drops_secrets() {
    let handler = Handler::default();
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let client = client();
    let first = post_key(&client, addr, "/orders", "k-replay", None, "payload").await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(
        first.headers().get_all("set-cookie").iter().count(),
        1,
        "the original is untouched"
    );
    let first_body = first.bytes().await.unwrap();

    let again = post_key(&client, addr, "/orders", "k-replay", None, "payload").await;
    assert_eq!(again.status(), 201);
    let headers = again.headers().clone();
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["content-type"], "text/plain");
    let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert!(headers.get("set-cookie").is_none());
    assert!(headers.get("www-authenticate").is_none());
    assert_eq!(again.bytes().await.unwrap(), first_body);
    assert_eq!(handler.count(), 1);
}

#[tokio::test]
async fn same_key_with_another_body_or_route_is_422() {
    let handler = Handler::default();
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let client = client();
    assert_eq!(
        post_key(&client, addr, "/orders", "k-fp", None, "a")
            .await
            .status(),
        201
    );
    let other_body = post_key(&client, addr, "/orders", "k-fp", None, "b").await;
    assert_eq!(other_body.status(), 422);
    assert_eq!(problem_type(other_body).await, problems::KEY_REUSED);
    let other_route = post_key(&client, addr, "/other", "k-fp", None, "a").await;
    assert_eq!(other_route.status(), 422);
    assert_eq!(handler.count(), 1);
}

/// By default records are bound to the caller's credentials: another `Authorization` (or
/// none) with the same key is refused, neither replayed alice's response nor run.
#[tokio::test]
async fn principals_with_the_same_key_are_isolated() {
    let handler = Handler::default();
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let client = client();
    let shared_key = |auth| post_key(&client, addr, "/orders", "shared", auth, "x");
    let alice = shared_key(Some("Bearer alice")).await;
    assert_eq!(alice.status(), 201);
    let alice_body = alice.text().await.unwrap();
    for auth in [Some("Bearer bob"), None] {
        let other = shared_key(auth).await;
        assert_eq!(other.status(), 422, "{auth:?}");
        assert_ne!(other.text().await.unwrap(), alice_body);
    }
    let alice_again = shared_key(Some("Bearer alice")).await;
    assert_eq!(alice_again.headers()["idempotent-replayed"], "true");
    assert_eq!(alice_again.text().await.unwrap(), alice_body);
    assert_eq!(handler.count(), 1);
}

/// With `authorization_principal` the `Authorization` header scopes records: each caller has
/// the key to itself, and requests without one share the anonymous scope.
#[tokio::test]
async fn authorization_principals_each_have_their_own_keys() {
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .principal(tower_idempotency::authorization_principal)
        .build()
        .unwrap();
    let addr = serve(app(handler.clone(), layer)).await;
    let client = client();
    let shared_key = |auth| post_key(&client, addr, "/orders", "shared", auth, "x");
    let alice_body = shared_key(Some("Bearer alice")).await.text().await.unwrap();
    let bob_body = shared_key(Some("Bearer bob")).await.text().await.unwrap();
    assert_ne!(alice_body, bob_body);
    assert_eq!(handler.count(), 2);
    let alice_again = shared_key(Some("Bearer alice")).await;
    assert_eq!(alice_again.text().await.unwrap(), alice_body);
    let anon = shared_key(None).await;
    assert_eq!(anon.status(), 201);
    assert!(anon.headers().get("idempotent-replayed").is_none());
    assert_eq!(handler.count(), 3);
}

/// The user an authentication middleware found from the session cookie.
#[derive(Clone)]
struct UserId(String);

/// Finds the user from the `session` cookie, ignoring every other cookie.
async fn authenticate(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user = req
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("session="))
        .map(|user| UserId(user.to_owned()));
    if let Some(user) = user {
        req.extensions_mut().insert(user);
    }
    next.run(req).await
}

/// An app's own principal (from an axum extension its auth middleware sets) scopes records:
/// alice's retry whose cookie jar changed gets her replay, and bob has the key to himself.
#[tokio::test]
async fn an_app_principal_from_an_extension_survives_a_changed_cookie_jar() {
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .principal(|parts| {
            let user = parts.extensions.get::<UserId>()?;
            Some(Scope::new(&user.0))
        })
        .require_principal()
        .build()
        .unwrap();
    let router = app(handler.clone(), layer).layer(axum::middleware::from_fn(authenticate));
    let addr = serve(router).await;
    let client = client();
    let first =
        common::post_with(&client, addr, "k-app", &[("cookie", "session=alice")], "x").await;
    assert_eq!(first.status(), 201);
    let alices = first.text().await.unwrap();
    let changed = [("cookie", "session=alice; theme=dark")];
    let retry = common::post_with(&client, addr, "k-app", &changed, "x").await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), alices);
    let bob = common::post_with(&client, addr, "k-app", &[("cookie", "session=bob")], "x").await;
    assert_eq!(bob.status(), 201);
    assert!(bob.headers().get("idempotent-replayed").is_none());
    assert_ne!(bob.text().await.unwrap(), alices);
    assert_eq!(handler.count(), 2);
    // No session: no principal, and `require_principal` refuses it whatever else it carries.
    let stranger =
        common::post_with(&client, addr, "k-app", &[("cookie", "theme=dark")], "x").await;
    assert_eq!(stranger.status(), 401);
    assert_eq!(handler.count(), 2);
}

#[tokio::test]
async fn transient_outcome_releases_the_key_for_the_retry() {
    let handler = Handler {
        fail_status: Some(StatusCode::SERVICE_UNAVAILABLE),
        fail_first: 1,
        ..Handler::default()
    };
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let client = client();
    assert_eq!(
        post_key(&client, addr, "/orders", "k-5xx", None, "x")
            .await
            .status(),
        503
    );
    let retry = post_key(&client, addr, "/orders", "k-5xx", None, "x").await;
    assert_eq!(retry.status(), 201);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(handler.count(), 2);
    // A permanent 4xx is kept like a success.
    let handler = Handler {
        fail_status: Some(StatusCode::BAD_REQUEST),
        fail_first: 1,
        ..Handler::default()
    };
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    assert_eq!(
        post_key(&client, addr, "/orders", "k-4xx", None, "x")
            .await
            .status(),
        400
    );
    let replay = post_key(&client, addr, "/orders", "k-4xx", None, "x").await;
    assert_eq!(replay.status(), 400);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(handler.count(), 1);
}

#[tokio::test]
async fn inner_errors_release_the_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(IdempotencyLayer::default())
        .service(service_fn(move |_req: Request<Body>| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("upstream down")
                } else {
                    Ok(Response::new(Body::from("ok")))
                }
            }
        }));
    let req = || {
        Request::post("/x")
            .header("idempotency-key", "k-err")
            .body(Body::from("b"))
            .unwrap()
    };
    assert_eq!(
        svc.clone().oneshot(req()).await.unwrap_err(),
        "upstream down"
    );
    assert_eq!(svc.clone().oneshot(req()).await.unwrap().status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn oversized_request_is_413_and_oversized_response_streams_then_refuses_replay() {
    let handler = Handler {
        body_len: 4096,
        ..Handler::default()
    };
    let layer = IdempotencyLayer::builder()
        .max_request_bytes(16)
        .max_response_bytes(1024)
        .build()
        .unwrap();
    let addr = serve(app(handler.clone(), layer)).await;
    let client = client();
    let big = post_key(&client, addr, "/orders", "k-413", None, &"y".repeat(17)).await;
    assert_eq!(big.status(), 413);
    assert_eq!(problem_type(big).await, problems::REQUEST_TOO_LARGE);
    assert_eq!(handler.count(), 0);

    let first = post_key(&client, addr, "/orders", "k-big", None, "small").await;
    assert_eq!(first.status(), 201);
    assert_eq!(
        first.bytes().await.unwrap().len(),
        4096,
        "streamed untouched"
    );
    let again = post_key(&client, addr, "/orders", "k-big", None, "small").await;
    assert_eq!(again.status(), 409);
    assert!(again.headers().get("retry-after").is_none());
    assert_eq!(problem_type(again).await, problems::NOT_REPLAYABLE);
    assert_eq!(handler.count(), 1, "never a second execution");
}

#[tokio::test]
async fn keys_and_principals_are_validated() {
    let handler = Handler::default();
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let client = client();
    // No key: passes through without dedup.
    for _ in 0..2 {
        let res = client
            .post(format!("http://{addr}/orders"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    assert_eq!(handler.count(), 2);
    let invalid = post_key(&client, addr, "/orders", "has space", None, "x").await;
    assert_eq!(invalid.status(), 400);
    assert_eq!(problem_type(invalid).await, problems::INVALID_KEY);
    let quoted = post_key(&client, addr, "/orders", "\"sf-key\"", None, "x").await;
    assert_eq!(quoted.status(), 201);
    let bare = post_key(&client, addr, "/orders", "sf-key", None, "x").await;
    assert_eq!(
        bare.headers()["idempotent-replayed"],
        "true",
        "sf-string and bare token are one key"
    );

    let strict = IdempotencyLayer::builder()
        .require_key()
        .require_principal()
        .build()
        .unwrap();
    let addr = serve(app(Handler::default(), strict)).await;
    let res = client
        .post(format!("http://{addr}/orders"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(problem_type(res).await, problems::MISSING_KEY);
    let res = post_key(&client, addr, "/orders", "k", None, "x").await;
    assert_eq!(res.status(), 401);
    assert_eq!(problem_type(res).await, problems::MISSING_PRINCIPAL);
    assert_eq!(
        post_key(&client, addr, "/orders", "k", Some("Bearer a"), "x")
            .await
            .status(),
        201
    );
    // Any credential identifies a caller when there is no app principal.
    let cookie = common::post_with(&client, addr, "k-cookie", &[("cookie", "session=a")], "x");
    assert_eq!(cookie.await.status(), 201);
}

async fn call(router: &axum::Router, key: &str) -> (StatusCode, bool, String) {
    let req = Request::post("/orders")
        .header("idempotency-key", key)
        .body(Body::from("x"))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let replayed = res.headers().contains_key("idempotent-replayed");
    let status = res.status();
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, replayed, body)
}

#[tokio::test(start_paused = true)]
async fn completed_records_expire_after_the_ttl() {
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let router = app(handler.clone(), layer);
    assert!(!call(&router, "k-ttl").await.1);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(call(&router, "k-ttl").await.1, "replayed within the TTL");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!call(&router, "k-ttl").await.1, "executed again after it");
    assert_eq!(handler.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_owners_lease_expires_and_the_next_request_executes() {
    let store = MemoryStore::default();
    let key = RecordKey::new(
        &Scope::anonymous(),
        &IdempotencyKey::parse_str("k-crash").unwrap(),
    );
    let parts = Request::post("/orders")
        .header("content-type", "text/plain")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let fp = tower_idempotency::Fingerprint::compute(&parts, &[http::header::CONTENT_TYPE], b"x");
    // A process claims the key and dies without completing.
    let lease = Duration::from_secs(30);
    assert!(matches!(
        store.claim(&key, &fp, lease).await.unwrap(),
        Claim::Acquired(_)
    ));

    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .store(store)
        .lease(lease)
        .build()
        .unwrap();
    let router = app(handler.clone(), layer);
    let req = || {
        Request::post("/orders")
            .header("idempotency-key", "k-crash")
            .header("content-type", "text/plain")
            .body(Body::from("x"))
            .unwrap()
    };
    assert_eq!(router.clone().oneshot(req()).await.unwrap().status(), 409);
    tokio::time::advance(lease + Duration::from_millis(1)).await;
    assert_eq!(router.clone().oneshot(req()).await.unwrap().status(), 201);
    assert_eq!(handler.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_while_a_slow_handler_runs() {
    let handler = slow(10_000);
    let layer = IdempotencyLayer::builder()
        .lease(Duration::from_secs(3))
        .build()
        .unwrap();
    let router = app(handler.clone(), layer);
    let slow_call = tokio::spawn({
        let router = router.clone();
        async move { call(&router, "k-lease").await }
    });
    // Well past the 3 s lease, the key is still held by the running handler.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(call(&router, "k-lease").await.0, StatusCode::CONFLICT);
    let (status, _, first_body) = slow_call.await.unwrap();
    assert_eq!(status, 201);
    let (_, replayed, body) = call(&router, "k-lease").await;
    assert!(replayed);
    assert_eq!(body, first_body);
    assert_eq!(handler.count(), 1);
}

/// The lease is renewed while the layer reads the handler's response body too: a body slower
/// than the lease does not let a duplicate claim the key and execute again.
#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_while_the_response_body_is_read() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::builder()
                .lease(Duration::from_secs(3))
                .build()
                .unwrap(),
        )
        .service(service_fn(move |_req: Request<Body>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = common::Delayed::new(Duration::from_secs(10), "receipt");
                Ok::<_, std::convert::Infallible>(Response::new(Body::new(body)))
            }
        }));
    let req = || {
        Request::post("/pay")
            .header("idempotency-key", "k-slow-body")
            .body(Body::from("x"))
            .unwrap()
    };
    let first = tokio::spawn(svc.clone().oneshot(req()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let duplicate = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::CONFLICT, "still in flight");
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.into_body().collect().await.unwrap().to_bytes(),
        "receipt"
    );
    let replay = svc.oneshot(req()).await.unwrap();
    assert_eq!(
        replay.into_body().collect().await.unwrap().to_bytes(),
        "receipt"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "executed once");
}

#[tokio::test(start_paused = true)]
async fn memory_store_fences_a_stale_owner() {
    common::stale_owner_is_fenced(
        &MemoryStore::default(),
        Duration::from_secs(5),
        |d| async move {
            tokio::time::advance(d).await;
        },
    )
    .await;
}

#[tokio::test]
async fn fencing_token_reaches_the_handler() {
    let handler = Handler::default();
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let body = post_key(&client(), addr, "/orders", "k-token", None, "x")
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("token Some("), "{body}");
}

/// A memory store full of live claims refuses the next claim rather than evict one: 503 when
/// failing closed (executed when failing open), counted as `store_full`.
#[tokio::test]
async fn bounded_memory_store_fails_closed_when_full_of_claims() {
    let capture = test_support::metrics::Capture::start();
    let store = MemoryStore::new(1);
    let fp = tower_idempotency::Fingerprint::from_bytes([1; 32]);
    let a = RecordKey::new(
        &Scope::anonymous(),
        &IdempotencyKey::parse_str("a").unwrap(),
    );
    assert!(matches!(
        store.claim(&a, &fp, Duration::from_secs(60)).await.unwrap(),
        Claim::Acquired(_)
    ));
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .name("full")
        .store(store.clone())
        .build()
        .unwrap();
    let router = app(handler.clone(), layer);
    let (status, _, body) = call(&router, "b").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains(problems::STORE_UNAVAILABLE), "{body}");
    assert_eq!(handler.count(), 0);

    let open = IdempotencyLayer::builder()
        .name("full")
        .store(store)
        .on_store_outage(OutagePolicy::FailOpen)
        .build()
        .unwrap();
    let router = app(handler.clone(), open);
    assert_eq!(call(&router, "b").await.0, StatusCode::CREATED);
    assert_eq!(handler.count(), 1);
    if cfg!(feature = "metrics") {
        let snap = capture.snapshot();
        let count = |result| {
            snap.counter(
                metrics::REQUESTS_TOTAL,
                &[("name", "full"), ("result", result)],
            )
        };
        assert_eq!(count("store_full"), Some(2));
        assert_eq!(count("store_error").unwrap_or(0), 0, "counted as an outage");
    }
}

/// 400 keys whose responses are 1 MiB each, through the default layer: its memory store keeps
/// within a byte budget of a few hundred MiB (the record bound alone would hold all 400 MiB,
/// and 100 000 such responses), dropping the completed records closest to expiry and counting
/// them; the newest keys still replay.
#[tokio::test]
async fn the_default_memory_store_is_bounded_by_bytes() {
    const MIB: usize = 1024 * 1024;
    let layer = IdempotencyLayer::default();
    let store = layer.store().clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_req: Request<Body>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let body = Body::from(bytes::Bytes::from(vec![b'x'; MIB]));
            async move { Ok::<_, std::convert::Infallible>(Response::new(body)) }
        }));
    let req = |i: usize| {
        Request::post("/reports")
            .header("idempotency-key", format!("k-report-{i}"))
            .body(Body::from("b"))
            .unwrap()
    };
    for i in 0..400 {
        let res = svc.clone().oneshot(req(i)).await.unwrap();
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes().len(),
            MIB
        );
    }
    let held = store.len();
    println!("held {held} records of 1 MiB, evicted {}", store.evicted());
    assert!(held * MIB <= 256 * MIB, "{held} MiB of responses held");
    assert_eq!(store.evicted() as usize, 400 - held, "evictions counted");
    let latest = svc.clone().oneshot(req(399)).await.unwrap();
    assert!(latest.headers().contains_key("idempotent-replayed"));
    assert_eq!(calls.load(Ordering::SeqCst), 400);
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn metrics_count_results_and_store_latency() {
    let capture = test_support::metrics::Capture::start();
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder().name("orders").build().unwrap();
    let router = app(handler, layer);
    call(&router, "m1").await;
    call(&router, "m1").await;
    call(&router, "bad key").await;
    let snap = capture.snapshot();
    let count = |result| {
        snap.counter(
            metrics::REQUESTS_TOTAL,
            &[("name", "orders"), ("result", result)],
        )
    };
    assert_eq!(count("executed"), Some(1));
    assert_eq!(count("replayed"), Some(1));
    assert_eq!(count("invalid_key"), Some(1));
    assert_eq!(
        snap.histogram_count(
            metrics::STORE_SECONDS,
            &[("name", "orders"), ("op", "claim")]
        ),
        2
    );
    assert_eq!(
        snap.histogram_count(
            metrics::STORE_SECONDS,
            &[("name", "orders"), ("op", "complete")]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn duration_max_settings_mean_forever_rather_than_a_panic() {
    // `Duration::MAX` as "keep forever" / "wait as long as it takes" must not overflow the clock.
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .ttl(Duration::MAX)
        .lease(Duration::MAX)
        .concurrency(Concurrency::Wait { max: Duration::MAX })
        .build()
        .unwrap();
    let router = app(handler.clone(), layer);
    assert_eq!(call(&router, "k-max").await.0, StatusCode::CREATED);
    tokio::time::advance(Duration::from_secs(365 * 86_400)).await;
    assert!(
        call(&router, "k-max").await.1,
        "still replayed a year later"
    );
    assert_eq!(handler.count(), 1);
}

#[test]
fn retry_after_beyond_what_a_header_can_say_is_refused() {
    let err = IdempotencyLayer::builder()
        .concurrency(Concurrency::Reject {
            retry_after: Duration::MAX,
        })
        .build()
        .unwrap_err();
    assert!(err.message().contains("retry_after"), "{err}");
    let err = IdempotencyLayer::builder()
        .on_store_outage(OutagePolicy::FailClosed {
            retry_after: Duration::MAX,
        })
        .build()
        .unwrap_err();
    assert!(err.message().contains("retry_after"), "{err}");
}

/// A body of one data frame and one trailers frame (`grpc-status: 0`, `x-checksum`).
fn body_with_trailers(data: &'static str) -> Body {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
    let mut frames = vec![
        http_body::Frame::data(bytes::Bytes::from_static(data.as_bytes())),
        http_body::Frame::trailers(trailers),
    ];
    frames.reverse();
    Body::new(Frames(frames))
}

/// Yields its frames (last first).
struct Frames(Vec<http_body::Frame<bytes::Bytes>>);

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop().map(Ok))
    }
}

#[tokio::test]
async fn trailers_reach_the_client_and_are_replayed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(IdempotencyLayer::default())
        .service(service_fn(move |_req: Request<Body>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, std::convert::Infallible>(Response::new(body_with_trailers("payload")))
            }
        }));
    let req = || {
        Request::post("/x")
            .header("idempotency-key", "k-trailers")
            .body(Body::from("b"))
            .unwrap()
    };
    for (round, replayed) in [("first", false), ("replay", true)] {
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), 200, "{round}");
        assert_eq!(
            res.headers()
                .contains_key(tower_idempotency::REPLAYED_HEADER),
            replayed,
            "{round}"
        );
        let collected = res.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_else(|| {
            panic!("{round}: the trailers were dropped");
        });
        assert_eq!(trailers["grpc-status"], "0", "{round}");
        assert_eq!(trailers["x-checksum"], "abc123", "{round}");
        assert_eq!(collected.to_bytes(), "payload", "{round}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A memory store whose `complete` and `release` always fail (claims work).
struct FailsAfterClaim(MemoryStore);

impl IdempotencyStore for FailsAfterClaim {
    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        fingerprint: &'a tower_idempotency::Fingerprint,
        lease: Duration,
    ) -> tower_idempotency::store::StoreFuture<'a, Claim> {
        self.0.claim(key, fingerprint, lease)
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: tower_idempotency::FencingToken,
        lease: Duration,
    ) -> tower_idempotency::store::StoreFuture<'a, bool> {
        self.0.renew(key, token, lease)
    }

    fn complete<'a>(
        &'a self,
        _: &'a RecordKey,
        _: tower_idempotency::FencingToken,
        _: &'a tower_idempotency::record::CompletedRecord,
        _: Duration,
    ) -> tower_idempotency::store::StoreFuture<'a, bool> {
        Box::pin(async { Err(store_down()) })
    }

    fn release<'a>(
        &'a self,
        _: &'a RecordKey,
        _: tower_idempotency::FencingToken,
    ) -> tower_idempotency::store::StoreFuture<'a, bool> {
        Box::pin(async { Err(store_down()) })
    }
}

fn store_down() -> tower_idempotency::error::StoreError {
    tower_idempotency::error::StoreError::new(
        tower_idempotency::error::StoreErrorKind::Backend,
        "connection reset",
    )
}

#[tokio::test]
async fn failed_complete_or_release_is_counted_as_a_store_error() {
    let capture = test_support::metrics::Capture::start();
    let handler = Handler {
        fail_status: Some(StatusCode::SERVICE_UNAVAILABLE),
        fail_first: 1,
        ..Handler::default()
    };
    let layer = IdempotencyLayer::builder()
        .name("flaky")
        .store(FailsAfterClaim(MemoryStore::default()))
        .build()
        .unwrap();
    let router = app(handler.clone(), layer);
    // A transient outcome whose release fails: the client gets the handler's answer.
    let (status, replayed, _) = call(&router, "k-release").await;
    assert_eq!((status, replayed), (StatusCode::SERVICE_UNAVAILABLE, false));
    // A kept outcome whose completion fails: the client gets the handler's (only) execution.
    let (status, replayed, body) = call(&router, "k-complete").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    assert!(body.starts_with("execution 2"), "{body}");
    // Neither key was freed: a duplicate within the lease is refused, not executed again.
    assert_eq!(call(&router, "k-complete").await.0, StatusCode::CONFLICT);
    assert_eq!(call(&router, "k-release").await.0, StatusCode::CONFLICT);
    assert_eq!(handler.count(), 2);
    if cfg!(feature = "metrics") {
        let snap = capture.snapshot();
        let count = |result| {
            snap.counter(
                metrics::REQUESTS_TOTAL,
                &[("name", "flaky"), ("result", result)],
            )
        };
        assert_eq!(count("executed"), Some(2));
        assert_eq!(count("store_error"), Some(2));
        assert_eq!(count("conflict"), Some(2));
    }
}

/// A store whose every claim finds a record it cannot decode (corrupt, or written by a newer
/// version during a rolling deploy).
struct UnreadableRecords(MemoryStore);

impl IdempotencyStore for UnreadableRecords {
    fn claim<'a>(
        &'a self,
        _: &'a RecordKey,
        _: &'a tower_idempotency::Fingerprint,
        _: Duration,
    ) -> tower_idempotency::store::StoreFuture<'a, Claim> {
        Box::pin(async {
            Err(tower_idempotency::error::StoreError::new(
                tower_idempotency::error::StoreErrorKind::Corrupt,
                "unknown record tag",
            ))
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: tower_idempotency::FencingToken,
        lease: Duration,
    ) -> tower_idempotency::store::StoreFuture<'a, bool> {
        self.0.renew(key, token, lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: tower_idempotency::FencingToken,
        record: &'a tower_idempotency::record::CompletedRecord,
        ttl: Duration,
    ) -> tower_idempotency::store::StoreFuture<'a, bool> {
        self.0.complete(key, token, record, ttl)
    }

    fn release<'a>(
        &'a self,
        key: &'a RecordKey,
        token: tower_idempotency::FencingToken,
    ) -> tower_idempotency::store::StoreFuture<'a, bool> {
        self.0.release(key, token)
    }
}

/// An unreadable record is not an outage: even failing open, the request (which may have run
/// already) is not executed again; the client gets a 409 problem saying why.
#[tokio::test]
async fn an_unreadable_record_is_never_executed_again_even_failing_open() {
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .store(UnreadableRecords(MemoryStore::default()))
        .on_store_outage(OutagePolicy::FailOpen)
        .build()
        .unwrap();
    let router = app(handler.clone(), layer);
    let (status, replayed, body) = call(&router, "k-unreadable").await;
    assert_eq!((status, replayed), (StatusCode::CONFLICT, false));
    assert!(body.contains("could not be read"), "{body}");
    assert_eq!(handler.count(), 0);
}

/// Yields `ab`, then fails.
struct FailsMidway(bool);

impl http_body::Body for FailsMidway {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let first = !self.0;
        self.0 = true;
        std::task::Poll::Ready(Some(if first {
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"ab")))
        } else {
            Err(std::io::Error::other("disk gone"))
        }))
    }
}

/// A handler that answered 200 and whose body then failed midway did run: releasing the key
/// would run it again on the client's retry. Duplicates get the not-replayable problem.
#[tokio::test]
async fn a_success_whose_body_fails_is_not_executed_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(IdempotencyLayer::default())
        .service(service_fn(move |_req: Request<Body>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, std::convert::Infallible>(Response::new(Body::new(FailsMidway(false))))
            }
        }));
    let req = || {
        Request::post("/charge")
            .header("idempotency-key", "k-body-fails")
            .body(Body::from("b"))
            .unwrap()
    };
    let first = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        first.into_body().collect().await.is_err(),
        "the client sees the failure"
    );
    let second = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(second.status(), 409);
    let doc: serde_json::Value =
        serde_json::from_slice(&second.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["type"], problems::NOT_REPLAYABLE);
    assert!(
        doc["detail"].as_str().unwrap().contains("body failed"),
        "{doc}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "executed once");
}

/// Over a real HTTP/1.1 connection, trailers reach the client on the first response and on the
/// replay: the body is sent chunked (not with a `Content-Length`, which would drop them) and the
/// replay names its trailers in a `Trailer` header, as an HTTP/1.1 server needs.
#[tokio::test]
async fn trailers_survive_http1_on_the_first_response_and_the_replay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let router = axum::Router::new()
        .route(
            "/x",
            axum::routing::post(|| async {
                Response::builder()
                    .header("trailer", "grpc-status, x-checksum")
                    .body(body_with_trailers("payload"))
                    .unwrap()
            }),
        )
        .layer(IdempotencyLayer::default());
    let addr = serve(router).await;
    for round in ["first", "replay"] {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(
            b"POST /x HTTP/1.1\r\nhost: x\r\nidempotency-key: k-h1-trailers\r\n\
              te: trailers\r\ncontent-length: 1\r\nconnection: close\r\n\r\nb",
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        assert!(raw.starts_with("http/1.1 200"), "{round}: {raw}");
        assert!(raw.contains("transfer-encoding: chunked"), "{round}: {raw}");
        assert!(
            raw.contains("\r\nx-checksum: abc123\r\n"),
            "{round}: trailers dropped: {raw}"
        );
        assert!(raw.contains("\r\ngrpc-status: 0\r\n"), "{round}: {raw}");
        assert_eq!(
            raw.contains("idempotent-replayed: true"),
            round == "replay",
            "{raw}"
        );
    }
}

/// See `common::outcome_is_recorded_for_a_client_gone_mid_body`.
#[tokio::test]
async fn a_client_gone_while_the_body_is_read_still_has_its_outcome_recorded() {
    let layer = IdempotencyLayer::builder()
        .lease(common::SHORT_LEASE)
        .build()
        .unwrap();
    common::outcome_is_recorded_for_a_client_gone_mid_body(layer).await;
}

/// Yields `ab`, then never ends; holds `alive` while it exists.
struct NeverEnds {
    first: bool,
    _alive: Arc<()>,
}

impl http_body::Body for NeverEnds {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if std::mem::take(&mut self.first) {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(
                bytes::Bytes::from_static(b"ab"),
            ))));
        }
        std::task::Poll::Pending
    }
}

/// A service whose response body never ends, counting its calls; `alive` counts live bodies.
fn never_ending(
    calls: Arc<AtomicUsize>,
    alive: Arc<()>,
    layer: IdempotencyLayer,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<tower_idempotency::body::IdempotencyBody<Body>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_req: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let body = NeverEnds {
                first: true,
                _alive: Arc::clone(&alive),
            };
            async move { Ok::<_, std::convert::Infallible>(Response::new(Body::new(body))) }
        }))
}

fn stream_request(key: &str) -> Request<Body> {
    Request::post("/stream")
        .header("idempotency-key", key)
        .body(Body::from("b"))
        .unwrap()
}

/// A response body that never ends is read for the response body timeout, then passed on to
/// the client as it comes (what was read first, then the rest), and the key is recorded as
/// executed but not replayable — nothing waits on it forever.
#[tokio::test(start_paused = true)]
async fn a_response_body_that_never_ends_is_given_up_after_the_timeout() {
    let (calls, alive) = (Arc::new(AtomicUsize::new(0)), Arc::new(()));
    let layer = IdempotencyLayer::builder()
        .response_body_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = never_ending(Arc::clone(&calls), Arc::clone(&alive), layer);
    let started = tokio::time::Instant::now();
    let res = svc
        .clone()
        .oneshot(stream_request("k-endless"))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "ab", "what was read is passed on first");
    let duplicate = svc
        .clone()
        .oneshot(stream_request("k-endless"))
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let doc: serde_json::Value =
        serde_json::from_slice(&duplicate.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["type"], problems::NOT_REPLAYABLE);
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("did not end within 5s"),
        "{doc}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "executed once");
}

/// A client that goes away while the layer reads a body that never ends leaves a background
/// task that gives up at the response body timeout: it records the key and lets go of the body,
/// so neither the key nor the task is held forever.
#[tokio::test(start_paused = true)]
async fn a_gone_clients_endless_body_is_given_up_after_the_timeout() {
    let (calls, alive) = (Arc::new(AtomicUsize::new(0)), Arc::new(()));
    let svc = never_ending(
        Arc::clone(&calls),
        Arc::clone(&alive),
        IdempotencyLayer::default(),
    );
    let without_body = Arc::strong_count(&alive);
    let client = tokio::spawn(svc.clone().oneshot(stream_request("k-endless-gone")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());
    assert_eq!(
        Arc::strong_count(&alive),
        without_body + 1,
        "the layer still reads the body"
    );
    let in_flight = svc.clone().oneshot(stream_request("k-endless-gone")).await;
    assert_eq!(in_flight.unwrap().status(), 409);
    tokio::time::sleep(tower_idempotency::DEFAULT_RESPONSE_BODY_TIMEOUT).await;
    assert_eq!(
        Arc::strong_count(&alive),
        without_body,
        "the body is still held"
    );
    let duplicate = svc
        .clone()
        .oneshot(stream_request("k-endless-gone"))
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let doc: serde_json::Value =
        serde_json::from_slice(&duplicate.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("did not end within"),
        "{doc}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "executed once");
}

/// An app that identifies its users by a session cookie (or a proxy credential) rather than an
/// `Authorization` header: bob reusing alice's key with the same body must never get her
/// response (her body, her data), nor run under her key. And alice's own retry whose cookie jar
/// changed meanwhile must not run a second time either.
#[tokio::test]
async fn a_response_never_crosses_cookie_or_proxy_credentials() {
    let handler = Handler::default();
    let addr = serve(app(handler.clone(), IdempotencyLayer::default())).await;
    let client = client();
    let alice = [("cookie", "session=alice")];
    let first = common::post_with(&client, addr, "k-cookie", &alice, "x").await;
    assert_eq!(first.status(), 201);
    let alices = first.text().await.unwrap();

    for (who, headers) in [
        ("bob", [("cookie", "session=bob")]),
        (
            "a proxy user",
            [("proxy-authorization", "Basic Y2Fyb2w6cHc=")],
        ),
        (
            "alice, her jar changed",
            [("cookie", "session=alice; theme=dark")],
        ),
    ] {
        let res = common::post_with(&client, addr, "k-cookie", &headers, "x").await;
        assert!(
            res.headers().get("idempotent-replayed").is_none(),
            "{who}: replayed"
        );
        assert_eq!(res.status(), 422, "{who}");
        let body = res.text().await.unwrap();
        assert_ne!(body, alices, "{who} got alice's response");
        assert!(body.contains(problems::KEY_REUSED), "{who}: {body}");
    }
    assert_eq!(handler.count(), 1, "nobody ran under alice's key");

    // Alice with the very same credentials gets her replay.
    let again = common::post_with(&client, addr, "k-cookie", &alice, "x").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), alices);
    assert_eq!(handler.count(), 1);
}

/// `no_credential_headers()` is the one way to turn the credential binding off: a duplicate is
/// then replayed whatever credentials it carries, and nothing runs twice.
#[tokio::test]
async fn without_credential_headers_a_duplicate_is_replayed_whoever_sends_it() {
    let handler = Handler::default();
    let layer = IdempotencyLayer::builder()
        .no_credential_headers()
        .build()
        .unwrap();
    let addr = serve(app(handler.clone(), layer)).await;
    let client = client();
    let first =
        common::post_with(&client, addr, "k-open", &[("cookie", "session=alice")], "x").await;
    assert_eq!(first.status(), 201);
    let recorded = first.text().await.unwrap();
    let other = common::post_with(&client, addr, "k-open", &[("cookie", "session=bob")], "x").await;
    assert_eq!(other.headers()["idempotent-replayed"], "true");
    assert_eq!(other.text().await.unwrap(), recorded);
    assert_eq!(handler.count(), 1);
}
