//! The client most code bases start with: reqwest and a retry loop.
//!
//! It retries every 5xx, 429 and transport error a fixed number of times with a fixed pause,
//! sends no idempotency key, ignores `Retry-After`, and knows one server. Each of those is a
//! reasonable-looking choice; together they lose payments during an outage and charge twice
//! when a connection dies after the server recorded the payment.

use std::time::Duration;

use crate::{
    load::Sent,
    payments::{Payment, Receipt},
};

/// A plain reqwest client with a naive retry loop.
#[derive(Debug, Clone)]
pub struct NaiveClient {
    client: reqwest::Client,
    url: String,
    max_attempts: u32,
    pause: Duration,
}

impl NaiveClient {
    /// Posts payments to `url`, trying each at most `max_attempts` times, `pause` apart.
    ///
    /// Each attempt times out after two seconds.
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised (as `reqwest::Client::new` does).
    #[must_use]
    pub fn new(url: impl Into<String>, max_attempts: u32, pause: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a reqwest client");
        Self {
            client,
            url: url.into(),
            max_attempts: max_attempts.max(1),
            pause,
        }
    }

    /// Sends one payment, retrying as described above.
    pub async fn send(&self, payment: &Payment) -> Sent {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = match self.client.post(&self.url).json(payment).send().await {
                Ok(res) if res.status().is_success() => {
                    let sent = Sent::ok(Some(attempt));
                    return match res.json::<Receipt>().await {
                        Ok(receipt) => sent.served_by(receipt.server),
                        Err(_) => sent,
                    };
                }
                Ok(res) => {
                    let status = res.status();
                    if status.is_client_error() && status.as_u16() != 429 {
                        return Sent::failed(status_label(status), Some(attempt));
                    }
                    status_label(status)
                }
                Err(err) => tower_fault::inspect(&err).kind.as_str().to_owned(),
            };
            if attempt >= self.max_attempts {
                return Sent::failed(format!("gave up: {last}"), Some(attempt));
            }
            tokio::time::sleep(self.pause).await;
        }
    }
}

/// `"503 Service Unavailable"`.
#[must_use]
pub fn status_label(status: http::StatusCode) -> String {
    format!(
        "{} {}",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        faults::{FaultLayer, FaultPlan},
        payments::{Ledger, router},
        server::ChaosServer,
    };
    use tower::ServiceBuilder;

    #[tokio::test]
    async fn a_reset_after_processing_makes_the_naive_loop_charge_twice() {
        let ledger = Ledger::new();
        let faults = FaultLayer::new(FaultPlan {
            reset_after_processing: 0.5,
            seed: 11,
            ..FaultPlan::default()
        })
        .unwrap();
        let svc = ServiceBuilder::new()
            .layer(faults.clone())
            .service(router("primary", ledger.clone()));
        let server = ChaosServer::start(svc, faults.stats()).await.unwrap();
        let client = NaiveClient::new(server.url("/payments"), 5, Duration::from_millis(1));
        for i in 0..20 {
            let sent = client
                .send(&Payment {
                    id: format!("p{i}"),
                    amount: 10,
                })
                .await;
            assert_eq!(sent.failure, None);
            assert_eq!(
                sent.server.as_deref(),
                Some("primary"),
                "the receipt's server"
            );
        }
        let resets = faults.stats().snapshot().reset_after_processing;
        assert!(resets > 0);
        assert_eq!(
            ledger.stats().duplicates,
            resets,
            "every reset became a double charge"
        );
    }

    #[tokio::test]
    async fn gives_up_and_labels_the_last_failure() {
        let ledger = Ledger::new();
        let faults = FaultLayer::new(FaultPlan {
            unavailable: 1.0,
            ..FaultPlan::default()
        })
        .unwrap();
        let svc = ServiceBuilder::new()
            .layer(faults.clone())
            .service(router("p", ledger));
        let server = ChaosServer::start(svc, faults.stats()).await.unwrap();
        let client = NaiveClient::new(server.url("/payments"), 3, Duration::ZERO);
        let sent = client
            .send(&Payment {
                id: "x".into(),
                amount: 1,
            })
            .await;
        assert_eq!(
            sent.failure.as_deref(),
            Some("gave up: 503 Service Unavailable")
        );
        assert_eq!(sent.attempts, Some(3));
        assert_eq!(faults.stats().snapshot().unavailable, 3);
    }
}
