//! Keyed breakers: isolation, eviction, the open-fraction guard.

use std::time::Duration;

use tower::{Service, ServiceExt, service_fn};
use tower_breaker::{
    Backoff, Breaker, Clock, State, error::BreakerError, keyed::KeyedBreakerLayer,
};
use tower_fault::BoxError;
use tower_layer::Layer;

type Req = http::Request<()>;

/// An upstream whose hosts named `down*` answer 503.
fn upstream()
-> impl Service<Req, Response = http::Response<()>, Error = BoxError, Future: Send> + Clone {
    service_fn(|req: Req| async move {
        let down = req.uri().host().is_some_and(|h| h.starts_with("down"));
        Ok(http::Response::builder()
            .status(if down { 503 } else { 200 })
            .body(())
            .unwrap())
    })
}

fn req(host: &str) -> Req {
    http::Request::get(format!("http://{host}/"))
        .body(())
        .unwrap()
}

async fn send<S: Service<Req>>(svc: &mut S, host: &str) -> Result<S::Response, S::Error> {
    svc.ready().await?.call(req(host)).await
}

fn template() -> tower_breaker::BreakerBuilder {
    Breaker::builder()
        .clock(Clock::Tokio)
        .name("hosts")
        .consecutive_failures(2)
}

#[tokio::test(start_paused = true)]
async fn keys_are_isolated() {
    let layer = KeyedBreakerLayer::builder(template()).build().unwrap();
    let mut svc = layer.layer(upstream());
    for _ in 0..2 {
        send(&mut svc, "down.test").await.unwrap();
    }
    let err = send(&mut svc, "down.test").await.unwrap_err();
    assert!(err.is::<BreakerError>());
    for _ in 0..10 {
        assert_eq!(send(&mut svc, "up.test").await.unwrap().status(), 200);
    }
    let down = layer.breaker(&"down.test".parse().unwrap()).unwrap();
    assert_eq!(
        (down.name(), down.state()),
        ("hosts/down.test", State::Open)
    );
    assert_eq!(layer.open_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_host_header_keys_origin_form_requests_and_keyless_requests_pass() {
    let layer = KeyedBreakerLayer::builder(template()).build().unwrap();
    let mut svc = layer.layer(upstream());
    let with_host = http::Request::get("/")
        .header("host", "api.test:8080")
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(with_host).await.unwrap();
    assert!(layer.breaker(&"api.test:8080".parse().unwrap()).is_some());
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(layer.len(), 1, "a request without a key gets no breaker");
}

#[tokio::test(start_paused = true)]
async fn a_closure_key_selects_the_breaker() {
    let layer = KeyedBreakerLayer::builder(template())
        .key_fn(|req: &Req| {
            req.headers()
                .get("x-tenant")
                .map(|t| t.to_str().unwrap_or("?").to_owned())
        })
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: Req| async {
        Ok::<_, BoxError>(http::Response::builder().status(500).body(()).unwrap())
    }));
    let tenant = |t: &str| {
        http::Request::get("/")
            .header("x-tenant", t)
            .body(())
            .unwrap()
    };
    for _ in 0..2 {
        svc.ready()
            .await
            .unwrap()
            .call(tenant("acme"))
            .await
            .unwrap();
    }
    assert_eq!(
        layer.breaker(&"acme".to_owned()).unwrap().state(),
        State::Open
    );
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(tenant("globex"))
            .await
            .unwrap()
            .status(),
        500
    );
}

#[tokio::test(start_paused = true)]
async fn idle_closed_breakers_are_evicted_and_open_ones_kept_while_their_open_period_runs() {
    let five_minutes = Duration::from_secs(300);
    let layer = KeyedBreakerLayer::builder(template().open_backoff(Backoff::exponential(
        five_minutes,
        2.0,
        five_minutes,
    )))
    .max_keys(100)
    .idle_timeout(Duration::from_secs(60))
    .build()
    .unwrap();
    let mut svc = layer.layer(upstream());
    for host in ["a.test", "b.test", "down.test", "down.test"] {
        let _ = send(&mut svc, host).await;
    }
    assert_eq!(layer.len(), 3);
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&mut svc, "a.test").await.unwrap(); // keeps a.test fresh
    tokio::time::advance(Duration::from_secs(31)).await;
    send(&mut svc, "c.test").await.unwrap(); // a new key sweeps idle ones
    assert!(
        layer.breaker(&"b.test".parse().unwrap()).is_none(),
        "idle and closed: evicted"
    );
    assert!(
        layer.breaker(&"a.test".parse().unwrap()).is_some(),
        "recently used: kept"
    );
    let down = layer.breaker(&"down.test".parse().unwrap());
    assert_eq!(
        down.map(|b| b.state()),
        Some(State::Open),
        "open, its open period still running: kept however idle"
    );
    assert_eq!(layer.len(), 3);

    // Once its open period is over, an idle open breaker only waits for a call nobody makes:
    // the next sweep (due on any call once the idle timeout passed) drops it, new key or not.
    tokio::time::advance(five_minutes).await;
    send(&mut svc, "a.test").await.unwrap();
    assert!(
        layer.breaker(&"down.test".parse().unwrap()).is_none(),
        "idle, open period over: evicted"
    );
    assert!(layer.breaker(&"a.test".parse().unwrap()).is_some());
}

/// Breakers left open on keys nobody calls any more do not hold the `max_open_fraction`
/// slots forever: once idle past their open period, they are swept, and another key can open.
#[tokio::test(start_paused = true)]
async fn abandoned_open_breakers_give_their_open_slots_back() {
    let second = Duration::from_secs(1);
    let layer = KeyedBreakerLayer::builder(
        Breaker::builder()
            .clock(Clock::Tokio)
            .name("hosts")
            .consecutive_failures(1)
            .open_backoff(Backoff::exponential(second, 2.0, second)),
    )
    .idle_timeout(second)
    .max_open_fraction(0.5)
    .build()
    .unwrap();
    let mut svc = layer.layer(upstream());
    for host in ["c.test", "d.test", "down-a.test", "down-b.test"] {
        let _ = send(&mut svc, host).await;
    }
    assert_eq!(
        layer.open_count(),
        2,
        "a and b open: the fraction's two slots"
    );
    // An hour on, a and b were never called again; c starts failing.
    for _ in 0..3600 {
        tokio::time::advance(second).await;
        send(&mut svc, "c.test").await.unwrap();
        send(&mut svc, "d.test").await.unwrap();
    }
    let failing = service_fn(|_: Req| async {
        Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap())
    });
    let mut failing = layer.layer(failing);
    let _ = send(&mut failing, "c.test").await;
    assert_eq!(
        layer.breaker(&"c.test".parse().unwrap()).map(|b| b.state()),
        Some(State::Open),
        "c may open: the abandoned breakers were swept"
    );
}

#[tokio::test(start_paused = true)]
async fn the_map_is_bounded_preferring_to_keep_open_breakers() {
    let layer = KeyedBreakerLayer::builder(template())
        .max_keys(10)
        .build()
        .unwrap();
    let mut svc = layer.layer(upstream());
    for _ in 0..2 {
        send(&mut svc, "down0.test").await.unwrap();
    }
    for i in 0..100 {
        tokio::time::advance(Duration::from_millis(10)).await;
        send(&mut svc, &format!("h{i}.test")).await.unwrap();
        assert!(layer.len() <= 10);
    }
    assert!(
        layer.breaker(&"h99.test".parse().unwrap()).is_some(),
        "the newest key is there"
    );
    assert!(
        layer.breaker(&"h0.test".parse().unwrap()).is_none(),
        "the oldest closed key went"
    );
    assert_eq!(
        layer
            .breaker(&"down0.test".parse().unwrap())
            .map(|b| b.state()),
        Some(State::Open),
        "the open breaker outlives closed ones"
    );
}

#[tokio::test(start_paused = true)]
async fn never_more_than_the_max_open_fraction_of_keys_open() {
    let layer = KeyedBreakerLayer::builder(template())
        .max_open_fraction(0.3)
        .build()
        .unwrap();
    let mut svc = layer.layer(upstream());
    let hosts: Vec<String> = (0..10).map(|i| format!("down{i}.test")).collect();
    for _ in 0..5 {
        for host in &hosts {
            let _ = send(&mut svc, host).await;
        }
    }
    assert_eq!(layer.len(), 10);
    assert_eq!(layer.open_count(), 3);
    // Once the open ones close again, others may open.
    for host in &hosts {
        if let Some(b) = layer.breaker(&host.parse().unwrap())
            && b.state() == State::Open
        {
            b.reset();
        }
    }
    for host in &hosts {
        let _ = send(&mut svc, host).await;
        let _ = send(&mut svc, host).await;
    }
    assert_eq!(layer.open_count(), 3);
}

#[test]
fn keyed_configuration_is_validated() {
    let err = KeyedBreakerLayer::builder(template())
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), Some("max_keys"));
    let err = KeyedBreakerLayer::builder(template())
        .max_open_fraction(1.5)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), Some("max_open_fraction"));
    // `no_max_open_fraction()` takes a guard set before it back off.
    let unguarded = KeyedBreakerLayer::builder(template())
        .max_open_fraction(1.5)
        .no_max_open_fraction()
        .build();
    assert!(unguarded.is_ok());
    let err =
        KeyedBreakerLayer::builder(Breaker::builder().clock(Clock::Tokio).half_open_permits(0))
            .build()
            .unwrap_err();
    assert_eq!(err.field(), Some("half_open_permits"));
}

#[tokio::test(start_paused = true)]
async fn credentials_in_the_authority_never_name_a_breaker() {
    let layer = KeyedBreakerLayer::builder(template()).build().unwrap();
    let mut svc = layer.layer(upstream());
    send(&mut svc, "alice:s3cret@down.test").await.unwrap();
    send(&mut svc, "down.test").await.unwrap();
    assert_eq!(layer.len(), 1, "one upstream, one breaker, whoever logs in");
    let down = layer.breaker(&"down.test".parse().unwrap()).unwrap();
    assert_eq!(
        (down.name(), down.state()),
        ("hosts/down.test", State::Open)
    );
}
