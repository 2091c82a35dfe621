//! The distributed queue against a real PostgreSQL server started by the test setup.
#![cfg(feature = "postgres")]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Upstream, database, orders, post, settings};
use tower::{Layer, ServiceExt};
use tower_redrive::{
    Claim, Clock, EntryState, ManualClock, NewEntry, PostgresQueue, QueueError, RedriveEvent,
    RedriveLayer, RedriveQueue, Redriver, StoredRequest, Timestamp,
};

const START: Timestamp = Timestamp::from_millis(1_750_000_000_000);

fn entry(i: usize, tenant: Option<&str>) -> NewEntry {
    let mut req = StoredRequest::new(
        http::Method::POST,
        "http://upstream.test/orders".parse().unwrap(),
    );
    if let Some(t) = tenant {
        req.headers.insert("x-tenant", t.parse().unwrap());
    }
    req.body = bytes::Bytes::from(format!("{i}"));
    let e = NewEntry::new(req, START);
    match tenant {
        Some(t) => e.ordering_key(t),
        None => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_deliver_an_entry_twice_and_keep_key_order() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue_a = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    let queue_b = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    let tenants = ["t1", "t2", "t3"];
    for i in 0..60 {
        let tenant = (i % 4 != 0).then(|| tenants[i % 3]);
        queue_a.enqueue(entry(i, tenant)).await.unwrap();
    }
    let worker = |queue: Arc<PostgresQueue>, id: &str| {
        Redriver::builder(queue, upstream.client(), settings(clock.clone()))
            .worker_id(id)
            .batch(4)
            .build()
            .unwrap()
    };
    let run = |mut w: Redriver<common::Client>| {
        tokio::spawn(async move {
            let mut delivered = 0;
            for _ in 0..200 {
                let r = w.run_once().await.unwrap();
                assert_eq!(r.unrecorded, 0);
                delivered += r.delivered;
                if r.claimed == 0 {
                    tokio::task::yield_now().await;
                }
            }
            delivered
        })
    };
    let a = run(worker(queue_a.clone(), "a"));
    let b = run(worker(queue_b, "b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a + b, 60, "a={a} b={b}");
    let executions = upstream.executions();
    assert_eq!(executions.len(), 60);
    assert!(
        executions.values().all(|n| *n == 1),
        "an entry was delivered twice"
    );
    let log = upstream.log();
    for t in tenants {
        let bodies: Vec<usize> = log
            .iter()
            .filter(|(x, _)| x == t)
            .map(|(_, b)| b.parse().unwrap())
            .collect();
        assert!(
            bodies.windows(2).all(|w| w[0] < w[1]),
            "{t} out of order: {bodies:?}"
        );
    }
    assert_eq!(queue_a.stats().await.unwrap().delivered, 60);
}

#[tokio::test]
async fn a_killed_workers_lease_expires_and_another_worker_delivers() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    let id = queue.enqueue(entry(1, Some("k"))).await.unwrap();
    let behind = queue.enqueue(entry(2, Some("k"))).await.unwrap();

    // Worker "dead" claims the entry, then dies before reporting.
    let claimed = queue
        .claim(Claim {
            worker: "dead",
            now: clock.now(),
            lease: Duration::from_secs(30),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        [id],
        "one per ordering key"
    );

    let mut survivor = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .lease(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(
        survivor.run_once().await.unwrap().claimed,
        0,
        "leased, and the next is behind it"
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(survivor.run_once().await.unwrap().delivered, 1);
    assert_eq!(
        survivor.run_once().await.unwrap().delivered,
        1,
        "then the one behind it"
    );

    // The dead worker's late report is refused.
    let late = tower_redrive::AttemptRecord::new(2, clock.now(), "success", "200 OK");
    let err = queue
        .complete(id, claimed[0].lease, late)
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::LeaseLost { id: lost } if lost == id));
    assert_eq!(
        queue.get(behind).await.unwrap().unwrap().state,
        EntryState::Delivered
    );
    assert_eq!(upstream.executions().len(), 2);
}

#[tokio::test]
async fn layer_dead_letter_requeue_and_janitor_on_postgres() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    // Migrations are idempotent: connecting again applies nothing and fails nothing.
    PostgresQueue::connect(&url).await.unwrap();

    let receipt = RedriveLayer::builder(queue.clone(), settings(clock.clone()))
        .build()
        .unwrap()
        .layer(upstream.client())
        .oneshot(post("a", "x"))
        .await
        .unwrap()
        .deferred()
        .unwrap();
    upstream.fail_with(400);
    clock.advance(Duration::from_secs(3600));
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().dead_lettered, 1);
    let dead = queue.list(EntryState::Dead, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].history.len(), 2);
    assert!(
        dead[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("400 Bad Request")
    );

    upstream.recover();
    assert!(queue.requeue(receipt.id, clock.now()).await.unwrap());
    assert_eq!(worker.run_once().await.unwrap().delivered, 1);
    assert_eq!(
        upstream.executions().get(&receipt.idempotency_key),
        Some(&1)
    );

    clock.advance(Duration::from_secs(49 * 3600));
    assert_eq!(worker.run_janitor().await.unwrap().delivered, 1);
    assert!(queue.get(receipt.id).await.unwrap().is_none());
}

#[tokio::test]
async fn corrupt_attempt_history_is_repaired_and_an_unreadable_entry_is_dead_lettered_on_postgres()
{
    let Some((_server, url)) = database().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    let readable = queue.enqueue(entry(1, Some("a"))).await.unwrap();
    let unreadable = queue.enqueue(entry(2, Some("b"))).await.unwrap();
    {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(connection);
        // `jsonb` keeps the column valid JSON, but not necessarily an attempt history.
        client
            .execute(
                "UPDATE redrive_entries SET history = '{\"torn\": true}' WHERE id = $1",
                &[&readable.0],
            )
            .await
            .unwrap();
        client
            .execute(
                "UPDATE redrive_entries SET history = '\"garbage\"', headers = '\\x01ffff' WHERE id = $1",
                &[&unreadable.0],
            )
            .await
            .unwrap();
        drop(client);
        conn.await.unwrap().unwrap();
    }
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .build()
        .unwrap();
    let report = worker.run_once().await.unwrap();
    assert_eq!(
        (report.rescheduled, report.dead_lettered, report.unrecorded),
        (1, 1, 0),
        "{report:?}"
    );
    let record = queue.get(readable).await.unwrap().unwrap();
    assert_eq!(record.history.len(), 2, "{:?}", record.history);
    assert_eq!(record.history[0].class, "corrupt");
    assert!(
        record.history[0]
            .outcome
            .contains("attempt history was unreadable and was reset; it held: {\"torn\": true}"),
        "{:?}",
        record.history[0]
    );
    assert_eq!(record.history[1].class, "transient");
    let dead = queue.get(unreadable).await.unwrap().unwrap();
    assert_eq!(dead.state, EntryState::Dead);
    assert!(
        dead.reason
            .as_deref()
            .unwrap()
            .starts_with("corrupt entry: header blob truncated"),
        "{:?}",
        dead.reason
    );
    assert_eq!(dead.history[0].class, "corrupt");
    assert!(dead.history[0].outcome.contains("\"garbage\""));
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lease_renewal_by_a_worker_that_was_taken_over_is_refused_on_postgres() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let queue = PostgresQueue::connect(&url).await.unwrap();
    common::renewal_is_a_compare_and_set_on_the_lease_token(&queue, START).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_three_times_longer_than_the_lease_is_not_taken_over_on_postgres() {
    use std::sync::atomic::Ordering;

    let Some((_server, url)) = database().await else {
        return;
    };
    // Real time (a paused clock would race the database I/O): a 600 ms lease renewed every
    // 200 ms, a 1.8 s delivery, a rival worker trying every 100 ms on its own connection.
    let clock: Arc<dyn Clock> = Arc::new(tower_redrive::TokioClock::starting_at(START));
    let lease = Duration::from_millis(600);
    let upstream = Upstream::new();
    let queue = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    let rival_queue = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    let id = queue.enqueue(entry(1, Some("k"))).await.unwrap();
    let slow = {
        let client = upstream.client();
        tower::service_fn(
            move |req: http::Request<http_body_util::Full<bytes::Bytes>>| {
                let client = client.clone();
                async move {
                    tokio::time::sleep(3 * lease).await;
                    client.oneshot(req).await
                }
            },
        )
    };
    let mut worker = Redriver::builder(queue.clone(), slow, settings(clock.clone()))
        .worker_id("slow")
        .lease(lease)
        .build()
        .unwrap();
    let mut rival = Redriver::builder(rival_queue, upstream.client(), settings(clock.clone()))
        .worker_id("rival")
        .lease(lease)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let delivery = tokio::spawn(async move { worker.run_once().await.unwrap() });
    let mut tries = 0;
    while !delivery.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let round = rival.run_once().await.unwrap();
        assert_eq!(
            round.claimed,
            0,
            "a second worker claimed the entry {:?} into a delivery",
            started.elapsed()
        );
        tries += 1;
    }
    assert!(
        tries >= 10,
        "the rival tried throughout the delivery ({tries})"
    );
    let report = delivery.await.unwrap();
    assert_eq!((report.delivered, report.unrecorded), (1, 0));
    assert!(started.elapsed() >= 3 * lease);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        queue.get(id).await.unwrap().unwrap().state,
        EntryState::Delivered
    );
}

fn timed_out(err: &QueueError) -> bool {
    match err {
        QueueError::Backend { source, .. } => source
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
        _ => false,
    }
}

/// A server that accepts the connection and never answers the startup is an error after
/// `CONNECT_TIMEOUT`, not a hang (tokio-postgres' own connect timeout covers the socket only).
#[tokio::test(start_paused = true)]
async fn connecting_to_a_server_that_never_answers_fails_instead_of_hanging() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("host=127.0.0.1 port={port} user=nobody dbname=nothing");
    let err = PostgresQueue::connect(&url).await.expect_err("no server");
    assert!(timed_out(&err), "{err:?}");
}

/// An operation the database does not answer (here: a table locked by another session) fails
/// with a timed-out error after the queue's timeout, and the queue works again afterwards.
#[tokio::test]
async fn an_operation_the_database_does_not_answer_times_out() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let queue = PostgresQueue::connect(&url)
        .await
        .unwrap()
        .timeout(Duration::from_millis(300));
    queue.enqueue(entry(0, None)).await.unwrap();
    let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE redrive_entries IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let err = queue.stats().await.unwrap_err();
    assert!(timed_out(&err), "{err:?}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    // The queue works again afterwards (on a fresh connection: the one the operation timed
    // out on is not trusted any more).
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.pending, 1);
}

/// A statement that outlives the timeout holds its connection; the operations after the timeout
/// go to a fresh connection instead of queueing behind it (a black-holed connection, which the
/// OS takes minutes to close, is left the same way).
#[tokio::test]
async fn after_a_timeout_the_next_operation_does_not_wait_behind_the_slow_one() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let queue = PostgresQueue::connect(&url)
        .await
        .unwrap()
        .timeout(Duration::from_millis(500));
    let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        // Writes wait; reads do not.
        .batch_execute("BEGIN; LOCK TABLE redrive_entries IN SHARE MODE")
        .await
        .unwrap();
    let err = queue.enqueue(entry(0, None)).await.unwrap_err();
    assert!(timed_out(&err), "{err:?}");
    // The lock stays for a while: the abandoned enqueue still waits on the old connection.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        locker.batch_execute("ROLLBACK").await.unwrap();
    });
    // A read answers at once on a fresh connection (on the old one it would wait behind the
    // abandoned enqueue, and time out).
    let started = tokio::time::Instant::now();
    let found = queue.get(tower_redrive::EntryId(424_242)).await;
    assert!(
        !matches!(&found, Err(e) if timed_out(e)),
        "queued behind the slow statement: {found:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// As on SQLite: a requeued older entry waits while a newer entry of its key is in flight.
#[tokio::test]
async fn a_requeued_entry_waits_for_the_in_flight_entry_of_its_key_on_postgres() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let queue = PostgresQueue::connect(&url).await.unwrap();
    common::a_requeued_entry_waits_for_the_in_flight_entry_of_its_key(&queue, START).await;
}

/// PostgreSQL stops in the middle of a round: the outcome of the delivery in flight cannot be
/// recorded. The round stops (the rest of the batch is not delivered), the worker backs off and
/// delivers nothing while the database is down — not even once the batch's leases ran out —
/// and when it is back, records the kept outcome with the entry's own lease and goes on. Each
/// entry reaches the upstream once; the failed one is due when its schedule says, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_mid_round_stops_the_round_and_the_kept_outcome_is_recorded_later() {
    use std::sync::atomic::Ordering;

    let Some((server, url)) = database().await else {
        return;
    };
    let server = Arc::new(server);
    let lease = Duration::from_secs(1);
    let clock: Arc<dyn Clock> = Arc::new(tower_redrive::TokioClock::starting_at(START));
    let upstream = Upstream::new();
    let queue = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    // The first entry's delivery stops the database and is answered 503: its reschedule
    // cannot be recorded.
    let stop = StoredRequest::new(
        http::Method::POST,
        "http://upstream.test/stop".parse().unwrap(),
    );
    let first = queue.enqueue(NewEntry::new(stop, START)).await.unwrap();
    for i in 1..5 {
        queue.enqueue(entry(i, None)).await.unwrap();
    }
    let service = {
        let (server, upstream) = (server.clone(), upstream.clone());
        tower::service_fn(
            move |req: http::Request<http_body_util::Full<bytes::Bytes>>| {
                let (server, upstream) = (server.clone(), upstream.clone());
                async move {
                    if req.uri().path() != "/stop" {
                        return upstream.client().oneshot(req).await;
                    }
                    server.stop().await.unwrap();
                    upstream.hits.fetch_add(1, Ordering::SeqCst);
                    Ok(http::Response::builder()
                        .status(503)
                        .body(axum::body::Body::empty())
                        .unwrap())
                }
            },
        )
    };
    let worker = Redriver::builder(queue.clone(), service, orders(clock.clone()))
        .lease(lease)
        .poll_interval(Duration::from_millis(50))
        .store_backoff(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut events = worker.subscribe();
    let handle = worker.spawn();
    let failed = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("the round stopped")
        .unwrap();
    let RedriveEvent::StoreFailed {
        operation, error, ..
    } = failed
    else {
        panic!("{failed:?}")
    };
    assert_eq!(operation, "record");
    assert!(!error.contains("db error"), "{error}");
    // Down for longer than the lease: the batch's leases run out, and still nothing is
    // delivered (the kept outcome must be recorded first).
    tokio::time::sleep(2 * lease + Duration::from_millis(500)).await;
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        1,
        "nothing delivered while down"
    );
    server.restart().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while upstream.hits.load(Ordering::SeqCst) < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = loop {
        match events.recv().await.unwrap() {
            RedriveEvent::StoreFailed { .. } => {}
            other => break other,
        }
    };
    assert!(
        matches!(recovered, RedriveEvent::StoreRecovered { failed_rounds, .. } if failed_rounds >= 2),
        "{recovered:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.shutdown().await;
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        5,
        "each entry reached the upstream once"
    );
    let kept = queue.get(first).await.unwrap().unwrap();
    assert_eq!(kept.state, EntryState::Pending);
    assert_eq!(kept.attempts, 1, "the 503 was recorded, once");
    assert_eq!(kept.history.len(), 1);
    assert_eq!(kept.history[0].outcome, "503 Service Unavailable");
    assert!(
        kept.available_at >= kept.history[0].at().plus(Duration::from_secs(9 * 60)),
        "due when the schedule says (10 min ± 10 %), not when the database came back: {kept:?}"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.delivered), (1, 4));
}

/// An error the server sent is displayed with the server's own message (tokio-postgres shows
/// `db error`), a failed connection with its cause; the tokio-postgres error stays in the chain.
#[tokio::test]
async fn errors_carry_the_servers_own_message() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let base = url.rsplit_once('/').unwrap().0;
    let err = PostgresQueue::connect(&format!("{base}/no_such_db"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "redrive queue failed to connect to PostgreSQL: FATAL: database \"no_such_db\" does not exist"
    );
    let pg = tower_fault::find::<tokio_postgres::Error>(&err).expect("in the chain");
    assert_eq!(
        pg.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
    );
    let refused = test_support::fault::refused_addr();
    let err = PostgresQueue::connect(&format!("postgres://postgres@{refused}/x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("redrive queue failed to connect to PostgreSQL: error connecting to server: Connection refused"),
        "{err}"
    );
}

/// `connect_existing` (what an admin tool uses) does not make a queue in a database without
/// one; `connect` does, and then `connect_existing` opens it.
#[tokio::test]
async fn connect_existing_never_makes_a_queue() {
    let Some((_server, url)) = database().await else {
        return;
    };
    let db = url.rsplit_once('/').unwrap().1;
    for _ in 0..2 {
        let err = PostgresQueue::connect_existing(&url).await.unwrap_err();
        assert!(matches!(err, QueueError::NoQueue { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "no redrive queue at PostgreSQL database \"{db}\": it has no redrive_schema table"
            )
        );
    }
    let made = PostgresQueue::connect(&url).await.unwrap();
    made.enqueue(entry(1, None)).await.unwrap();
    let opened = PostgresQueue::connect_existing(&url).await.unwrap();
    assert_eq!(opened.stats().await.unwrap().pending, 1);
}
