//! The suite's client stack over hyper-util's legacy client.
//!
//! ```text
//! RetryLayer (Idempotency-Key per payment) -> BreakerLayer -> FailoverLayer [primary] [standby] -> hyper
//! ```
//!
//! The retry layer hands the client a `ReplayBody<Full<Bytes>>`, so the hyper client is built
//! for that body type; its responses (`Incoming`) and errors (`hyper_util::client::legacy::Error`)
//! are classified by tower-fault like reqwest's.
//!
//! ```text
//! cargo run -p resilience-examples --bin hyper_client -- --primary http://10.0.0.1:3000 --standby http://10.0.0.2:3000
//! ```
//!
//! Without `--primary`/`--standby` it starts the chaos demo's two servers on loopback.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use resilience_examples::{
    deployment::{Deployment, StoreChoice},
    faults::FaultPlan,
};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::Breaker;
use tower_failover::FailoverLayer;
use tower_fault::BoxError;
use tower_retry_plus::{ReplayBody, RetryInfo, RetryLayer};

/// Sends a few payments through retry, breaker and failover over hyper.
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
            let d = Deployment::start(&FaultPlan::chaos(2), &StoreChoice::Memory).await?;
            let (p, s) = (d.primary.url(""), d.standby.url(""));
            (Some(d), p, s)
        }
    };

    let http: Client<_, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let failover = FailoverLayer::builder()
        .name("payments")
        .tier([("primary", primary.as_str())])
        .tier([("standby", standby.as_str())])
        .eject_after(3)
        .build()?;
    let breaker = Breaker::builder().name("payments").build()?;
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .name("payments")
                .max_attempts(5)
                .attempt_timeout(Duration::from_secs(2))
                .idempotency_key(true)
                .build()?,
        )
        .layer(breaker.layer())
        .layer(failover)
        .service(http);

    for i in 0..args.count {
        let body = serde_json::json!({ "id": format!("hyper-{i}"), "amount": 500 + i });
        let req = http::Request::post("/payments")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        match client.clone().oneshot(req).await {
            Ok(res) => {
                let attempts = RetryInfo::of(&res).attempts;
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                println!(
                    "payment {i:>2}: {status} after {attempts} attempt(s) {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Err(err) => println!(
                "payment {i:>2}: failed: {}",
                tower_fault::DisplayChain(&*err)
            ),
        }
    }
    Ok(())
}
