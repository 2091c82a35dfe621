//! Helpers of the suite's end-to-end tests (the tests live in `e2e/`).
//!
//! The tests reuse the chaos demo's parts (`resilience_examples`): the payments service, the
//! fault injector, the loopback server that can reset connections and go down, and the client
//! stack. These helpers build requests and read answers.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http_body_util::Full;

/// A `POST /payments` request (path only, as failover completes the URI; or `base` + path).
///
/// # Panics
/// Never for valid ids (the request is always well-formed).
#[must_use]
pub fn payment_request(base: &str, id: &str, amount: u64) -> http::Request<Full<Bytes>> {
    let body = serde_json::json!({ "id": id, "amount": amount }).to_string();
    http::Request::post(format!("{base}/payments"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}
