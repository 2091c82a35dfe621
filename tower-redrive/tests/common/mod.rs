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

/// A fresh PostgreSQL server with a fresh database (stopped and deleted when the server is
/// dropped), or `None` to skip when PostgreSQL is not installed and not required.
pub async fn database() -> Option<(test_support::postgres::PostgresServer, String)> {
    match test_support::postgres::PostgresServer::start().await {
        Ok(server) => {
            let url = server.create_database().await.expect("createdb");
            Some((server, url))
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// Enqueues a POST to `http://u{path}` with no body, due at `at`.
pub async fn enqueue_post(
    queue: &dyn tower_redrive::RedriveQueue,
    path: &str,
    at: tower_redrive::Timestamp,
) -> tower_redrive::EntryId {
    let uri = format!("http://u{path}").parse().unwrap();
    let request = tower_redrive::StoredRequest::new(http::Method::POST, uri);
    queue
        .enqueue(tower_redrive::NewEntry::new(request, at))
        .await
        .unwrap()
}

/// Default settings on `clock`.
pub fn settings(clock: Arc<dyn tower_redrive::Clock>) -> tower_redrive::RedriveSettings {
    tower_redrive::RedriveSettings::builder()
        .clock(clock)
        .build()
        .unwrap()
}

/// Settings named `orders` on `clock`.
pub fn orders(clock: Arc<dyn tower_redrive::Clock>) -> tower_redrive::RedriveSettings {
    tower_redrive::RedriveSettings::builder()
        .name("orders")
        .clock(clock)
        .build()
        .unwrap()
}

pub fn post(tenant: &str, body: &str) -> http::Request<Full<Bytes>> {
    http::Request::post("http://upstream.test/orders")
        .header("x-tenant", tenant)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// The lease-renewal contract every store keeps: a renewal extends only the lease it names (a
/// compare-and-set on the token), so a worker whose entry was taken over cannot take it back.
pub async fn renewal_is_a_compare_and_set_on_the_lease_token(
    queue: &dyn tower_redrive::RedriveQueue,
    start: tower_redrive::Timestamp,
) {
    use std::time::Duration;
    use tower_redrive::{AttemptRecord, Claim, QueueError, StoredRequest, Timestamp};

    let secs = |s: u64| start.plus(Duration::from_secs(s));
    let claim = |worker: &'static str, now: Timestamp| {
        queue.claim(Claim {
            worker,
            now,
            lease: Duration::from_secs(30),
            limit: 10,
        })
    };
    let request = StoredRequest::new(
        http::Method::POST,
        "http://upstream.test/orders".parse().unwrap(),
    );
    let id = queue
        .enqueue(tower_redrive::NewEntry::new(request, start))
        .await
        .unwrap();

    let a = claim("a", secs(0)).await.unwrap();
    assert_eq!(a.len(), 1);
    let a = a[0].lease;
    // Renewed at 20 s until 50 s: at 40 s the entry is still a's.
    queue.renew_lease(id, a, secs(50)).await.unwrap();
    assert!(
        claim("b", secs(40)).await.unwrap().is_empty(),
        "a renewed lease is not claimable"
    );
    // A renewal never shortens a lease.
    queue.renew_lease(id, a, secs(35)).await.unwrap();
    assert!(claim("b", secs(45)).await.unwrap().is_empty());

    // a stops renewing; after 50 s b takes the entry over.
    let b = claim("b", secs(51)).await.unwrap();
    assert_eq!(b.len(), 1, "the lease ran out at 50 s");
    let b = b[0].lease;
    assert_ne!(a, b);

    // a's renewal is refused and changes nothing: b's lease still ends at 81 s.
    let err = queue.renew_lease(id, a, secs(500)).await.unwrap_err();
    assert!(
        matches!(err, QueueError::LeaseLost { id: lost } if lost == id),
        "{err}"
    );
    let c = claim("c", secs(82)).await.unwrap();
    assert_eq!(
        c.len(),
        1,
        "the refused renewal must not have extended the lease"
    );
    let c = c[0].lease;
    assert!(matches!(
        queue.renew_lease(id, b, secs(200)).await,
        Err(QueueError::LeaseLost { .. })
    ));

    // The holder's renewal works; once the entry is finished, no renewal is accepted.
    queue.renew_lease(id, c, secs(130)).await.unwrap();
    assert!(claim("d", secs(120)).await.unwrap().is_empty());
    let done = AttemptRecord::new(1, secs(121), "success", "200 OK");
    queue.complete(id, c, done).await.unwrap();
    assert!(matches!(
        queue.renew_lease(id, c, secs(300)).await,
        Err(QueueError::LeaseLost { .. })
    ));
}

/// The ordering contract every store keeps: requeuing an older dead entry while a newer entry
/// of the same ordering key is in flight does not put two entries of that key in flight at
/// once; the requeued one waits until the newer one's lease is over, then goes first again.
pub async fn a_requeued_entry_waits_for_the_in_flight_entry_of_its_key(
    queue: &dyn tower_redrive::RedriveQueue,
    start: tower_redrive::Timestamp,
) {
    use std::time::Duration;
    use tower_redrive::{Claim, NewEntry, StoredRequest, Timestamp};

    let entry = |path: &str| {
        NewEntry::new(
            StoredRequest::new(
                http::Method::POST,
                format!("http://u{path}").parse().unwrap(),
            ),
            start,
        )
        .ordering_key("tenant-1")
    };
    let old = queue
        .enqueue_dead(entry("/old"), "permanent failure: 500".into())
        .await
        .unwrap();
    let new = queue.enqueue(entry("/new")).await.unwrap();
    let claim = |worker: &'static str, now: Timestamp| {
        queue.claim(Claim {
            worker,
            now,
            lease: Duration::from_secs(60),
            limit: 10,
        })
    };
    let first = claim("a", start).await.unwrap();
    assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), [new]);
    assert!(queue.requeue(old, start).await.unwrap());
    let second = claim("b", start).await.unwrap();
    assert!(
        second.is_empty(),
        "claimed {:?} while /new is in flight",
        second.iter().map(|c| c.id).collect::<Vec<_>>()
    );
    let later = start.plus(Duration::from_secs(61));
    let third = claim("b", later).await.unwrap();
    assert_eq!(third.iter().map(|c| c.id).collect::<Vec<_>>(), [old]);
}
