//! Exactly-once effect under a connection reset after the server recorded the payment.

use std::time::Duration;

use http_body_util::BodyExt;
use resilience_examples::{
    deployment::{Deployment, serve_payments},
    faults::FaultPlan,
    payments::{Ledger, Receipt},
    stack::{ClientSettings, ProtectedClient},
};
use resilience_tests::payment_request;
use tower::{ServiceBuilder, ServiceExt};
use tower_fault::reqwest::ReqwestService;
use tower_idempotency::{MemoryStore, REPLAYED_HEADER};
use tower_retry_plus::{RetryInfo, RetryLayer, RetryOutcome};

fn resets_everything() -> FaultPlan {
    FaultPlan {
        reset_after_processing: 1.0,
        ..FaultPlan::default()
    }
}

#[tokio::test]
async fn a_reset_after_recording_is_retried_elsewhere_and_replayed() {
    let deployment = Deployment::start_each(
        &resets_everything(),
        &FaultPlan::default(),
        MemoryStore::new(1_000),
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

    let res = client
        .stack()
        .oneshot(payment_request("", "pay-1", 1250))
        .await
        .unwrap();

    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()[REPLAYED_HEADER.as_str()], "true");
    let info = *res.extensions().get::<RetryInfo>().unwrap();
    assert_eq!(info.attempts, 2);
    assert_eq!(info.outcome, RetryOutcome::Success);
    let receipt: Receipt =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // The standby answered with the primary's recorded response: the payment ran once, there.
    assert_eq!(receipt.server, "primary");
    assert_eq!(deployment.ledger.times_recorded("pay-1"), 1);
    assert_eq!(deployment.primary_faults().reset_after_processing, 1);
}

#[tokio::test]
async fn one_server_many_resets_every_payment_recorded_once() {
    let ledger = Ledger::new();
    let plan = FaultPlan {
        reset_after_processing: 0.4,
        seed: 3,
        ..FaultPlan::default()
    };
    let (server, faults) = serve_payments("solo", &plan, MemoryStore::new(1_000), &ledger)
        .await
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .max_attempts(10)
                .backoff(tower_retry_plus::Backoff::constant(Duration::from_millis(
                    1,
                )))
                .idempotency_key(true)
                .no_budget()
                .build()
                .unwrap(),
        )
        .service(ReqwestService::new(reqwest::Client::new()));

    let mut replays = 0;
    for i in 0..30 {
        let res = client
            .clone()
            .oneshot(payment_request(&server.url(""), &format!("p{i}"), 10))
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        replays += u64::from(res.headers().contains_key(REPLAYED_HEADER.as_str()));
    }
    let resets = faults.stats().snapshot().reset_after_processing;
    assert!(resets >= 5, "the plan reset {resets} of 30");
    let stats = ledger.stats();
    assert_eq!((stats.records, stats.unique, stats.duplicates), (30, 30, 0));
    // A payment whose answer was lost is answered by a replay (a replay can itself be reset,
    // so there are at most as many answered replays as resets).
    assert!(
        replays > 0 && replays <= resets,
        "{replays} replays, {resets} resets"
    );
}

#[tokio::test]
async fn without_keys_the_retry_layer_refuses_to_resend_a_possibly_processed_post() {
    let ledger = Ledger::new();
    let (server, _faults) =
        serve_payments("solo", &resets_everything(), MemoryStore::new(10), &ledger)
            .await
            .unwrap();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::builder().max_attempts(5).build().unwrap())
        .service(ReqwestService::new(reqwest::Client::new()));

    let err = client
        .oneshot(payment_request(&server.url(""), "unsafe", 10))
        .await
        .expect_err("the reset is returned, not retried");
    assert_eq!(
        tower_fault::inspect(err.as_ref()).kind,
        tower_fault::ErrorKind::Reset,
        "{err}"
    );
    // Recorded once; a blind resend would have charged twice.
    assert_eq!(ledger.times_recorded("unsafe"), 1);
}
