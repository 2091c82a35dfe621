//! Log lines carry the layer's `name`, so two layers in one process can be told apart.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_idempotency::IdempotencyLayer;
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

use common::{Handler, app};

/// The `name` field of every event the crate logs (`None` for an event without one).
#[derive(Clone, Default)]
struct Names(Arc<Mutex<Vec<Option<String>>>>);

struct NameField(Option<String>);

impl Visit for NameField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "name" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "name" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber> Layer<S> for Names {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target().starts_with("tower_idempotency") {
            let mut name = NameField(None);
            event.record(&mut name);
            self.0.lock().unwrap().push(name.0);
        }
    }
}

async fn post(router: &axum::Router, key: &str, body: &'static str) -> StatusCode {
    let req = Request::post("/orders")
        .header("idempotency-key", key)
        .body(Body::from(body))
        .unwrap();
    router.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn every_log_line_names_the_layer() {
    let names = Names::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(names.clone()));
    let layer = IdempotencyLayer::builder().name("orders").build().unwrap();
    let router = app(Handler::default(), layer);
    assert_eq!(post(&router, "k", "a").await, StatusCode::CREATED);
    // A replay (DEBUG) and a reused key (INFO) are both logged.
    assert_eq!(post(&router, "k", "a").await, StatusCode::CREATED);
    assert_eq!(
        post(&router, "k", "b").await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let names = names.0.lock().unwrap();
    assert!(names.len() >= 2, "{names:?}");
    assert!(
        names.iter().all(|name| name.as_deref() == Some("orders")),
        "{names:?}"
    );
}
