//! Failover during an outage of the primary: nothing lost, nothing doubled, traffic returns.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::BodyExt;
use indicatif::ProgressBar;
use resilience_examples::{
    deployment::{Deployment, StoreChoice},
    faults::FaultPlan,
    load::{self, LoadPlan, Sent},
    payments::Receipt,
    stack::{ClientSettings, ProtectedClient},
};
use resilience_tests::payment_request;
use tower::ServiceExt;
use tower_failover::EndpointStatus;

async fn send(client: &ProtectedClient, id: &str) -> Result<Receipt, String> {
    let res = client
        .stack()
        .oneshot(payment_request("", id, 100))
        .await
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(res.status().to_string());
    }
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_outage_of_the_primary_loses_nothing() {
    let deployment = Deployment::start(&FaultPlan::default(), &StoreChoice::Memory)
        .await
        .unwrap();
    let settings = ClientSettings {
        probe_interval: Duration::from_millis(50),
        ..ClientSettings::default()
    };
    let client = ProtectedClient::new(
        &deployment.primary.url(""),
        &deployment.standby.url(""),
        &settings,
    )
    .unwrap();
    let servers = Arc::new(Mutex::new(Vec::new()));
    let payments = load::payments(160, 9, 0.0);
    let _outage = deployment
        .primary
        .schedule_outage(Duration::from_millis(150), Duration::from_millis(300));
    let outcomes = load::drive(
        &payments,
        LoadPlan {
            concurrency: 8,
            rate: Some(200.0),
        },
        &ProgressBar::hidden(),
        |payment| {
            let (client, servers) = (client.clone(), Arc::clone(&servers));
            async move {
                match send(&client, &payment.id).await {
                    Ok(receipt) => {
                        servers.lock().unwrap().push(receipt.server);
                        Sent::ok(None)
                    }
                    Err(reason) => Sent::failed(reason, None),
                }
            }
        },
    )
    .await;

    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.sent.failure.as_ref())
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    let stats = deployment.ledger.stats();
    assert_eq!((stats.records, stats.unique), (160, 160));
    let by_standby = servers
        .lock()
        .unwrap()
        .iter()
        .filter(|s| *s == "standby")
        .count();
    assert!(by_standby > 0, "the standby took over during the outage");
    assert!(deployment.faults().outage_resets > 0 || by_standby > 20);

    // The primary comes back: probes bring it back into rotation and it takes traffic again.
    let mut healthy = false;
    for _ in 0..100 {
        let status = client.failover().endpoint("primary").map(|e| e.status);
        if status == Some(EndpointStatus::Healthy) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "the primary is healthy again after the outage");
    let receipt = send(&client, "after-outage").await.unwrap();
    assert_eq!(receipt.server, "primary");
}
