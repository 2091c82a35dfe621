//! The suite's client stack over reqwest.
//!
//! ```text
//! RetryLayer (Idempotency-Key per payment) -> BreakerLayer -> FailoverLayer [primary] [standby] -> reqwest
//! ```
//!
//! ```text
//! cargo run -p resilience-examples --bin reqwest_client -- --primary http://10.0.0.1:3000 --standby http://10.0.0.2:3000
//! ```
//!
//! Without `--primary`/`--standby` it starts the chaos demo's two servers on loopback (with
//! faults), so it runs anywhere.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use resilience_examples::{
    deployment::{Deployment, StoreChoice},
    faults::FaultPlan,
};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{Breaker, Window};
use tower_failover::{FailoverLayer, HttpProbe};
use tower_fault::{BoxError, reqwest::ReqwestService};
use tower_retry_plus::{Backoff, RetryInfo, RetryLayer};

/// Sends a few payments through retry, breaker and failover over reqwest.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the primary.
    #[arg(long, requires = "standby")]
    primary: Option<String>,
    /// Base URL of the standby.
    #[arg(long, requires = "primary")]
    standby: Option<String>,
    /// Payments to send.
    #[arg(long, default_value_t = 20)]
    count: u32,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let (_servers, primary, standby) = match (args.primary, args.standby) {
        (Some(p), Some(s)) => (None, p, s),
        _ => {
            let d = Deployment::start(&FaultPlan::chaos(1), &StoreChoice::Memory).await?;
            let (p, s) = (d.primary.url(""), d.standby.url(""));
            (Some(d), p, s)
        }
    };

    // One reqwest client (one connection pool) behind every endpoint and the probes.
    let http = ReqwestService::new(reqwest::Client::new());
    let failover = FailoverLayer::builder()
        .name("payments")
        .tier([("primary", primary.as_str())])
        .tier([("standby", standby.as_str())])
        .probe(HttpProbe::shallow(http.clone(), "/healthz"))
        .probe_interval(Duration::from_secs(1))
        .build()?;
    let breaker = Breaker::builder()
        .name("payments")
        .window(Window::time(Duration::from_secs(10)))
        .failure_rate_threshold(0.5)
        .minimum_calls(10)
        .build()?;
    let retry = RetryLayer::builder()
        .name("payments")
        .max_attempts(5)
        .backoff(Backoff::exponential(
            Duration::from_millis(50),
            2.0,
            Duration::from_secs(2),
        ))
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(2))
        // POST is not idempotent: one key per payment, reused on every attempt, makes the
        // server (tower-idempotency) execute it once.
        .idempotency_key(true)
        .build()?;
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker.layer())
        .layer(failover)
        .service(http);

    for i in 0..args.count {
        let body = serde_json::json!({ "id": format!("example-{i}"), "amount": 1000 + i });
        let req = http::Request::post("/payments")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        match client.clone().oneshot(req).await {
            Ok(res) => {
                let info = RetryInfo::of(&res);
                let replayed = res.headers().contains_key("idempotent-replayed");
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                println!(
                    "payment {i:>2}: {status} after {} attempt(s){} {}",
                    info.attempts,
                    if replayed { " (replayed)" } else { "" },
                    String::from_utf8_lossy(&body),
                );
            }
            Err(err) => println!(
                "payment {i:>2}: failed: {}",
                tower_fault::DisplayChain(&*err)
            ),
        }
    }
    println!("breaker: {:?}", breaker.state());
    Ok(())
}
