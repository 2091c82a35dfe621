//! One `retry_attempt` span per attempt, carrying the attempt number and resend count.

mod support;

use std::sync::{Arc, Mutex};

use tower::Layer as _;
use tower_retry_plus::{Backoff, Jitter, RetryLayer};
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

use support::{Step, call, get, scripted};

#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<Vec<(u64, u64)>>>);

struct Fields(u64, u64);

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "attempt" => self.0 = value,
            "http.request.resend_count" => self.1 = value,
            _ => {}
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber> Layer<S> for Attempts {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _id: &span::Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "retry_attempt" {
            let mut fields = Fields(0, 0);
            attrs.record(&mut fields);
            self.0.lock().unwrap().push((fields.0, fields.1));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_span_per_attempt() {
    let spans = Attempts::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let (upstream, _log) = scripted([Step::Status(503), Step::Status(503)]);
    let mut svc = RetryLayer::builder()
        .backoff(Backoff::constant(std::time::Duration::from_millis(1)))
        .jitter(Jitter::None)
        .build()
        .unwrap()
        .layer(upstream);
    call(&mut svc, get("http://up/")).await.unwrap();
    assert_eq!(*spans.0.lock().unwrap(), [(1, 0), (2, 1), (3, 2)]);
}
