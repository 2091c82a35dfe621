//! `FailoverLayer`: failover as a tower layer over one client that every endpoint shares.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Mock, Router, axum_upstream, get, send, sleep_ms, who};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_failover::{
    Cause, EndpointStatus, Failover, FailoverLayer, HealthEvent, HealthEvents, HttpProbe,
};

/// A layer over primary `p` and standby `s`, reached through one [`Router`] client.
fn primary_and_standby(p: &Mock, s: &Mock) -> tower_failover::FailoverLayerBuilder {
    FailoverLayer::builder()
        .tier([(p.0.name, p.base())])
        .tier([(s.0.name, s.base())])
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_sends_through_the_one_client_it_wraps() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let layer = primary_and_standby(&p, &s).eject_after(2).build().unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(Router(vec![p.clone(), s.clone()]));
    let res = send(&mut svc, get("/orders?id=1")).await.unwrap();
    assert_eq!(
        res.body(),
        "p http://p.test:80/orders?id=1",
        "rewritten to p"
    );
    // The primary fails: passive ejection moves traffic to the standby, same client. One
    // success is a short clean history, so the run that ejects is twice `eject_after`.
    p.set_status(503);
    for _ in 0..4 {
        assert_eq!(send(&mut svc, get("/")).await.unwrap().status(), 503);
    }
    let res = send(&mut svc, get("/orders")).await.unwrap();
    assert_eq!(res.body(), "s http://s.test:80/orders");
    let handle = svc.handle();
    assert_eq!(
        handle.endpoint("p").unwrap().status,
        EndpointStatus::Ejected
    );
    assert_eq!(svc.name(), "default");
}

/// A set holds the client its endpoints send through, so each `layer` call starts its own:
/// its own health, handle and name label; clones of one layered service share one set.
#[tokio::test(start_paused = true)]
async fn each_layer_call_starts_its_own_set() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let layer = primary_and_standby(&p, &s)
        .name("orders")
        .eject_after(1)
        .build()
        .unwrap();
    assert_eq!(layer.name(), "orders");
    let client = Router(vec![p.clone(), s.clone()]);
    let mut first = layer.layer(client.clone());
    let second = layer.clone().layer(client);
    let mut first_clone = first.clone();
    p.set_status(503);
    send(&mut first, get("/")).await.unwrap();
    assert_eq!(who(&send(&mut first_clone, get("/")).await.unwrap()), "s");
    assert_eq!(
        first.handle().endpoint("p").unwrap().status,
        EndpointStatus::Ejected
    );
    assert_eq!(
        second.handle().endpoint("p").unwrap().status,
        EndpointStatus::Healthy,
        "the other set saw nothing"
    );
    assert_eq!(second.name(), "orders");
}

/// `HttpProbe::shallow` over a client that takes any request body (as reqwest's does) needs no
/// annotation: the probe sends `Full<Bytes>`.
#[tokio::test(start_paused = true)]
async fn a_probe_over_a_client_that_takes_any_body_needs_no_annotation() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let client = Router(vec![p.clone(), s.clone()]);
    let layer = primary_and_standby(&p, &s)
        .probe(HttpProbe::shallow(client.clone(), "/healthz"))
        .probe_interval(Duration::from_secs(1))
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 1)
        .build()
        .unwrap();
    let mut svc = layer.layer(client);
    let mut events = svc.subscribe();
    p.set_health(503);
    sleep_ms(1_500).await;
    assert!(p.probes() >= 1 && s.probes() >= 1, "both probed");
    let down = next_change(&mut events).await;
    assert_eq!(
        (&*down.name, &*down.endpoint.name, down.to),
        ("default", "p", EndpointStatus::Unhealthy),
        "the event names the set and the endpoint"
    );
    assert_eq!(who(&send(&mut svc, get("/")).await.unwrap()), "s");
}

async fn next_change(events: &mut HealthEvents) -> HealthEvent {
    loop {
        let e = events.recv().await.expect("the set is alive");
        if e.cause != Cause::Snapshot {
            return e;
        }
    }
}

/// A layer built inside a runtime starts probe tasks on it even when `layer` is called where
/// no runtime is current.
#[test]
fn layer_outside_a_runtime_probes_on_the_runtime_the_layer_was_built_in() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let client = Router(vec![p.clone(), s.clone()]);
    let layer = rt.block_on(async {
        primary_and_standby(&p, &s)
            .probe(HttpProbe::shallow(client.clone(), "/healthz"))
            .probe_interval(Duration::from_millis(10))
            .probe_jitter(Duration::ZERO)
            .build()
            .unwrap()
    });
    let svc = std::thread::spawn(move || layer.layer(client))
        .join()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while p.probes() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the probe task runs");
    });
    drop(svc);
}

#[test]
fn bad_configuration_is_a_build_error() {
    let errors = [
        (FailoverLayer::builder().build().unwrap_err(), "no tiers"),
        (
            FailoverLayer::builder()
                .tier([("a", "/relative")])
                .build()
                .unwrap_err(),
            "scheme and an authority",
        ),
        (
            FailoverLayer::builder()
                .tier([("a", "not a uri")])
                .build()
                .unwrap_err(),
            "invalid base URI",
        ),
        (
            FailoverLayer::builder()
                .tier([("a", "http://a:1"), ("a", "http://b:1")])
                .build()
                .unwrap_err(),
            "used twice",
        ),
        (
            FailoverLayer::builder()
                .name("")
                .tier([("a", "http://a:1")])
                .build()
                .unwrap_err(),
            "`name` must not be empty",
        ),
        (
            // No runtime here: the probe task would have nowhere to run.
            FailoverLayer::builder()
                .tier([("a", "http://a:1")])
                .probe(HttpProbe::shallow(Router(Vec::new()), "/healthz"))
                .build()
                .unwrap_err(),
            "inside a tokio runtime",
        ),
    ];
    for (err, needle) in errors {
        assert!(
            err.to_string().contains(needle),
            "`{err}` should mention `{needle}`"
        );
    }
}

/// Over a real hyper client: the layer wraps the client, the probe goes through that same
/// client (no second client, no annotation), and an axum upstream dies.
#[tokio::test]
async fn over_a_hyper_client_the_probe_and_the_requests_share_the_client() {
    let (primary_url, primary) = axum_upstream("primary").await;
    let (standby_url, _standby) = axum_upstream("standby").await;
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let failover = FailoverLayer::builder()
        .name("hello")
        .tier([("primary", primary_url)])
        .tier([("standby", standby_url)])
        .probe(HttpProbe::shallow(http.clone(), "/healthz"))
        .probe_interval(Duration::from_millis(20))
        .probe_jitter(Duration::ZERO)
        .thresholds(1, 2)
        .no_passive_ejection() // only the probe takes the primary out
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(failover).service(http);
    let handle = svc.handle();
    async fn hello(svc: Failover<Client<HttpConnector, Full<Bytes>>>) -> (StatusCode, String) {
        let req = Request::get("/hello")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let Ok(res) = svc.oneshot(req).await else {
            return (StatusCode::BAD_GATEWAY, String::new());
        };
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
    assert_eq!(hello(svc.clone()).await, (StatusCode::OK, "primary".into()));
    primary.abort();
    let _ = primary.await;
    // The probe, through the same client, takes the dead primary out of rotation.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tokio::time::timeout(Duration::from_secs(1), hello(svc.clone())).await {
                Ok((StatusCode::OK, who)) if who == "standby" => break,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("the standby takes over");
    assert_eq!(
        handle.endpoint("primary").unwrap().status,
        EndpointStatus::Unhealthy
    );
}

/// In server mode, "no healthy endpoint" is a 503 problem response, as for `Failover`.
#[tokio::test(start_paused = true)]
async fn the_layer_in_server_mode_answers_no_healthy_endpoint_with_a_problem() {
    let (p, s) = (Mock::new("p"), Mock::new("s"));
    let layer = primary_and_standby(&p, &s).build().unwrap().server_mode();
    let mut server = ServiceBuilder::new()
        .layer(layer)
        .service(Router(vec![p.clone(), s.clone()]));
    let res = ServiceExt::<Request<String>>::ready(&mut server)
        .await
        .unwrap()
        .call(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let handle = server.get_ref().handle();
    drop(handle.remove("p"));
    drop(handle.remove("s"));
    let res = ServiceExt::<Request<String>>::ready(&mut server)
        .await
        .unwrap()
        .call(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

/// What a `Failover::builder()` set of per-endpoint services and a layered set have in common:
/// the same default name.
#[tokio::test]
async fn the_default_name_is_default() {
    let m = Mock::new("m");
    let f = Failover::builder().tier([m.endpoint()]).build().unwrap();
    assert_eq!(f.name(), "default");
    let layer = FailoverLayer::builder()
        .tier([("m", m.base())])
        .build()
        .unwrap();
    assert_eq!(layer.name(), "default");
}

/// A client that counts its clones, and whose `poll_ready` takes one of `permits` that its
/// `call` spends (the way a concurrency limit reserves capacity); dropped ready but uncalled, it
/// hands the permit back.
struct Counted {
    clones: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    permits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    holding: bool,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            clones: self.clones.clone(),
            permits: self.permits.clone(),
            holding: false,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.holding {
            self.permits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Service<Request<Full<Bytes>>> for Counted {
    type Response = http::Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if !self.holding {
            self.permits
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.holding = true;
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
        assert!(self.holding, "called without poll_ready");
        // The permit goes with the call (and comes back at once: the call is already done).
        self.holding = false;
        self.permits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::future::ready(Ok(http::Response::new(Full::new(Bytes::new()))))
    }
}

#[tokio::test]
async fn requests_reuse_the_endpoints_service_clones_and_release_what_they_reserved() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let clones = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(AtomicUsize::new(1_000));
    let client = Counted {
        clones: clones.clone(),
        permits: permits.clone(),
        holding: false,
    };
    let failover = FailoverLayer::builder()
        .tier([("a", "http://a.test")])
        .build()
        .unwrap()
        .layer(client);
    let made = clones.load(Ordering::Relaxed);
    // One request after the other, each through a fresh clone of the failover (as a retry
    // layer above makes them): the endpoint's service is cloned once, then reused.
    for _ in 0..100 {
        send_one(&failover).await;
    }
    assert_eq!(clones.load(Ordering::Relaxed) - made, 1);
    // Polled ready and dropped without a call: its reservation is released, not kept idle.
    let mut svc = failover.clone();
    svc.ready().await.unwrap();
    assert_eq!(permits.load(Ordering::Relaxed), 999);
    drop(svc);
    assert_eq!(permits.load(Ordering::Relaxed), 1_000);
    send_one(&failover).await;
    assert_eq!(permits.load(Ordering::Relaxed), 1_000);
}

/// One request through a fresh clone of `failover`.
async fn send_one(failover: &Failover<Counted>) {
    let mut svc = failover.clone();
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(Full::default()))
        .await
        .unwrap();
}
