//! Redis round trips per idempotent request (first, replay), read from the server's own
//! `INFO commandstats`, and the wall time of each through an axum router with tower-idempotency's
//! `RedisStore`. Redis is started by `test_support::redis` (or `REDIS_URL`); without a
//! `redis-server` the bench prints why and exits 0, unless `CI` or `REQUIRE_REDIS=1` is set.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use resilience_benches::alloc::CountingAlloc;
use resilience_benches::report::report_dir;
use test_support::redis::RedisServer;
use tower::{Service, ServiceExt};
use tower_idempotency::{IdempotencyLayer, RedisStore};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const KIB: &[u8] = &[b'x'; 1024];

fn order(key: &str) -> Request<Body> {
    Request::post("/orders")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from("{\"sku\":\"A-1\",\"qty\":1}"))
        .expect("request")
}

async fn send(app: &mut Router, key: &str) -> (u16, bool) {
    let res = ServiceExt::<Request<Body>>::ready(app)
        .await
        .expect("ready")
        .call(order(key))
        .await
        .expect("response");
    let status = res.status().as_u16();
    let replayed = res
        .headers()
        .contains_key(tower_idempotency::REPLAYED_HEADER);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), KIB.len());
    (status, replayed)
}

/// Commands clients sent: everything in `INFO commandstats` except the commands Lua scripts run
/// inside the server (counted there under their own names) and this bench's own INFO/CONFIG.
async fn commands_sent(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    const IN_SCRIPTS: &[&str] = &[
        "hmget", "hget", "hset", "pexpire", "pttl", "time", "del", "exists", "hgetall", "set",
        "get",
    ];
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .expect("INFO");
    let mut sent = 0;
    for line in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let Some((name, stats)) = line.split_once(':') else {
            continue;
        };
        let calls: u64 = stats
            .split("calls=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if name == "info" || name.starts_with("config") || IN_SCRIPTS.contains(&name) {
            continue;
        }
        sent += calls;
    }
    sent
}

async fn reset(admin: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(admin)
        .await
        .expect("RESETSTAT");
}

const N: u64 = 200;

async fn run(url: &str) -> String {
    let store = RedisStore::connect(url).await.expect("connect");
    let mut app = Router::new()
        .route("/orders", post(|| async { Bytes::from_static(KIB) }))
        .layer(
            IdempotencyLayer::builder()
                .store(store)
                .build()
                .expect("layer"),
        );
    let mut admin = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    // Warm up: the first use loads the scripts.
    send(&mut app, "warm-up").await;

    reset(&mut admin).await;
    let t0 = Instant::now();
    for i in 0..N {
        let (status, replayed) = send(&mut app, &format!("first-{i}")).await;
        assert!(status == 200 && !replayed);
    }
    let first_time = t0.elapsed() / N as u32;
    let first_rt = commands_sent(&mut admin).await as f64 / N as f64;

    reset(&mut admin).await;
    let t0 = Instant::now();
    for i in 0..N {
        let (status, replayed) = send(&mut app, &format!("first-{i}")).await;
        assert!(status == 200 && replayed, "not a replay");
    }
    let replay_time = t0.elapsed() / N as u32;
    let replay_rt = commands_sent(&mut admin).await as f64 / N as f64;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## redis\n\n### idempotency with RedisStore (loopback redis-server), {N} requests each\n"
    );
    let _ = writeln!(
        out,
        "| request | round trips (INFO commandstats) | time/request |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    let fmt = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    let _ = writeln!(out, "| first | {first_rt:.2} | {} |", fmt(first_time));
    let _ = writeln!(out, "| replay | {replay_rt:.2} | {} |", fmt(replay_time));
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("redis: bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        let server = match RedisServer::start().await {
            Ok(s) => s,
            Err(e) if test_support::redis::required() => panic!("Redis is required: {e}"),
            Err(e) => {
                eprintln!("redis bench skipped: {e}");
                return None;
            }
        };
        Some(run(server.url()).await)
    });
    if let Some(out) = out {
        println!("{out}");
        let dir = report_dir();
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("redis.md"), &out);
        }
    }
}
