//! The breaker around a real HTTP client (wiremock upstreams) and in front of a real axum server.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tower::{Service, ServiceExt};
use tower_breaker::{Backoff, Breaker, Jitter, State, error::BreakerError};
use tower_fault::{BoxError, reqwest::ReqwestService};
use tower_layer::Layer;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

fn get(server: &MockServer, route: &str) -> http::Request<String> {
    http::Request::get(format!("{}{route}", server.uri()))
        .body(String::new())
        .unwrap()
}

async fn send<S>(client: &mut S, req: http::Request<String>) -> Result<S::Response, S::Error>
where
    S: Service<http::Request<String>>,
{
    client.ready().await?.call(req).await
}

#[tokio::test]
async fn open_rejections_never_reach_the_server() {
    let server = MockServer::start().await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .expect(5)
        .mount(&server)
        .await;
    let breaker = Breaker::builder()
        .consecutive_failures(5)
        .open_backoff(Backoff::exponential(
            Duration::from_secs(30),
            2.0,
            Duration::from_secs(60),
        ))
        .build()
        .unwrap();
    let mut client = breaker
        .layer()
        .layer(ReqwestService::new(reqwest::Client::new()));
    for _ in 0..5 {
        let res = send(&mut client, get(&server, "/down")).await.unwrap();
        assert_eq!(res.status(), 503);
    }
    for _ in 0..20 {
        let err = send(&mut client, get(&server, "/down")).await.unwrap_err();
        let open = err
            .downcast_ref::<BreakerError>()
            .expect("a breaker rejection");
        assert!(open.is_open());
    }
    server.verify().await;
}

#[tokio::test]
async fn client_errors_do_not_trip() {
    let server = MockServer::start().await;
    Mock::given(path("/missing"))
        .respond_with(ResponseTemplate::new(404))
        .expect(50)
        .mount(&server)
        .await;
    let breaker = Breaker::builder()
        .consecutive_failures(3)
        .minimum_calls(5)
        .build()
        .unwrap();
    let mut client = breaker
        .layer()
        .layer(ReqwestService::new(reqwest::Client::new()));
    for _ in 0..50 {
        let res = send(&mut client, get(&server, "/missing")).await.unwrap();
        assert_eq!(res.status(), 404);
    }
    assert_eq!(breaker.state(), State::Closed);
    server.verify().await;
}

#[tokio::test]
async fn connection_refused_counts_as_a_failure() {
    let breaker = Breaker::builder().consecutive_failures(2).build().unwrap();
    let mut client = breaker
        .layer()
        .layer(ReqwestService::new(reqwest::Client::new()));
    let addr = test_support::fault::refused_addr();
    for _ in 0..2 {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(String::new())
            .unwrap();
        let err = send(&mut client, req).await.unwrap_err();
        assert!(
            err.downcast_ref::<BreakerError>().is_none(),
            "a real connect error first"
        );
    }
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_in_half_open_let_exactly_the_permits_through() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .expect(3)
        .mount(&server)
        .await;
    let breaker = Breaker::builder()
        .consecutive_failures(1)
        .half_open_permits(3)
        .open_backoff(Backoff::exponential(
            Duration::from_millis(100),
            2.0,
            Duration::from_secs(1),
        ))
        .open_jitter(Jitter::None)
        .build()
        .unwrap();
    let client = breaker
        .layer()
        .layer(ReqwestService::new(reqwest::Client::new()));
    let res = client.clone().oneshot(get(&server, "/")).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(Duration::from_millis(120)).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            let barrier = Arc::clone(&barrier);
            let req = get(&server, "/");
            tokio::spawn(async move {
                barrier.wait().await;
                client.oneshot(req).await
            })
        })
        .collect();
    let (mut passed, mut rejected) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(res) => {
                assert_eq!(res.status(), 200);
                passed += 1;
            }
            Err(err) => {
                assert_eq!(
                    err.downcast_ref::<BreakerError>().unwrap().state(),
                    State::HalfOpen
                );
                rejected += 1;
            }
        }
    }
    assert_eq!((passed, rejected), (3, 997));
    assert_eq!(breaker.state(), State::Closed);
    server.verify().await;
}

#[tokio::test]
async fn server_mode_answers_503_with_retry_after_and_a_problem() {
    let calls = Arc::new(AtomicUsize::new(0));
    let breaker = Breaker::builder()
        .name("orders")
        .consecutive_failures(2)
        .open_backoff(Backoff::exponential(
            Duration::from_secs(30),
            2.0,
            Duration::from_secs(60),
        ))
        .open_jitter(Jitter::None)
        .build()
        .unwrap();
    let counted = Arc::clone(&calls);
    let app: axum::Router = axum::Router::new()
        .route(
            "/orders",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { (http::StatusCode::BAD_GATEWAY, "downstream failed") }
            }),
        )
        .layer(breaker.layer().server_mode());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/orders");
    for _ in 0..2 {
        let res = client.post(&url).send().await.unwrap();
        assert_eq!(res.status(), 502);
    }
    let res = client.post(&url).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (30..=33).contains(&retry_after),
        "remaining open time plus jitter: {retry_after}"
    );
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["type"], tower_breaker::server::PROBLEM_TYPE);
    assert_eq!(body["status"], 503);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the handler is not called while open"
    );
}

#[tokio::test]
async fn inner_errors_are_boxed_unchanged() {
    let breaker = Breaker::builder().build().unwrap();
    let mut svc = breaker.layer().layer(tower::service_fn(|_: ()| async {
        Err::<http::Response<()>, BoxError>(Box::new(std::io::Error::other("boom")))
    }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(breaker.counts().failures, 1);
}

/// Serves `app` on a loopback port; returns its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Checks a server-mode rejection: 503, `Retry-After` in `30..=33` s (30 s open plus up to 10%
/// jitter), a problem+json body of the breaker-open type naming `breaker`.
async fn assert_open_problem(res: reqwest::Response, breaker: &str) {
    assert_eq!(res.status(), 503);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (30..=33).contains(&retry_after),
        "remaining open time plus jitter: {retry_after}"
    );
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["type"], tower_breaker::server::PROBLEM_TYPE);
    assert_eq!(body["status"], 503);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("{breaker}: ")),
        "the detail names the key's breaker: {detail}"
    );
}

fn keyed_template() -> tower_breaker::BreakerBuilder {
    Breaker::builder()
        .consecutive_failures(2)
        .open_backoff(Backoff::exponential(
            Duration::from_secs(30),
            2.0,
            Duration::from_secs(60),
        ))
        .open_jitter(Jitter::None)
}

#[tokio::test]
async fn keyed_server_mode_answers_503_for_the_open_host_only() {
    let down_calls = Arc::new(AtomicUsize::new(0));
    let up_calls = Arc::new(AtomicUsize::new(0));
    let (down, up) = (Arc::clone(&down_calls), Arc::clone(&up_calls));
    let tenants = tower_breaker::KeyedBreakerLayer::builder(keyed_template().name("tenants"))
        .build()
        .unwrap()
        .server_mode();
    let app: axum::Router = axum::Router::new()
        .route(
            "/orders",
            axum::routing::get(move |headers: http::HeaderMap| {
                let failing = headers["host"] == "down.test";
                let calls = if failing { &down } else { &up };
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if failing {
                        http::StatusCode::BAD_GATEWAY
                    } else {
                        http::StatusCode::OK
                    }
                }
            }),
        )
        .layer(tenants.clone());
    let url = format!("http://{}/orders", serve(app).await);
    let client = reqwest::Client::new();
    let get = |host: &str| client.get(&url).header("host", host).send();

    for _ in 0..2 {
        assert_eq!(get("down.test").await.unwrap().status(), 502);
    }
    for _ in 0..3 {
        assert_open_problem(get("down.test").await.unwrap(), "tenants/down.test").await;
        assert_eq!(get("up.test").await.unwrap().status(), 200);
    }
    assert_eq!(
        down_calls.load(Ordering::SeqCst),
        2,
        "the handler is not called for an open key"
    );
    assert_eq!(
        up_calls.load(Ordering::SeqCst),
        3,
        "the other key is served"
    );
    let breaker = |host: &str| tenants.breaker(&host.parse().unwrap()).unwrap().state();
    assert_eq!(
        (breaker("down.test"), breaker("up.test")),
        (State::Open, State::Closed)
    );
}

#[tokio::test]
async fn keyed_server_mode_by_route_keeps_the_other_route_served() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let routes = tower_breaker::KeyedBreakerLayer::builder(keyed_template().name("routes"))
        .key_fn(|req: &http::Request<axum::body::Body>| Some(req.uri().path().to_owned()))
        .build()
        .unwrap()
        .server_mode();
    let app: axum::Router = axum::Router::new()
        .route(
            "/orders",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { (http::StatusCode::SERVICE_UNAVAILABLE, "orders db down") }
            }),
        )
        .route("/stock", axum::routing::get(|| async { "42" }))
        .layer(routes.clone());
    let addr = serve(app).await;
    let client = reqwest::Client::new();
    let orders = format!("http://{addr}/orders");
    let stock = format!("http://{addr}/stock");

    for _ in 0..2 {
        assert_eq!(client.post(&orders).send().await.unwrap().status(), 503);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_open_problem(client.post(&orders).send().await.unwrap(), "routes//orders").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the open route's handler is not called"
    );
    let res = client.get(&stock).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "42");
    assert_eq!(routes.breakers().open_count(), 1);
    assert_eq!(
        routes.breaker(&"/stock".to_owned()).unwrap().state(),
        State::Closed
    );
}
