//! Deduplication across two server instances sharing a real Redis.

use std::time::Duration;

use http_body_util::BodyExt;
use resilience_examples::{
    deployment::Deployment,
    faults::FaultPlan,
    payments::{Ledger, Receipt},
    stack::{ClientSettings, ProtectedClient},
};
use resilience_tests::payment_request;
use test_support::redis::RedisServer;
use tower::ServiceExt;
use tower_idempotency::{REPLAYED_HEADER, RedisStore};

async fn redis() -> Option<RedisServer> {
    match RedisServer::start().await {
        Ok(server) => Some(server),
        // Only reachable when Redis is not required (CI and scripts/test require it).
        Err(why) => {
            eprintln!("skipping the Redis end-to-end tests: {why}");
            None
        }
    }
}

async fn store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(server.url())
        .await
        .expect("connect to the test Redis")
        .with_prefix(prefix)
}

#[tokio::test]
async fn a_payment_recorded_by_one_instance_is_replayed_by_the_other() {
    let Some(server) = redis().await else { return };
    let resets = FaultPlan {
        reset_after_processing: 1.0,
        ..FaultPlan::default()
    };
    let deployment = Deployment::start_each(
        &resets,
        &FaultPlan::default(),
        store(&server, "e2e-replay:").await,
        Ledger::new(),
    )
    .await
    .unwrap();
    let client = ProtectedClient::new(
        &deployment.primary.url(""),
        &deployment.standby.url(""),
        &ClientSettings::default(),
    )
    .unwrap();

    for i in 0..3 {
        let id = format!("redis-{i}");
        let res = client
            .stack()
            .oneshot(payment_request("", &id, 10))
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        assert_eq!(deployment.ledger.times_recorded(&id), 1);
        if i == 0 {
            // The primary recorded it and reset; the standby found the record in Redis.
            assert_eq!(res.headers()[REPLAYED_HEADER.as_str()], "true");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let receipt: Receipt = serde_json::from_slice(&body).unwrap();
            assert_eq!(receipt.server, "primary");
        }
    }
}

#[tokio::test]
async fn concurrent_duplicates_across_two_instances_execute_once() {
    let Some(server) = redis().await else { return };
    let deployment = Deployment::start_each(
        &FaultPlan::default(),
        &FaultPlan::default(),
        store(&server, "e2e-race:").await,
        Ledger::new(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let urls = [
        deployment.primary.url("/payments"),
        deployment.standby.url("/payments"),
    ];
    let sends = (0..10).map(|i| {
        let req = client
            .post(&urls[i % 2])
            .header("idempotency-key", "\"same-key\"")
            .json(&serde_json::json!({ "id": "race", "amount": 42 }))
            .timeout(Duration::from_secs(10));
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.bytes().await.unwrap())
        }
    });
    let answers = futures_join_all(sends).await;

    assert_eq!(deployment.ledger.times_recorded("race"), 1);
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body:?}");
        assert_eq!(
            body, &answers[0].1,
            "every copy gets the first one's answer"
        );
    }
}

async fn futures_join_all<F: Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("a request task panicked"));
    }
    out
}
