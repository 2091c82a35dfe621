//! Every layer of the stack reports through the `metrics` facade, with DESIGN.md's names.

use resilience_examples::{
    deployment::{Deployment, IDEMPOTENCY_NAME},
    faults::FaultPlan,
    payments::{Ledger, Payment},
    stack::{self, ClientSettings, ProtectedClient},
};
use test_support::metrics::Capture;
use tower_idempotency::MemoryStore;

// `#[tokio::test]` is current-thread: the servers, the client and the probes all run on the
// capturing thread.
#[tokio::test]
async fn retry_breaker_failover_and_idempotency_all_report() {
    let capture = Capture::start();
    let resets = FaultPlan {
        reset_after_processing: 1.0,
        ..FaultPlan::default()
    };
    let deployment = Deployment::start_each(
        &resets,
        &FaultPlan::default(),
        MemoryStore::new(100),
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
    for i in 0..4 {
        let sent = client
            .send(&Payment {
                id: format!("m{i}"),
                amount: 1,
            })
            .await;
        assert_eq!(sent.failure, None);
    }
    let snap = capture.snapshot();
    let name = [("name", stack::NAME)];

    // retry: every payment needed a second attempt.
    assert_eq!(
        snap.counter(
            "retry_requests_total",
            &[("name", stack::NAME), ("outcome", "success")]
        ),
        Some(4)
    );
    assert!(snap.counter("retry_attempts_total", &name).unwrap() >= 8);
    assert!(snap.histogram_count("retry_backoff_seconds", &name) >= 4);

    // breaker: it sits outside retry and judges payments, so the resets retry absorbed are not
    // its failures: it saw four successful payments and stayed closed.
    let upstream = [("name", "chaos-upstream")];
    assert_eq!(
        snap.counter(
            "breaker_calls_total",
            &[("name", "chaos-upstream"), ("result", "success")]
        ),
        Some(4)
    );
    assert_eq!(
        snap.counter(
            "breaker_calls_total",
            &[("name", "chaos-upstream"), ("result", "failure")]
        )
        .unwrap_or(0),
        0
    );
    assert_eq!(snap.gauge("breaker_state", &upstream), Some(0.0));

    // failover: the retries went to the standby.
    assert!(
        snap.counter(
            "failover_requests_total",
            &[("name", stack::NAME), ("endpoint", "standby")]
        )
        .unwrap()
            >= 4
    );
    assert!(snap.series_count("failover_endpoint_healthy") >= 2);

    // idempotency: the primary executed, the standby replayed.
    let idem = |result: &str| {
        snap.counter(
            "idempotency_requests_total",
            &[("name", IDEMPOTENCY_NAME), ("result", result)],
        )
        .unwrap_or(0)
    };
    // Each payment executed exactly once (on the primary, or on the standby once failover had
    // ejected the primary); the copies the primary's resets sent to the standby were replays.
    assert_eq!(idem("executed"), 4);
    assert!(idem("replayed") >= 1, "replayed {}", idem("replayed"));
    assert!(snap.histogram_count("idempotency_store_seconds", &[("name", IDEMPOTENCY_NAME)]) > 0);
}
