//! Server-side idempotency with a 1 KiB response: an axum `Router` alone (bare), axum-idempotent
//! (its required cookie and session layers over a moka session store, keyed by the
//! `Idempotency-Key` header), and ours with the memory store — first request (a new key each call)
//! and replay (the same key). Each call is driven to the end of the response body on a
//! current-thread runtime, because a store may be written when the body ends.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use resilience_benches::alloc::CountingAlloc;
use resilience_benches::report::{self, BARE, bench_calls};
use ruts::store::moka::MokaStore;
use ruts::{CookieOptions, Session, SessionLayer};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use tower_cookies::CookieManagerLayer;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const KIB: &[u8] = &[b'x'; 1024];

async fn create_order() -> Bytes {
    Bytes::from_static(KIB)
}

async fn login(session: Session<MokaStore>) -> &'static str {
    session
        .set(
            "user",
            &1_u32,
            ruts::store::Ttl::new(3600).expect("ttl"),
            None,
        )
        .await
        .expect("session");
    "ok"
}

fn rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn order(key: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::post("/orders")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from("{\"sku\":\"A-1\",\"qty\":1}"))
        .expect("request");
    if let Some(c) = cookie {
        req.headers_mut().insert(http::header::COOKIE, c.clone());
    }
    req
}

/// Drives one call to the end of its body; returns the body length.
fn roundtrip<S>(rt: &Runtime, svc: &mut S, req: Request<Body>) -> usize
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let res = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("response");
        res.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len()
    })
}

fn ours_router() -> Router {
    Router::new()
        .route("/orders", post(create_order))
        .layer(tower_idempotency::IdempotencyLayer::default())
}

const GROUP: &str = "idempotency, 1 KiB response";

fn bare_router() -> Router {
    Router::new().route("/orders", post(create_order))
}

fn axum_idempotent_router() -> Router {
    let store = Arc::new(MokaStore::builder().build());
    let options = axum_idempotent::IdempotentOptions::default()
        .use_idempotency_key_header(Some("idempotency-key"), true)
        .expire_after(300);
    Router::new()
        .route("/orders", post(create_order))
        .layer(axum_idempotent::IdempotentLayer::<MokaStore>::new(options))
        .route("/login", get(login))
        .layer(SessionLayer::new(store).with_cookie_options(CookieOptions::build().name("session")))
        .layer(CookieManagerLayer::new())
}

/// axum-idempotent caches only for a request that carries a session: log in once.
fn session_cookie(rt: &Runtime, router: &mut Router) -> HeaderValue {
    rt.block_on(async {
        let res = ServiceExt::<Request<Body>>::ready(router)
            .await
            .expect("ready")
            .call(Request::get("/login").body(Body::empty()).expect("request"))
            .await
            .expect("login");
        let set = res
            .headers()
            .get(http::header::SET_COOKIE)
            .expect("session cookie")
            .to_str()
            .expect("ascii");
        HeaderValue::from_str(set.split(';').next().expect("cookie pair")).expect("cookie")
    })
}

fn keys() -> impl FnMut() -> String {
    let mut n = 0_u64;
    move || {
        n += 1;
        format!("bench-key-{n:016}")
    }
}

fn idempotency(c: &mut criterion::Criterion) {
    let rt = Arc::new(rt());
    let mut g = report::group(c, GROUP);

    {
        let rt = rt.clone();
        let mut bare = bare_router();
        let mut key = keys();
        bench_calls(
            &mut g,
            BARE,
            move || order(&key(), None),
            move |r| roundtrip(&rt, &mut bare, r),
        );
    }

    let mut peer = axum_idempotent_router();
    let cookie = session_cookie(&rt, &mut peer);
    {
        let rt = rt.clone();
        let mut peer = peer.clone();
        let cookie = cookie.clone();
        let mut key = keys();
        bench_calls(
            &mut g,
            "axum-idempotent/first",
            move || order(&key(), Some(&cookie)),
            move |r| roundtrip(&rt, &mut peer, r),
        );
    }
    {
        let rt2 = rt.clone();
        assert_eq!(
            roundtrip(&rt, &mut peer, order("replayed-key", Some(&cookie))),
            KIB.len()
        );
        let replayed = rt.block_on(async {
            let res = ServiceExt::<Request<Body>>::ready(&mut peer)
                .await
                .expect("ready")
                .call(order("replayed-key", Some(&cookie)))
                .await;
            res.expect("response")
                .headers()
                .get("idempotency-replayed")
                .cloned()
        });
        assert_eq!(
            replayed.as_ref().map(HeaderValue::as_bytes),
            Some(&b"true"[..]),
            "axum-idempotent did not replay"
        );
        bench_calls(
            &mut g,
            "axum-idempotent/replay",
            move || order("replayed-key", Some(&cookie)),
            move |r| roundtrip(&rt2, &mut peer, r),
        );
    }
    let mut ours = ours_router();
    {
        let rt = rt.clone();
        let mut ours = ours.clone();
        let mut key = keys();
        bench_calls(
            &mut g,
            "ours (memory store)/first",
            move || order(&key(), None),
            move |r| roundtrip(&rt, &mut ours, r),
        );
    }
    {
        let rt2 = rt.clone();
        assert_eq!(
            roundtrip(&rt, &mut ours, order("replayed-key", None)),
            KIB.len()
        );
        let replayed = rt.block_on(async {
            let res = ServiceExt::<Request<Body>>::ready(&mut ours)
                .await
                .expect("ready")
                .call(order("replayed-key", None))
                .await;
            res.expect("response")
                .headers()
                .get(tower_idempotency::REPLAYED_HEADER)
                .cloned()
        });
        assert_eq!(
            replayed.as_ref().map(HeaderValue::as_bytes),
            Some(&b"true"[..]),
            "ours did not replay"
        );
        bench_calls(
            &mut g,
            "ours (memory store)/replay",
            move || order("replayed-key", None),
            move |r| roundtrip(&rt2, &mut ours, r),
        );
    }
    g.finish();
    report::compare(GROUP, "ours (memory store)/first", "axum-idempotent/first");
    report::compare(
        GROUP,
        "ours (memory store)/replay",
        "axum-idempotent/replay",
    );
}

fn main() {
    let mut c = resilience_benches::criterion();
    idempotency(&mut c);
    c.final_summary();
    report::finish("idempotency");
}
