//! An axum payments server with the suite's server-side layers.
//!
//! * `POST /payments` — deduplicated by `IdempotencyLayer` (memory store, or Redis with
//!   `--redis URL`): a retried request with the same `Idempotency-Key` gets the recorded
//!   response (`Idempotent-Replayed: true`), never a second charge. Before recording, the
//!   handler calls a downstream fraud check through a `BreakerLayer`; while that breaker is
//!   open the handler answers `503` + `Retry-After` at once instead of waiting on a dead
//!   dependency.
//! * `GET /healthz` — liveness, for failover probes.
//! * `GET /metrics` — every layer's metrics in the Prometheus text format.
//!
//! ```text
//! cargo run -p resilience-examples --bin axum_server -- --listen 127.0.0.1:3000
//! curl -i -X POST localhost:3000/payments -H 'idempotency-key: "k-1"' \
//!      -H 'content-type: application/json' -d '{"id":"p-1","amount":1250}'
//! curl -s localhost:3000/metrics | grep idempotency_requests_total
//! ```
//!
//! Without `--downstream URL` a flaky fraud-check stub (40% 503s) is started on loopback, so
//! the breaker has something to do.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use resilience_examples::{
    faults::{FaultLayer, FaultPlan},
    payments::{Payment, Receipt},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{Backoff, Breaker, CircuitBreaker, Window, error::BreakerError};
use tower_fault::{BoxError, RetryAfterHint, problem::Problem, reqwest::ReqwestService};
use tower_idempotency::{IdempotencyLayer, MemoryStore, RedisStore};

/// A payments server with idempotency, a breaker around its downstream call, and metrics.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Base URL of the fraud-check service (`POST {URL}/check`); a flaky stub if absent.
    #[arg(long, value_name = "URL")]
    downstream: Option<String>,
    /// Keep idempotency records in Redis (shared by every instance) instead of memory.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

#[derive(Clone)]
struct AppState {
    fraud_check: CircuitBreaker<ReqwestService>,
    fraud_url: Arc<str>,
}

const DOWNSTREAM_DOWN: &str = "https://example.dev/problems/fraud-check-unavailable";

async fn create_payment(State(state): State<AppState>, Json(payment): Json<Payment>) -> Response {
    let check = http::Request::post(format!("{}/check", state.fraud_url))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&payment).expect("serializable"),
        )))
        .expect("a valid request: the downstream URL was checked at startup");
    match state.fraud_check.clone().oneshot(check).await {
        Ok(res) if res.status().is_success() => {}
        Ok(res) => {
            return Problem::new(
                StatusCode::BAD_GATEWAY,
                DOWNSTREAM_DOWN,
                "Fraud check failed",
            )
            .detail(format!("the fraud check answered {}", res.status()))
            .into_response::<axum::body::Body>()
            .into_response();
        }
        Err(err) => {
            // An open breaker answers at once, with how long to wait.
            let problem = match err.downcast_ref::<BreakerError>() {
                Some(open) => {
                    let p = Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        DOWNSTREAM_DOWN,
                        "Fraud check unavailable",
                    )
                    .detail("the fraud-check circuit is open");
                    match open.retry_after() {
                        Some(delay) => p.retry_after(delay),
                        None => p,
                    }
                }
                None => Problem::new(
                    StatusCode::BAD_GATEWAY,
                    DOWNSTREAM_DOWN,
                    "Fraud check failed",
                )
                .detail(err.to_string()),
            };
            return problem.into_response::<axum::body::Body>().into_response();
        }
    }
    // Record the payment here (a database write in a real service).
    let receipt = Receipt {
        id: payment.id,
        amount: payment.amount,
        server: "axum_server".into(),
    };
    (StatusCode::CREATED, Json(receipt)).into_response()
}

fn app<St>(state: AppState, idempotency: IdempotencyLayer<St>, metrics: PrometheusHandle) -> Router
where
    St: tower_idempotency::IdempotencyStore,
{
    Router::new()
        .route("/payments", post(create_payment))
        .with_state(state)
        // Only the payments route is deduplicated; health and metrics stay outside.
        .layer(idempotency)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
}

/// A fraud check that fails 40% of the time.
async fn start_stub() -> Result<String, BoxError> {
    let faults = FaultLayer::new(FaultPlan {
        unavailable: 0.4,
        seed: 7,
        ..FaultPlan::default()
    })?;
    let stub = Router::new()
        .route(
            "/check",
            post(|| async { Json(serde_json::json!({ "ok": true })) }),
        )
        .layer(faults);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, stub).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Installed before the layers are built: they register their metric handles at build time.
    let metrics = PrometheusBuilder::new().install_recorder()?;

    let fraud_url: Arc<str> = match args.downstream {
        Some(url) => {
            let url = url.trim_end_matches('/');
            // Checked here, once: the handler builds `{URL}/check` for every payment.
            let check = http::Uri::try_from(format!("{url}/check"))
                .map_err(|e| format!("--downstream {url:?} is not a URL: {e}"))?;
            if check.scheme().is_none() || check.authority().is_none() {
                return Err(format!(
                    "--downstream {url:?} needs a scheme and a host (http://host:port)"
                )
                .into());
            }
            url.into()
        }
        None => start_stub().await?.into(),
    };
    let breaker = Breaker::builder()
        .name("fraud-check")
        .window(Window::time(Duration::from_secs(10)))
        .failure_rate_threshold(0.3)
        .minimum_calls(5)
        .open_backoff(Backoff::exponential(
            Duration::from_secs(2),
            2.0,
            Duration::from_secs(30),
        ))
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let state = AppState {
        fraud_check: ServiceBuilder::new()
            .layer(breaker.layer())
            .service(ReqwestService::new(client)),
        fraud_url,
    };
    let router = match args.redis {
        Some(url) => {
            let store = RedisStore::connect(&url).await?;
            app(
                state,
                IdempotencyLayer::builder()
                    .store(store)
                    .name("payments")
                    .build()?,
                metrics,
            )
        }
        None => app(
            state,
            IdempotencyLayer::builder()
                .store(MemoryStore::new(100_000))
                .name("payments")
                .build()?,
            metrics,
        ),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "payments server listening");
    axum::serve(listener, router).await?;
    Ok(())
}
