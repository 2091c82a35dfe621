//! Real HTTP: raw-TCP fault servers, wiremock and axum, through a shared hyper client.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::axum_upstream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use test_support::fault::FaultServer;
use tower::{Service, ServiceExt, retry::Policy};
use tower_failover::{Backoff, Cause, Endpoint, EndpointStatus, Failover, HealthEvents, HttpProbe};
use tower_fault::{AttemptContext, BoxError, Classify, HttpClassifier, ServedBy};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An outer retry in the shape of the suite's retry layer: transient outcomes are retried up
/// to twice, advancing the attempt context failover reads.
#[derive(Clone)]
struct RetryTransient {
    left: usize,
}

impl<Res> Policy<Request<Full<Bytes>>, Response<Res>, BoxError> for RetryTransient {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        let class = HttpClassifier::default().classify(result.as_ref());
        if !class.is_transient() || self.left == 0 {
            return None;
        }
        self.left -= 1;
        // What a retry layer does with the endpoint failover reports.
        let served = ServedBy::of(result.as_ref());
        if let Some(ctx) = req.extensions_mut().get_mut::<AttemptContext>() {
            if let Some(endpoint) = served {
                ctx.record_endpoint(endpoint);
            }
            ctx.advance();
        }
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::post("/payments")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    req.extensions_mut().insert(AttemptContext::new());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_dies_mid_traffic_and_no_request_is_lost() {
    let primary = FaultServer::start().await;
    let standby = FaultServer::start().await;
    let http = client();
    let failover = Failover::builder()
        .tier([Endpoint::new("primary", primary.url(""), http.clone())])
        .tier([Endpoint::new("standby", standby.url(""), http)])
        .eject_after(3)
        .ejection_backoff(Backoff::constant(Duration::from_secs(60)))
        .build()
        .unwrap();
    let handle = failover.handle();
    let svc = tower::retry::Retry::new(RetryTransient { left: 2 }, failover);

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..40 {
                let res = svc
                    .clone()
                    .oneshot(request())
                    .await
                    .expect("every request succeeds");
                assert_eq!(res.status(), StatusCode::OK);
                ok += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ok
        }));
    }
    while primary.requests() < 60 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    primary.close_listener();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 320, "none lost");
    assert!(
        standby.requests() > 100,
        "the standby took over: {}",
        standby.requests()
    );
    assert_eq!(
        handle.endpoint("primary").unwrap().status,
        EndpointStatus::Ejected,
        "passive ejection"
    );
    assert_eq!(standby.received()[0].path, "/payments");
}

async fn wait_for(
    events: &mut HealthEvents,
    name: &str,
    to: EndpointStatus,
) -> tower_failover::HealthEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.expect("events");
            if &*e.endpoint.name == name && e.to == to && e.cause != Cause::Snapshot {
                return e;
            }
        }
    })
    .await
    .expect("the event arrives")
}

#[tokio::test]
async fn deep_probe_catches_200_with_the_wrong_body() {
    let good = MockServer::start().await;
    let bad = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ready"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"status":"ok"}"#))
        .mount(&good)
        .await;
    Mock::given(method("GET"))
        .and(path("/ready"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"status":"degraded"}"#))
        .mount(&bad)
        .await;
    let http = client();
    let build = |deep: bool| {
        let probe = if deep {
            HttpProbe::deep(http.clone(), "/ready", |status, body| {
                if status == StatusCode::OK && body.as_ref() == br#"{"status":"ok"}"# {
                    Ok(())
                } else {
                    Err(format!(
                        "unexpected body: {}",
                        String::from_utf8_lossy(body)
                    ))
                }
            })
        } else {
            HttpProbe::shallow(http.clone(), "/ready")
        };
        Failover::builder()
            .tier([
                Endpoint::new("good", good.uri(), http.clone()),
                Endpoint::new("bad", bad.uri(), http.clone()),
            ])
            .probe(probe)
            .probe_interval(Duration::from_millis(20))
            .probe_jitter(Duration::ZERO)
            .thresholds(1, 2)
            .build()
            .unwrap()
    };
    let shallow = build(false);
    let deep = build(true);
    let mut events = deep.subscribe();
    let down = wait_for(&mut events, "bad", EndpointStatus::Unhealthy).await;
    assert!(
        matches!(&down.cause, Cause::ProbeFailed(r) if r.contains("degraded")),
        "{down:?}"
    );
    let handle = deep.handle();
    assert_eq!(
        handle.endpoint("good").unwrap().status,
        EndpointStatus::Healthy
    );
    // The shallow check, over the same servers and for as long, sees nothing wrong.
    assert!(
        shallow
            .handle()
            .endpoints()
            .iter()
            .all(|e| e.status == EndpointStatus::Healthy)
    );
    let probes = bad.received_requests().await.unwrap().len();
    assert!(probes >= 4, "both failovers probed `bad`: {probes}");
}

#[tokio::test]
async fn axum_reverse_proxy_fails_over_between_axum_upstreams() {
    let (primary_url, primary) = axum_upstream("primary").await;
    let (standby_url, _standby) = axum_upstream("standby").await;
    let http: Client<HttpConnector, axum::body::Body> =
        Client::builder(TokioExecutor::new()).build_http();
    let failover = Failover::builder()
        .tier([Endpoint::new("primary", primary_url, http.clone())])
        .tier([Endpoint::new("standby", standby_url, http)])
        .eject_after(1)
        .build()
        .unwrap();
    let handle = failover.handle();
    let proxy = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            |e: BoxError| async move {
                (
                    StatusCode::BAD_GATEWAY,
                    tower_fault::DisplayChain(&*e).to_string(),
                )
            },
        ))
        .service(failover.server_mode());
    let app = axum::Router::new().fallback_service(proxy);
    let mut app = app.into_service::<axum::body::Body>();
    let mut get = async || {
        let req = Request::get("/hello")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = app.ready().await.unwrap().call(req).await.unwrap();
        let status = res.status();
        (
            status,
            String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
                .unwrap(),
        )
    };
    assert_eq!(get().await, (StatusCode::OK, "primary".into()));
    primary.abort();
    let _ = primary.await;
    // The first requests after the death may fail (nothing retries in this stack): a primary
    // that served a single request has too short a history to make one failure proof, so its
    // ejection takes a run of two; from then on the standby answers.
    for _ in 0..2 {
        let (status, _) = get().await;
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_GATEWAY,
            "{status}"
        );
    }
    for _ in 0..5 {
        assert_eq!(get().await, (StatusCode::OK, "standby".into()));
    }
    assert_eq!(
        handle.endpoint("primary").unwrap().status,
        EndpointStatus::Ejected
    );
}
