//! A payments-style axum service: `POST /payments` records a payment in a [`Ledger`].
//!
//! The ledger stands for the database behind the service. Primary and standby share one (as two
//! replicas of a real service share their database), so the demo can count, after the run, how
//! many times each payment was recorded: once is correct, zero is a lost payment, twice is a
//! double charge.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

/// A payment as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The client's identifier of the payment (unique per logical payment).
    pub id: String,
    /// The amount in minor units (cents). Zero is invalid and answered with 422.
    pub amount: u64,
}

/// The service's answer to a recorded payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The payment's identifier.
    pub id: String,
    /// The amount recorded.
    pub amount: u64,
    /// Which server instance recorded it.
    pub server: String,
}

/// Totals of a ledger, as `GET /payments/stats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerStats {
    /// Rows written (a payment recorded twice counts twice).
    pub records: u64,
    /// Distinct payment ids recorded.
    pub unique: u64,
    /// Rows beyond the first for the same id: double charges.
    pub duplicates: u64,
}

#[derive(Debug, Default)]
struct Rows {
    by_id: HashMap<String, u32>,
    records: u64,
}

/// The in-memory "database" of payments, shared by every server instance given a clone.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    rows: Arc<Mutex<Rows>>,
}

impl Ledger {
    /// An empty ledger.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        // A poisoned lock still holds consistent counts: every update is a single increment.
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a payment (every call writes a row, as a naive handler would).
    pub fn record(&self, payment: &Payment) {
        let mut rows = self.rows();
        *rows.by_id.entry(payment.id.clone()).or_default() += 1;
        rows.records += 1;
    }

    /// How many times `id` was recorded.
    #[must_use]
    pub fn times_recorded(&self, id: &str) -> u32 {
        self.rows().by_id.get(id).copied().unwrap_or(0)
    }

    /// The ledger's totals.
    #[must_use]
    pub fn stats(&self) -> LedgerStats {
        let rows = self.rows();
        let unique = rows.by_id.len() as u64;
        LedgerStats {
            records: rows.records,
            unique,
            duplicates: rows.records - unique,
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    ledger: Ledger,
    server: Arc<str>,
}

/// The payments router of one server instance named `server`, writing into `ledger`.
///
/// * `POST /payments` with `{"id": "...", "amount": 1250}` → `201` and a [`Receipt`]; an amount
///   of zero → `422` (a permanent failure: retrying cannot help);
/// * `GET /payments/stats` → [`LedgerStats`];
/// * `GET /healthz` → `200 ok`.
///
/// ```
/// use resilience_examples::payments::{Ledger, router};
/// use tower::ServiceExt;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let ledger = Ledger::new();
/// let req = http::Request::post("/payments")
///     .header("content-type", "application/json")
///     .body(axum::body::Body::from(r#"{"id":"p-1","amount":1250}"#))
///     .unwrap();
/// let res = router("primary", ledger.clone()).oneshot(req).await.unwrap();
/// assert_eq!(res.status(), 201);
/// assert_eq!(ledger.times_recorded("p-1"), 1);
/// # });
/// ```
pub fn router(server: &str, ledger: Ledger) -> Router {
    Router::new()
        .route("/payments", post(create_payment))
        .route("/payments/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(AppState {
            ledger,
            server: server.into(),
        })
}

async fn create_payment(State(state): State<AppState>, Json(payment): Json<Payment>) -> Response {
    if payment.amount == 0 {
        let body = serde_json::json!({
            "type": "https://example.dev/problems/invalid-amount",
            "title": "Invalid amount",
            "status": 422,
        });
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    state.ledger.record(&payment);
    let receipt = Receipt {
        id: payment.id,
        amount: payment.amount,
        server: state.server.to_string(),
    };
    (StatusCode::CREATED, Json(receipt)).into_response()
}

async fn stats(State(state): State<AppState>) -> Json<LedgerStats> {
    Json(state.ledger.stats())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn post(body: &str) -> http::Request<axum::body::Body> {
        http::Request::post("/payments")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn records_every_call_and_counts_duplicates() {
        let ledger = Ledger::new();
        let app = router("primary", ledger.clone());
        for _ in 0..2 {
            let res = app
                .clone()
                .oneshot(post(r#"{"id":"a","amount":5}"#))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
        }
        let res = app
            .clone()
            .oneshot(post(r#"{"id":"b","amount":7}"#))
            .await
            .unwrap();
        let receipt: Receipt =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(receipt.server, "primary");
        assert_eq!(
            ledger.stats(),
            LedgerStats {
                records: 3,
                unique: 2,
                duplicates: 1
            }
        );
        let res = app
            .oneshot(
                http::Request::get("/payments/stats")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let stats: LedgerStats =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(stats.duplicates, 1);
    }

    #[tokio::test]
    async fn zero_amount_is_rejected_and_not_recorded() {
        let ledger = Ledger::new();
        let res = router("primary", ledger.clone())
            .oneshot(post(r#"{"id":"z","amount":0}"#))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ledger.times_recorded("z"), 0);
    }
}
