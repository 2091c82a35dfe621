//! The layer over a real redis-server (started by the fixture, or `REDIS_URL`), and over a
//! local 3-node Redis Cluster.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::{Handler, app, client, post_key, problem_type, serve};
use test_support::redis::{RedisCluster, RedisServer};
use tokio::task::JoinSet;
use tower_idempotency::{
    Concurrency, Fingerprint, IdempotencyKey, IdempotencyLayer, IdempotencyStore, OutagePolicy,
    RecordKey, RedisStore, Scope, problems, store::Claim,
};

async fn redis() -> Option<RedisServer> {
    match RedisServer::start().await {
        Ok(server) => Some(server),
        Err(e) if test_support::redis::required() => panic!("Redis is required: {e}"),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

async fn layer(
    url: &str,
    build: impl FnOnce(
        tower_idempotency::IdempotencyLayerBuilder<RedisStore>,
    ) -> tower_idempotency::IdempotencyLayerBuilder<RedisStore>,
) -> IdempotencyLayer<RedisStore> {
    let store = RedisStore::connect(url).await.unwrap();
    build(IdempotencyLayer::builder().store(store))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_one_redis_execute_once() {
    let Some(redis) = redis().await else { return };
    let handler = Handler {
        delay: Duration::from_millis(600),
        ..Handler::default()
    };
    let a = serve(app(handler.clone(), layer(redis.url(), |b| b).await)).await;
    let b = serve(app(handler.clone(), layer(redis.url(), |b| b).await)).await;
    let client = client();
    let mut set = JoinSet::new();
    for i in 0..50 {
        let client = client.clone();
        let addr = if i % 2 == 0 { a } else { b };
        set.spawn(async move {
            post_key(&client, addr, "/orders", "two-servers", None, "x")
                .await
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = set.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(handler.count(), 1);
    for addr in [a, b] {
        let replay = post_key(&client, addr, "/orders", "two-servers", None, "x").await;
        assert_eq!(replay.status(), 201);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    }
    assert_eq!(handler.count(), 1);
}

/// Commands the client sent (round trips), from `INFO commandstats`. Commands run *inside* the
/// Lua scripts are counted there too under their own names; they must all be ones the scripts
/// use, so a command the client sent directly would still be noticed.
async fn round_trips(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    const IN_SCRIPTS: &[&str] = &["hmget", "hset", "pexpire", "pttl", "time", "del"];
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut sent = 0;
    for line in info
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
    {
        let (name, stats) = line.split_once(':').unwrap();
        let calls: u64 = stats
            .split("calls=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        match name {
            "info" | "config|resetstat" => {}
            "evalsha" | "eval" | "script|load" => sent += calls,
            other => assert!(IN_SCRIPTS.contains(&other), "unexpected command {other}"),
        }
    }
    sent
}

#[tokio::test]
async fn round_trips_are_two_for_a_first_request_and_one_for_a_replay() {
    let Some(redis) = redis().await else { return };
    let handler = Handler::default();
    let addr = serve(app(handler.clone(), layer(redis.url(), |b| b).await)).await;
    let client = client();
    // Warm up: the first use loads the scripts (EVALSHA → NOSCRIPT → SCRIPT LOAD → EVALSHA).
    post_key(&client, addr, "/orders", "warm-up", None, "x").await;
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();

    assert_eq!(
        post_key(&client, addr, "/orders", "rtt", None, "x")
            .await
            .status(),
        201
    );
    let first = round_trips(&mut admin).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    let replay = post_key(&client, addr, "/orders", "rtt", None, "x").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let second = round_trips(&mut admin).await;
    println!("redis round trips: first request {first}, replay {second}");
    assert_eq!((first, second), (2, 1));
}

#[tokio::test]
async fn records_expire_with_a_short_ttl() {
    let Some(redis) = redis().await else { return };
    let handler = Handler::default();
    let layer = layer(redis.url(), |b| b.ttl(Duration::from_millis(700))).await;
    let addr = serve(app(handler.clone(), layer)).await;
    let client = client();
    post_key(&client, addr, "/orders", "ttl", None, "x").await;
    let replay = post_key(&client, addr, "/orders", "ttl", None, "x").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let again = post_key(&client, addr, "/orders", "ttl", None, "x").await;
    assert!(again.headers().get("idempotent-replayed").is_none());
    assert_eq!(handler.count(), 2);
}

#[tokio::test]
async fn a_crashed_owners_lease_expires() {
    let Some(redis) = redis().await else { return };
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let parts = http::Request::post("/orders")
        .header("content-type", "text/plain")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let fp = Fingerprint::compute(&parts, &[http::header::CONTENT_TYPE], b"x");
    let key = RecordKey::new(
        &Scope::anonymous(),
        &IdempotencyKey::parse_str("crash").unwrap(),
    );
    let lease = Duration::from_millis(400);
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
    let addr = serve(app(handler.clone(), layer)).await;
    let client = client();
    assert_eq!(
        post_key(&client, addr, "/orders", "crash", None, "x")
            .await
            .status(),
        409
    );
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(
        post_key(&client, addr, "/orders", "crash", None, "x")
            .await
            .status(),
        201
    );
    assert_eq!(handler.count(), 1);
}

#[tokio::test]
async fn redis_store_fences_a_stale_owner() {
    let Some(redis) = redis().await else { return };
    let store = RedisStore::connect(redis.url()).await.unwrap();
    common::stale_owner_is_fenced(&store, Duration::from_millis(200), tokio::time::sleep).await;
}

#[tokio::test]
async fn redis_outage_fails_closed_or_open_as_configured() {
    let Some(mut redis) = redis().await else {
        return;
    };
    if std::env::var("REDIS_URL").is_ok() {
        eprintln!("skipping: cannot stop a Redis given by REDIS_URL");
        return;
    }
    let handler = Handler::default();
    let closed = serve(app(handler.clone(), layer(redis.url(), |b| b).await)).await;
    let open = serve(app(
        handler.clone(),
        layer(redis.url(), |b| b.on_store_outage(OutagePolicy::FailOpen)).await,
    ))
    .await;
    let client = client();
    assert_eq!(
        post_key(&client, closed, "/orders", "before", None, "x")
            .await
            .status(),
        201
    );
    redis.stop().unwrap();

    let res = post_key(&client, closed, "/orders", "down", None, "x").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(problem_type(res).await, problems::STORE_UNAVAILABLE);
    assert_eq!(handler.count(), 1, "fail closed: not executed");

    let res = post_key(&client, open, "/orders", "down", None, "x").await;
    assert_eq!(res.status(), 201);
    assert_eq!(handler.count(), 2, "fail open: executed without dedup");

    redis.restart().unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = post_key(&client, closed, "/orders", "after", None, "x")
            .await
            .status()
            .as_u16();
        if status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201, "the connection manager reconnects");
}

#[tokio::test]
async fn redis_dying_mid_request_never_panics_nor_executes_twice() {
    let Some(mut redis) = redis().await else {
        return;
    };
    if std::env::var("REDIS_URL").is_ok() {
        eprintln!("skipping: cannot stop a Redis given by REDIS_URL");
        return;
    }
    let handler = Handler {
        delay: Duration::from_millis(400),
        ..Handler::default()
    };
    let addr = serve(app(handler.clone(), layer(redis.url(), |b| b).await)).await;
    let client = client();
    let first = tokio::spawn({
        let client = client.clone();
        async move {
            post_key(&client, addr, "/orders", "mid", None, "x")
                .await
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    redis.stop().unwrap();
    // The handler ran: its response is delivered even though it could not be recorded.
    assert_eq!(first.await.unwrap(), 201);
    // A retry while the store is down is refused, not executed a second time.
    assert_eq!(
        post_key(&client, addr, "/orders", "mid", None, "x")
            .await
            .status(),
        503
    );
    assert_eq!(handler.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_three_node_redis_cluster() {
    let cluster = match RedisCluster::start(3).await {
        Ok(cluster) => cluster,
        Err(e) if test_support::redis::required() => panic!("Redis Cluster is required: {e}"),
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let store = RedisStore::connect_cluster(cluster.urls()).await.unwrap();
    let handler = Handler {
        delay: Duration::from_millis(200),
        ..Handler::default()
    };
    let layer = IdempotencyLayer::builder()
        .store(store.clone())
        .build()
        .unwrap();
    let addr = serve(app(handler.clone(), layer)).await;
    let client = client();
    // Keys spread over the three nodes' slots; each has 3 concurrent duplicates.
    let mut set = JoinSet::new();
    for key in 0..12 {
        for _ in 0..3 {
            let client = client.clone();
            set.spawn(async move {
                post_key(&client, addr, "/orders", &format!("c-{key}"), None, "x")
                    .await
                    .status()
                    .as_u16()
            });
        }
    }
    let mut statuses = Vec::new();
    while let Some(s) = set.join_next().await {
        statuses.push(s.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        24,
        "{statuses:?}"
    );
    assert_eq!(handler.count(), 12);
    for key in 0..12 {
        let replay = post_key(&client, addr, "/orders", &format!("c-{key}"), None, "x").await;
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    }
    common::stale_owner_is_fenced(&store, Duration::from_millis(200), tokio::time::sleep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_across_servers_polls_and_replays() {
    let Some(redis) = redis().await else { return };
    let handler = Handler {
        delay: Duration::from_millis(300),
        ..Handler::default()
    };
    let wait = |b: tower_idempotency::IdempotencyLayerBuilder<RedisStore>| {
        b.concurrency(Concurrency::Wait {
            max: Duration::from_secs(10),
        })
    };
    let a = serve(app(handler.clone(), layer(redis.url(), wait).await)).await;
    let b = serve(app(handler.clone(), layer(redis.url(), wait).await)).await;
    let client = client();
    let mut set = JoinSet::new();
    for i in 0..10 {
        let client = client.clone();
        let addr = if i % 2 == 0 { a } else { b };
        set.spawn(async move {
            let res = post_key(&client, addr, "/orders", "wait-across", None, "x").await;
            (res.status().as_u16(), res.text().await.unwrap())
        });
    }
    let mut bodies = Vec::new();
    while let Some(res) = set.join_next().await {
        let (status, body) = res.unwrap();
        assert_eq!(status, 201);
        bodies.push(body);
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
    assert_eq!(handler.count(), 1);
}

/// A connection that sends every command twice and answers with the second reply: what a
/// client that resends a command whose reply it lost (the cluster client does, on a dropped
/// connection) looks like to the scripts.
#[derive(Clone)]
struct ResendsEveryCommand(redis::aio::MultiplexedConnection);

impl redis::aio::ConnectionLike for ResendsEveryCommand {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let _lost = self.0.req_packed_command(cmd).await;
            self.0.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// A claim whose reply was lost and whose command was sent again finds its own claim: it is
/// acquired, not an in-flight conflict with itself (which would refuse the request, and every
/// retry of it, for a whole lease).
#[tokio::test]
async fn a_resent_claim_finds_its_own_claim() {
    let Some(redis) = redis().await else { return };
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let store = RedisStore::new(ResendsEveryCommand(conn));
    let key = RecordKey::new(
        &Scope::anonymous(),
        &IdempotencyKey::parse_str("k-resent").unwrap(),
    );
    let fp = Fingerprint::from_bytes([7; 32]);
    let claim = store
        .claim(&key, &fp, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");
    // Another request's claim of the same key is still refused.
    let other = RedisStore::new(
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap(),
    );
    let second = other
        .claim(&key, &fp, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(second, Claim::InFlight { .. }), "{second:?}");
}

/// A Redis the test can stall (`None`, after saying why, for one given by `REDIS_URL`), and a
/// server over it whose store is connected and has loaded its claim script (a claim must not
/// wait for a script upload when the test stalls Redis).
async fn stallable(
    handler: &Handler,
    build: impl FnOnce(
        tower_idempotency::IdempotencyLayerBuilder<RedisStore>,
    ) -> tower_idempotency::IdempotencyLayerBuilder<RedisStore>,
) -> Option<(RedisServer, std::net::SocketAddr)> {
    let redis = redis().await?;
    if std::env::var("REDIS_URL").is_ok() {
        eprintln!("skipping: cannot stall a Redis given by REDIS_URL");
        return None;
    }
    let layer = layer(redis.url(), build).await;
    let key = RecordKey::new(&Scope::anonymous(), &IdempotencyKey::generate());
    let fp = Fingerprint::from_bytes([0; 32]);
    let Claim::Acquired(token) = layer
        .store()
        .claim(&key, &fp, Duration::from_secs(5))
        .await
        .unwrap()
    else {
        panic!("a fresh key")
    };
    assert!(layer.store().release(&key, token).await.unwrap());
    let addr = serve(app(handler.clone(), layer)).await;
    Some((redis, addr))
}

/// Retries `key` every 100 ms (as a client honouring `Retry-After` would, only faster) until it
/// is answered 201 or `within` has passed; every other answer must be a 409 or a 503. Returns
/// how long it took and the answers before the 201.
async fn retry_until_created(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    key: &str,
    within: Duration,
) -> (Duration, Vec<u16>) {
    let start = std::time::Instant::now();
    let mut refused = Vec::new();
    loop {
        let status = post_key(client, addr, "/orders", key, None, "x")
            .await
            .status()
            .as_u16();
        if status == 201 {
            return (start.elapsed(), refused);
        }
        assert!(matches!(status, 409 | 503), "unexpected {status}");
        refused.push(status);
        assert!(
            start.elapsed() < within,
            "still refused {:?} after the store recovered: {refused:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis stalls for 3 s: a new key's claim times out on the client side (503, nothing ran),
/// but Redis still runs the claim script when it wakes. The client's honest retry must then
/// execute, once, within moments of the recovery — not get 409 in flight for a whole lease.
#[tokio::test]
async fn a_claim_refused_during_a_stall_does_not_lock_its_key() {
    let handler = Handler::default();
    let Some((redis, addr)) = stallable(&handler, |b| b).await else {
        return;
    };
    let client = client();
    let stall = redis.stall(Duration::from_secs(3)).await.unwrap();
    let refused = post_key(&client, addr, "/orders", "stalled", None, "x").await;
    assert_eq!(
        refused.status(),
        503,
        "the claim timed out during the stall"
    );
    assert_eq!(problem_type(refused).await, problems::STORE_UNAVAILABLE);
    stall.recovered().await.unwrap();

    let (took, refusals) =
        retry_until_created(&client, addr, "stalled", Duration::from_secs(2)).await;
    println!("executed {took:?} after the recovery, after {refusals:?}");
    assert_eq!(handler.count(), 1, "the retry, once");
    let replay = post_key(&client, addr, "/orders", "stalled", None, "x").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(handler.count(), 1);
}

/// A client that gives up while its request's claim waits on a stalled Redis (its connection
/// closes, the request's future is dropped mid-claim) leaves no claim behind either: nothing
/// will run under it, so its retry executes as soon as Redis is back.
#[tokio::test]
async fn a_claim_abandoned_by_its_client_during_a_stall_does_not_lock_its_key() {
    let handler = Handler::default();
    let Some((redis, addr)) = stallable(&handler, |b| b).await else {
        return;
    };
    let client = client();
    let stall = redis.stall(Duration::from_millis(1500)).await.unwrap();
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("http://{addr}/orders"))
        .header("idempotency-key", "impatient")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    stall.recovered().await.unwrap();

    let (took, refusals) =
        retry_until_created(&client, addr, "impatient", Duration::from_secs(2)).await;
    println!("executed {took:?} after the recovery, after {refusals:?}");
    assert_eq!(handler.count(), 1);
}

/// The lease of a running handler is renewed through a store stall shorter than the lease:
/// the renewal waits for Redis and lands before the lease ends, so a duplicate arriving after
/// the stall is still refused and the handler's outcome is recorded.
#[tokio::test]
async fn the_lease_survives_a_stall_shorter_than_the_lease() {
    let handler = Handler {
        delay: Duration::from_millis(2500),
        ..Handler::default()
    };
    let lease = Duration::from_millis(1200);
    let Some((redis, addr)) = stallable(&handler, |b| b.lease(lease)).await else {
        return;
    };
    let client = client();
    let first = tokio::spawn({
        let client = client.clone();
        async move {
            let res = post_key(&client, addr, "/orders", "stall-lease", None, "x").await;
            (res.status().as_u16(), res.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stall = redis.stall(Duration::from_millis(700)).await.unwrap();
    stall.recovered().await.unwrap();
    // Past the lease the claim was written with: only renewals keep it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let duplicate = post_key(&client, addr, "/orders", "stall-lease", None, "x").await;
    assert_eq!(
        duplicate.status(),
        409,
        "the running handler still holds the key"
    );
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 201);
    let replay = post_key(&client, addr, "/orders", "stall-lease", None, "x").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), body);
    assert_eq!(handler.count(), 1);
}

/// See `common::outcome_is_recorded_for_a_client_gone_mid_body`: the same with Redis.
#[tokio::test]
async fn a_client_gone_while_the_body_is_read_still_has_its_outcome_recorded() {
    let Some(redis) = redis().await else { return };
    let layer = layer(redis.url(), |b| b.lease(common::SHORT_LEASE)).await;
    common::outcome_is_recorded_for_a_client_gone_mid_body(layer).await;
}
