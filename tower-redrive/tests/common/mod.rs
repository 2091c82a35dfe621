//! A fake upstream (a real axum app, called in-process so the paused clock stays exact) that
//! executes each idempotency key once, like a server behind tower-idempotency.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicUsize, Ordering},
    },
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, response::IntoResponse};
use http::StatusCode;
use http_body_util::Full;
use tower::util::BoxCloneSyncService;

pub type Client =
    BoxCloneSyncService<http::Request<Full<Bytes>>, http::Response<axum::body::Body>, Infallible>;

#[derive(Debug, Default)]
pub struct Upstream {
    /// The status answered while not 200 (0 = healthy).
    pub failing: AtomicU16,
    /// Every request that reached the upstream.
    pub hits: AtomicUsize,
    /// Executions per idempotency key (a replayed key is not executed again).
    pub executed: Mutex<HashMap<String, usize>>,
    /// (tenant, body) in execution order.
    pub log: Mutex<Vec<(String, String)>>,
}

impl Upstream {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn fail_with(&self, status: u16) {
        self.failing.store(status, Ordering::SeqCst);
    }

    pub fn recover(&self) {
        self.failing.store(0, Ordering::SeqCst);
    }

    pub fn executions(&self) -> HashMap<String, usize> {
        self.executed.lock().unwrap().clone()
    }

    pub fn log(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().clone()
    }

    pub fn client(self: &Arc<Self>) -> Client {
        let app = Router::new().fallback(handler).with_state(Arc::clone(self));
        BoxCloneSyncService::new(app)
    }
}

async fn handler(
    State(up): State<Arc<Upstream>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    up.hits.fetch_add(1, Ordering::SeqCst);
    let failing = up.failing.load(Ordering::SeqCst);
    if failing != 0 {
        return (StatusCode::from_u16(failing).unwrap(), "down").into_response();
    }
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().trim_matches('"').to_owned())
        .unwrap_or_default();
    let mut executed = up.executed.lock().unwrap();
    let count = executed.entry(key).or_insert(0);
    *count += 1;
    if *count == 1 {
        let tenant = headers
            .get("x-tenant")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        up.log
            .lock()
            .unwrap()
            .push((tenant, String::from_utf8_lossy(&body).into_owned()));
    }
    (StatusCode::OK, "done").into_response()
}

pub fn post(tenant: &str, body: &str) -> http::Request<Full<Bytes>> {
    http::Request::post("http://upstream.test/orders")
        .header("x-tenant", tenant)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}
