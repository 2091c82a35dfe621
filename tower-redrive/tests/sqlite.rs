//! End-to-end behaviour over real SQLite files.

mod common;

use std::{sync::Arc, time::Duration};

use common::{Upstream, orders, post, settings};
use http::HeaderName;
use tower::{Layer, ServiceExt};
use tower_redrive::{
    BodyTooLarge, Clock, Deferred, EnqueueFailed, EntryState, ManualClock, Outcome, RedriveEvent,
    RedriveLayer, RedriveQueue, RedriveSettings, Redriver, Retention, Schedule, SqliteQueue,
    Timestamp, TokioClock, metrics as m,
};

const START: Timestamp = Timestamp::from_millis(1_750_000_000_000);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn layer(queue: Arc<SqliteQueue>, clock: Arc<dyn Clock>) -> RedriveLayer {
    RedriveLayer::builder(
        queue,
        RedriveSettings::builder()
            .name("orders")
            .clock(clock)
            .seed(7)
            .build()
            .unwrap(),
    )
    .ordering_key_header(HeaderName::from_static("x-tenant"))
    .build()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn three_hour_outage_defers_then_delivers_once_in_key_order_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redrive.db");
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);

    let queue = Arc::new(SqliteQueue::open_or_create(&path).await.unwrap());
    let client = layer(queue.clone(), clock.clone()).layer(upstream.client());
    let start_worker = |queue: Arc<SqliteQueue>| {
        Redriver::builder(
            queue,
            upstream.client(),
            RedriveSettings::builder()
                .name("orders")
                .clock(clock.clone())
                .seed(1)
                .build()
                .unwrap(),
        )
        .poll_interval(Duration::from_secs(60))
        .build()
        .unwrap()
        .spawn()
    };
    let worker = start_worker(queue.clone());

    let sent = [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("a", "a3"),
        ("b", "b2"),
        ("c", "c1"),
    ];
    for (i, (tenant, body)) in sent.iter().enumerate() {
        let outcome = client.clone().oneshot(post(tenant, body)).await.unwrap();
        let Outcome::Deferred(receipt) = outcome else {
            panic!("request {i} was not deferred during the outage")
        };
        assert_eq!(receipt.idempotency_key.len(), 36, "a UUID key was stamped");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // Only the first request of each tenant reached the upstream; the others queued behind it.
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 3);

    // Mid-outage the worker process dies and is started again on the same file.
    tokio::time::sleep(Duration::from_secs(90 * 60)).await;
    worker.abort();
    drop(queue);
    let queue = Arc::new(SqliteQueue::open(&path).await.unwrap());
    assert_eq!(
        queue.stats().await.unwrap().pending,
        6,
        "nothing lost across the restart"
    );
    let worker = start_worker(queue.clone());

    tokio::time::sleep(90 * 60 * Duration::from_secs(1)).await;
    assert!(
        upstream.executions().is_empty(),
        "nothing executed while down"
    );
    upstream.recover();
    // The second tier tries every ~4.8 h: give it a day.
    tokio::time::sleep(DAY).await;
    worker.shutdown().await;

    let executions = upstream.executions();
    assert_eq!(
        executions.len(),
        6,
        "every request delivered: {executions:?}"
    );
    assert!(
        executions.values().all(|n| *n == 1),
        "each executed once: {executions:?}"
    );
    let log = upstream.log();
    for tenant in ["a", "b", "c"] {
        let delivered: Vec<_> = log
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, b)| b.as_str())
            .collect();
        let expected: Vec<_> = sent
            .iter()
            .filter(|(t, _)| *t == tenant)
            .map(|(_, b)| *b)
            .collect();
        assert_eq!(delivered, expected, "tenant {tenant} delivered in order");
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.dead), (0, 6, 0));
    let delivered = queue.list(EntryState::Delivered, None, 10).await.unwrap();
    let tried_by_caller = delivered
        .iter()
        .filter(|e| e.history[0].outcome == "503 Service Unavailable")
        .count();
    assert_eq!(
        tried_by_caller, 3,
        "the first request per tenant was tried, then recorded"
    );
    assert!(
        delivered
            .iter()
            .all(|e| e.history.last().unwrap().outcome == "200 OK")
    );
}

#[tokio::test]
async fn schedule_dead_letters_after_five_days_with_reason_and_history() {
    let capture = test_support::metrics::Capture::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(502);
    let queue = Arc::new(
        SqliteQueue::open_or_create(dir.path().join("q.db"))
            .await
            .unwrap(),
    );
    let client = layer(queue.clone(), clock.clone()).layer(upstream.client());
    let receipt = client
        .oneshot(post("a", "x"))
        .await
        .unwrap()
        .deferred()
        .unwrap();

    let mut worker = Redriver::builder(
        queue.clone(),
        upstream.client(),
        RedriveSettings::builder()
            .name("orders")
            .clock(clock.clone())
            .seed(3)
            .build()
            .unwrap(),
    )
    .depth_alert(1)
    .build()
    .unwrap();
    let mut events = worker.subscribe();
    let mut rounds = 0;
    while let Some(due) = queue.stats().await.unwrap().next_due {
        clock.set(due.max(clock.now()));
        worker.run_once().await.unwrap();
        rounds += 1;
        assert!(rounds < 100, "the schedule must end");
    }
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(record.state, EntryState::Dead);
    let reason = record.reason.as_deref().unwrap();
    assert!(
        reason.contains("schedule exhausted") && reason.contains("502 Bad Gateway"),
        "{reason}"
    );
    // 1 attempt by the caller, 6 in the first hour, 25 over five days. The ±10 % jitter may
    // fit a 7th attempt into the first hour (six early intervals end before 60 min) or cost the
    // last day's final one, so 30..=33 are all correct for some seed.
    let attempts = record.attempts;
    assert!((30..=33).contains(&attempts), "{attempts}");
    assert_eq!(record.history.len(), attempts as usize);
    let span = record
        .last_attempt_at
        .unwrap()
        .since(record.first_attempt_at.unwrap());
    assert!(
        span > 5 * DAY - 12 * HOUR && span <= 5 * DAY + HOUR,
        "{span:?}"
    );
    assert!(
        record
            .history
            .windows(2)
            .all(|w| w[0].at < w[1].at && w[0].attempt + 1 == w[1].attempt)
    );

    // Events: depth crossed the threshold, then the entry was dead-lettered and depth fell.
    let mut seen = Vec::new();
    while let Some(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        matches!(
            seen.first(),
            Some(RedriveEvent::DepthAboveThreshold {
                depth: 1,
                threshold: 1,
                ..
            })
        ),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, RedriveEvent::DeadLettered { id, attempts: n, .. } if *id == receipt.id && *n == attempts)));
    assert!(matches!(
        seen.last(),
        Some(RedriveEvent::DepthBelowThreshold { depth: 0, .. })
    ));

    if cfg!(feature = "metrics") {
        let snap = capture.snapshot();
        let name = [("name", "orders")];
        assert_eq!(snap.gauge(m::QUEUE_DEPTH, &name), Some(0.0));
        assert_eq!(snap.gauge(m::DEAD_LETTERS, &name), Some(1.0));
        assert_eq!(
            snap.counter(
                m::DELIVERIES_TOTAL,
                &[("name", "orders"), ("result", "transient")]
            ),
            Some(u64::from(attempts) - 2)
        );
        assert_eq!(
            snap.counter(
                m::DELIVERIES_TOTAL,
                &[("name", "orders"), ("result", "exhausted")]
            ),
            Some(1)
        );
    }
}

#[tokio::test]
async fn oldest_age_gauge_tracks_the_oldest_pending_entry() {
    let capture = test_support::metrics::Capture::start();
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    layer(queue.clone(), clock.clone())
        .layer(upstream.client())
        .oneshot(post("a", "1"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(300));
    let worker = Redriver::builder(queue.clone(), upstream.client(), orders(clock.clone()))
        .build()
        .unwrap();
    worker.refresh_gauges().await.unwrap();
    if cfg!(feature = "metrics") {
        let snap = capture.snapshot();
        assert_eq!(
            snap.gauge(m::OLDEST_AGE_SECONDS, &[("name", "orders")]),
            Some(300.0)
        );
        assert_eq!(snap.gauge(m::QUEUE_DEPTH, &[("name", "orders")]), Some(1.0));
    }
}

#[tokio::test]
async fn permanent_failure_is_returned_and_not_redriven() {
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(404);
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let client = RedriveLayer::builder(queue.clone(), settings(clock.clone()))
        .record_permanent(true)
        .build()
        .unwrap()
        .layer(upstream.client());
    let res = client
        .oneshot(post("a", "x"))
        .await
        .unwrap()
        .answered()
        .unwrap();
    assert_eq!(res.status(), 404);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 1));
    let dead = queue.list(EntryState::Dead, None, 10).await.unwrap();
    assert_eq!(
        dead[0].reason.as_deref(),
        Some("permanent failure: 404 Not Found")
    );

    clock.advance(DAY);
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().claimed, 0);
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_permanent_failure_during_redrive_is_dead_lettered_and_requeue_delivers() {
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let receipt = layer(queue.clone(), clock.clone())
        .layer(upstream.client())
        .oneshot(post("a", "x"))
        .await
        .unwrap()
        .deferred()
        .unwrap();
    upstream.fail_with(422);
    clock.advance(HOUR);
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().dead_lettered, 1);
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(record.state, EntryState::Dead);
    assert!(record.reason.unwrap().contains("422"));

    // An operator fixes the upstream and requeues the dead letter.
    upstream.recover();
    assert!(queue.requeue(receipt.id, clock.now()).await.unwrap());
    assert!(
        !queue.requeue(receipt.id, clock.now()).await.unwrap(),
        "only dead letters requeue"
    );
    assert_eq!(worker.run_once().await.unwrap().delivered, 1);
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(record.state, EntryState::Delivered);
    assert_eq!(record.history.len(), 3, "history survives the requeue");
    assert_eq!(
        upstream.executions().get(&receipt.idempotency_key),
        Some(&1)
    );
}

#[tokio::test]
async fn janitor_deletes_finished_entries_past_retention() {
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    upstream.fail_with(503);
    let client = layer(queue.clone(), clock.clone()).layer(upstream.client());
    let delivered = client
        .clone()
        .oneshot(post("a", "1"))
        .await
        .unwrap()
        .deferred()
        .unwrap();
    let dead = client
        .oneshot(post("b", "2"))
        .await
        .unwrap()
        .deferred()
        .unwrap();
    clock.advance(HOUR);
    upstream.recover();
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .retention(Retention {
            delivered: 48 * HOUR,
            dead: 30 * DAY,
        })
        .batch(1)
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().delivered, 1);
    // Dead-letter the other one by hand (claim + dead_letter) to control its time.
    let claimed = queue
        .claim(tower_redrive::Claim {
            worker: "op",
            now: clock.now(),
            lease: HOUR,
            limit: 1,
        })
        .await
        .unwrap();
    let (delivered, dead) = if claimed[0].id == dead.id {
        (delivered, dead)
    } else {
        (dead, delivered)
    };
    assert_eq!(claimed[0].id, dead.id);
    queue
        .dead_letter(
            dead.id,
            claimed[0].lease,
            None,
            "operator".into(),
            clock.now(),
        )
        .await
        .unwrap();

    clock.advance(47 * HOUR);
    let r = worker.run_janitor().await.unwrap();
    assert_eq!((r.delivered, r.dead), (0, 0));
    clock.advance(2 * HOUR);
    let r = worker.run_janitor().await.unwrap();
    assert_eq!((r.delivered, r.dead), (1, 0));
    assert!(queue.get(delivered.id).await.unwrap().is_none());
    clock.advance(29 * DAY);
    assert_eq!(worker.run_janitor().await.unwrap().dead, 1);
    assert!(queue.get(dead.id).await.unwrap().is_none());
}

#[tokio::test]
async fn oversized_body_is_rejected_never_truncated_or_sent() {
    let upstream = Upstream::new();
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let client = RedriveLayer::builder(queue.clone(), RedriveSettings::default())
        .max_body_bytes(16)
        .build()
        .unwrap()
        .layer(upstream.client());
    let err = client
        .clone()
        .oneshot(post("a", &"x".repeat(17)))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<BodyTooLarge>(),
        Some(&BodyTooLarge { limit: 16 })
    );
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(queue.stats().await.unwrap().pending, 0);
    // At the cap is fine.
    assert!(
        !client
            .oneshot(post("a", &"x".repeat(16)))
            .await
            .unwrap()
            .is_deferred()
    );
}

#[tokio::test]
async fn corrupt_entry_is_dead_lettered_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_or_create(&path).await.unwrap());
    let receipt = layer(queue.clone(), clock.clone())
        .layer(upstream.client())
        .oneshot(post("a", "x"))
        .await
        .unwrap()
        .deferred()
        .unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE redrive_entries SET headers = x'01ffff' WHERE id = ?1",
            [receipt.id.0],
        )
        .unwrap();
    }
    upstream.recover();
    clock.advance(HOUR);
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().dead_lettered, 1);
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(record.state, EntryState::Dead);
    assert!(
        record
            .reason
            .unwrap()
            .starts_with("corrupt entry: header blob truncated")
    );
    assert_eq!(
        upstream.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "never sent"
    );
}

#[tokio::test]
async fn nothing_is_acknowledged_when_the_queue_cannot_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_or_create(&path).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE redrive_entries")
        .unwrap();
    let layer = RedriveLayer::builder(queue, RedriveSettings::default())
        .build()
        .unwrap();
    let req = post("a", "x");
    assert!(!req.headers().contains_key("idempotency-key"));
    let err = layer
        .clone()
        .layer(upstream.client())
        .oneshot(req)
        .await
        .unwrap_err();
    let failed = err.downcast_ref::<EnqueueFailed>().expect("typed error");
    assert_eq!(failed.failure(), "503 Service Unavailable");
    // The caller learns the key the layer generated (and sent upstream): a retry carrying it
    // is harmless if the failed enqueue was stored after all.
    assert!(tower_fault::IdempotencyKey::parse_str(failed.idempotency_key()).is_ok());
    // In gateway mode the 503 carries it as a header.
    let res = layer
        .gateway()
        .layer(upstream.client())
        .oneshot(post("a", "x"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("idempotency-key"));
}

#[tokio::test]
async fn gateway_mode_answers_202_with_the_entry_id_and_problems_for_errors() {
    use http_body_util::BodyExt;
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let gateway = RedriveLayer::builder(queue.clone(), RedriveSettings::default())
        .max_body_bytes(64)
        .build()
        .unwrap()
        .gateway()
        .layer(upstream.client());
    let res = gateway.clone().oneshot(post("a", "{}")).await.unwrap();
    assert_eq!(res.status(), 202);
    let id: i64 = res.headers()["redrive-entry-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let key = res.headers()["idempotency-key"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["status"], "deferred");
    assert_eq!(body["id"], id);
    assert_eq!(
        queue
            .get(tower_redrive::EntryId(id))
            .await
            .unwrap()
            .unwrap()
            .idempotency_key,
        key
    );

    let res = gateway
        .clone()
        .oneshot(post("a", &"x".repeat(65)))
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    upstream.recover();
    let res = gateway.oneshot(post("a", "{}")).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn rate_cap_spaces_deliveries() {
    tokio::time::pause();
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    for i in 0..5 {
        common::enqueue_post(&*queue, &format!("/{i}"), START).await;
    }
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock))
        .max_rate(2.0)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(worker.run_once().await.unwrap().delivered, 5);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2_100),
        "5 deliveries at 2/s take 2 s, took {elapsed:?}"
    );
}

/// A rate whose interval fits a `Duration` but not an `Instant` (1e-19 per second: one
/// delivery every ~3e11 years) delivers the first entry and waits, rather than panicking.
#[tokio::test]
async fn a_tiny_max_rate_paces_without_a_panic() {
    tokio::time::pause();
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    for i in 0..2 {
        common::enqueue_post(&*queue, &format!("/{i}"), START).await;
    }
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock))
        .max_rate(1e-19)
        .batch(1)
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().delivered, 1);
    // The second delivery's slot is as far as tokio's clock goes: not within the hour (while
    // the round waits, it renews its lease).
    let second = tokio::time::timeout(HOUR, worker.run_once());
    assert!(
        second.await.is_err(),
        "the second delivery waits for its slot"
    );
}

#[test]
fn builders_reject_nonsense() {
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let upstream = Upstream::new();
    let err =
        |b: tower_redrive::RedriverBuilder<common::Client>| b.build().unwrap_err().to_string();
    assert!(
        err(
            Redriver::builder(queue.clone(), upstream.client(), RedriveSettings::default())
                .lease(Duration::ZERO)
        )
        .contains("lease")
    );
    assert!(
        err(
            Redriver::builder(queue.clone(), upstream.client(), RedriveSettings::default())
                .batch(0)
        )
        .contains("batch")
    );
    assert!(
        err(
            Redriver::builder(queue.clone(), upstream.client(), RedriveSettings::default())
                .max_rate(-1.0)
        )
        .contains("max_rate")
    );
    assert!(
        err(
            Redriver::builder(queue.clone(), upstream.client(), RedriveSettings::default())
                .max_rate(1e-300)
        )
        .contains("too small"),
        "a rate whose interval overflows a Duration is an error, not a panic"
    );
    assert!(
        RedriveLayer::builder(queue.clone(), RedriveSettings::default())
            .max_body_bytes(0)
            .build()
            .is_err()
    );
    assert!(
        err(
            Redriver::builder(queue.clone(), upstream.client(), RedriveSettings::default())
                .lease(Duration::from_micros(999))
        )
        .contains("1 ms"),
        "queue times are whole milliseconds: a shorter lease would end as it is taken"
    );
    assert!(
        err(
            Redriver::builder(queue.clone(), upstream.client(), RedriveSettings::default())
                .poll_interval(Duration::from_secs(5))
                .store_backoff(Duration::from_secs(1))
        )
        .contains("store_backoff"),
        "a failing store retried more often than a working one is polled"
    );
    assert!(
        Redriver::builder(queue.clone(), upstream.client(), RedriveSettings::default())
            .store_backoff(Duration::from_secs(1))
            .build()
            .is_ok(),
        "as long as the poll interval (1 s by default)"
    );
    assert!(
        Redriver::builder(queue, upstream.client(), RedriveSettings::default())
            .poll_interval(Duration::from_secs(300))
            .build()
            .is_ok(),
        "the default backoff follows a poll interval longer than a minute"
    );
    assert!(RedriveSettings::builder().name("").build().is_err());
    assert!(Schedule::builder().build().is_err());
    let sub_ms = Schedule::builder()
        .tier(Duration::from_micros(500), Duration::from_secs(60))
        .build();
    assert!(sub_ms.unwrap_err().to_string().contains("1 ms"));
}

/// Dropping the handle of a spawned worker detaches it (as a dropped `JoinHandle` does): it
/// goes on delivering; only `shutdown` stops it.
#[tokio::test]
async fn a_dropped_worker_handle_detaches_the_worker() {
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    drop(
        Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
            .poll_interval(Duration::from_millis(10))
            .build()
            .unwrap()
            .spawn(),
    );
    tokio::time::sleep(Duration::from_millis(50)).await; // a round or two, nothing to do
    let id = common::enqueue_post(&*queue, "/a", START).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.get(id).await.unwrap().unwrap().state != EntryState::Delivered {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker stopped with its handle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_outcome_recorded_after_the_lease_expired_is_counted_as_lease_lost() {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower_redrive::{Claim, NewEntry, StoredRequest};

    let capture = test_support::metrics::Capture::start();
    let clock = Arc::new(ManualClock::new(START));
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let request = StoredRequest::new(
        http::Method::POST,
        "http://upstream.test/x".parse().unwrap(),
    );
    queue.enqueue(NewEntry::new(request, START)).await.unwrap();
    // The delivery outlives its lease, and meanwhile another worker claims the entry.
    let slow = {
        let (clock, queue) = (clock.clone(), queue.clone());
        tower::service_fn(move |_req: http::Request<Full<Bytes>>| {
            let (clock, queue) = (clock.clone(), queue.clone());
            async move {
                clock.advance(Duration::from_secs(120));
                let claim = Claim {
                    worker: "other",
                    now: clock.now(),
                    lease: HOUR,
                    limit: 1,
                };
                assert_eq!(queue.claim(claim).await.unwrap().len(), 1);
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        })
    };
    let mut worker = Redriver::builder(queue.clone(), slow, orders(clock.clone()))
        .lease(Duration::from_secs(60))
        .build()
        .unwrap();
    let report = worker.run_once().await.unwrap();
    assert_eq!((report.delivered, report.unrecorded), (0, 1));
    if cfg!(feature = "metrics") {
        let snap = capture.snapshot();
        let count = |result| {
            snap.counter(
                m::DELIVERIES_TOTAL,
                &[("name", "orders"), ("result", result)],
            )
        };
        assert_eq!(count("lease_lost"), Some(1));
        assert_eq!(
            count("delivered"),
            None,
            "an unrecorded delivery is not counted as one"
        );
    }
}

#[tokio::test]
async fn gateway_answers_a_readiness_error_without_calling_the_unready_service() {
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body_util::Full;
    use tower_fault::BoxError;

    /// A stack whose `poll_ready` fails, and which (like tower's `Buffer`) panics when called
    /// without being ready.
    #[derive(Clone)]
    struct Closed;

    impl tower::Service<http::Request<Full<Bytes>>> for Closed {
        type Response = http::Response<String>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<http::Response<String>, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("the client's worker is gone".into()))
        }

        fn call(&mut self, _: http::Request<Full<Bytes>>) -> Self::Future {
            panic!("called although poll_ready failed")
        }
    }

    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let gateway = RedriveLayer::builder(queue.clone(), RedriveSettings::default())
        .build()
        .unwrap()
        .gateway()
        .layer(Closed);
    let res = gateway.oneshot(post("a", "x")).await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(queue.stats().await.unwrap().pending, 0);
}

/// SQLite does not enforce column types: a row whose columns hold the wrong kind of value must
/// not stop a claim (of every entry in the batch), nor `get` and `list`.
#[tokio::test]
async fn a_column_of_the_wrong_type_dead_letters_its_entry_and_stops_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_or_create(&path).await.unwrap());
    let client = layer(queue.clone(), clock.clone()).layer(upstream.client());
    let mut ids = Vec::new();
    for tenant in ["good", "uri", "method", "body", "key"] {
        let receipt = client
            .clone()
            .oneshot(post(tenant, tenant))
            .await
            .unwrap()
            .deferred()
            .unwrap();
        ids.push(receipt.id);
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for (sql, id) in [
            (
                "UPDATE redrive_entries SET uri = x'2f61' WHERE id = ?1",
                ids[1],
            ),
            (
                "UPDATE redrive_entries SET method = x'474554' WHERE id = ?1",
                ids[2],
            ),
            (
                "UPDATE redrive_entries SET body = 3.5 WHERE id = ?1",
                ids[3],
            ),
            (
                "UPDATE redrive_entries SET idempotency_key = x'6b' WHERE id = ?1",
                ids[4],
            ),
        ] {
            conn.execute(sql, [id.0]).unwrap();
        }
        // A wrong timestamp or reason is read as absent, not as corruption.
        conn.execute(
            "UPDATE redrive_entries SET first_attempt_at = 'soon', reason = x'00' WHERE id = ?1",
            [ids[0].0],
        )
        .unwrap();
    }
    // Every row can still be read.
    assert_eq!(
        queue
            .list(EntryState::Pending, None, 10)
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(queue.get(ids[1]).await.unwrap().unwrap().id, ids[1]);

    upstream.recover();
    clock.advance(HOUR);
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .build()
        .unwrap();
    let report = worker.run_once().await.unwrap();
    assert_eq!(
        (report.delivered, report.dead_lettered, report.unrecorded),
        (1, 4, 0),
        "{report:?}"
    );
    assert_eq!(
        queue.get(ids[0]).await.unwrap().unwrap().state,
        EntryState::Delivered
    );
    for (id, column) in ids[1..]
        .iter()
        .zip(["uri", "method", "body", "idempotency_key"])
    {
        let dead = queue.get(*id).await.unwrap().unwrap();
        assert_eq!(dead.state, EntryState::Dead);
        let reason = dead.reason.unwrap();
        assert!(
            reason.starts_with(&format!("corrupt entry: column {column} holds")),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn corrupt_attempt_history_is_repaired_and_an_unreadable_entry_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_or_create(&path).await.unwrap());
    let client = layer(queue.clone(), clock.clone()).layer(upstream.client());
    let mut ids = Vec::new();
    for tenant in ["text", "blob", "unreadable"] {
        let receipt = client
            .clone()
            .oneshot(post(tenant, tenant))
            .await
            .unwrap()
            .deferred()
            .unwrap();
        ids.push(receipt.id);
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let corrupt = |sql: &str, id: i64| conn.execute(sql, [id]).unwrap();
        corrupt(
            "UPDATE redrive_entries SET history = '[{\"attempt\": 1, trunc' WHERE id = ?1",
            ids[0].0,
        );
        corrupt(
            "UPDATE redrive_entries SET history = x'deadbeef' WHERE id = ?1",
            ids[1].0,
        );
        corrupt(
            "UPDATE redrive_entries SET history = 'garbage', headers = x'01ffff' WHERE id = ?1",
            ids[2].0,
        );
    }
    clock.advance(HOUR);
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .build()
        .unwrap();
    // Still down: the readable entries are rescheduled (recording repairs their history), the
    // unreadable one is dead-lettered with the reason. Nothing is left unrecorded.
    let report = worker.run_once().await.unwrap();
    assert_eq!(
        (report.rescheduled, report.dead_lettered, report.unrecorded),
        (2, 1, 0),
        "{report:?}"
    );
    for id in &ids[..2] {
        let record = queue.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, EntryState::Pending);
        assert_eq!(record.history.len(), 2, "{:?}", record.history);
        assert_eq!(record.history[0].class, "corrupt");
        assert!(
            record.history[0]
                .outcome
                .contains("attempt history was unreadable"),
            "{:?}",
            record.history[0]
        );
        assert_eq!(record.history[1].class, "transient");
    }
    let text = queue.get(ids[0]).await.unwrap().unwrap();
    assert!(
        text.history[0].outcome.contains("trunc"),
        "the note keeps what the column held: {:?}",
        text.history[0]
    );
    let dead = queue.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(dead.state, EntryState::Dead);
    assert!(
        dead.reason
            .as_deref()
            .unwrap()
            .starts_with("corrupt entry: header blob truncated"),
        "{:?}",
        dead.reason
    );
    assert_eq!(dead.history.last().unwrap().class, "corrupt");

    // Once the upstream recovers, the repaired entries are delivered, once each.
    upstream.recover();
    clock.advance(DAY);
    let report = worker.run_once().await.unwrap();
    assert_eq!((report.delivered, report.unrecorded), (2, 0), "{report:?}");
    for id in &ids[..2] {
        let record = queue.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, EntryState::Delivered);
        assert_eq!(record.history.len(), 3);
        assert_eq!(record.history[2].class, "success");
    }
    assert_eq!(worker.run_once().await.unwrap().claimed, 0);
    assert!(upstream.executions().values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_lease_renewal_by_a_worker_that_was_taken_over_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let queue = SqliteQueue::open_or_create(dir.path().join("q.db"))
        .await
        .unwrap();
    common::renewal_is_a_compare_and_set_on_the_lease_token(&queue, START).await;
}

#[tokio::test(start_paused = true)]
async fn a_delivery_three_times_longer_than_the_lease_is_not_taken_over_and_completes() {
    use std::sync::atomic::Ordering;
    use tower_redrive::{NewEntry, StoredRequest};

    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(
        SqliteQueue::open_or_create(dir.path().join("q.db"))
            .await
            .unwrap(),
    );
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(START));
    let lease = Duration::from_secs(60);
    let upstream = Upstream::new();
    let request = StoredRequest::new(
        http::Method::POST,
        "http://upstream.test/orders".parse().unwrap(),
    );
    let id = queue.enqueue(NewEntry::new(request, START)).await.unwrap();

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
    let mut worker = Redriver::builder(queue.clone(), slow, orders(clock.clone()))
        .worker_id("slow")
        .lease(lease)
        .build()
        .unwrap();
    let mut rival = Redriver::builder(queue.clone(), upstream.client(), orders(clock.clone()))
        .worker_id("rival")
        .lease(lease)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let delivery = tokio::spawn(async move { worker.run_once().await.unwrap() });
    let mut tries = 0;
    while !delivery.is_finished() {
        tokio::time::sleep(Duration::from_secs(10)).await;
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
        tries >= 17,
        "the rival tried throughout the delivery ({tries})"
    );
    let report = delivery.await.unwrap();
    assert_eq!((report.delivered, report.unrecorded), (1, 0));
    assert!(started.elapsed() >= 3 * lease);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
    let record = queue.get(id).await.unwrap().unwrap();
    assert_eq!(record.state, EntryState::Delivered);
    assert_eq!(record.history.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn entries_taken_over_mid_round_are_neither_recorded_nor_delivered() {
    use std::sync::atomic::Ordering;
    use tower_redrive::{AttemptRecord, Claim, NewEntry, StoredRequest};

    let capture = test_support::metrics::Capture::start();
    let clock = Arc::new(ManualClock::new(START));
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let upstream = Upstream::new();
    for i in 0..2 {
        let mut request = StoredRequest::new(
            http::Method::POST,
            format!("http://upstream.test/orders/{i}").parse().unwrap(),
        );
        request.body = bytes::Bytes::from(format!("{i}"));
        queue.enqueue(NewEntry::new(request, START)).await.unwrap();
    }
    let lease = Duration::from_secs(60);
    let rival_claims = Arc::new(std::sync::Mutex::new(Vec::new()));
    // The first delivery stalls: the (manual) clock passes the lease before any renewal is due,
    // a rival claims both entries, then the renewal finds the leases lost.
    let slow = {
        let (clock, queue, client, rival_claims) = (
            clock.clone(),
            queue.clone(),
            upstream.client(),
            rival_claims.clone(),
        );
        tower::service_fn(
            move |req: http::Request<http_body_util::Full<bytes::Bytes>>| {
                let (clock, queue, client, rival_claims) = (
                    clock.clone(),
                    queue.clone(),
                    client.clone(),
                    rival_claims.clone(),
                );
                async move {
                    if !rival_claims.lock().unwrap().is_empty() {
                        return client.oneshot(req).await;
                    }
                    clock.advance(2 * lease);
                    let claim = Claim {
                        worker: "rival",
                        now: clock.now(),
                        lease: HOUR,
                        limit: 2,
                    };
                    let claimed = queue.claim(claim).await.unwrap();
                    assert_eq!(claimed.len(), 2, "both leases ran out");
                    rival_claims.lock().unwrap().extend(claimed);
                    tokio::time::sleep(lease / 2).await;
                    client.oneshot(req).await
                }
            },
        )
    };
    let mut worker = Redriver::builder(queue.clone(), slow, orders(clock.clone()))
        .lease(lease)
        .batch(2)
        .build()
        .unwrap();
    let report = worker.run_once().await.unwrap();
    assert_eq!(
        (report.claimed, report.delivered, report.unrecorded),
        (2, 0, 2)
    );
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        1,
        "the entry taken over before its turn was not delivered"
    );
    if cfg!(feature = "metrics") {
        let snap = capture.snapshot();
        assert_eq!(
            snap.counter(
                m::DELIVERIES_TOTAL,
                &[("name", "orders"), ("result", "lease_lost")]
            ),
            Some(1)
        );
    }
    // The rival still holds both entries and records its own outcomes.
    let claimed = std::mem::take(&mut *rival_claims.lock().unwrap());
    for c in claimed {
        let record = queue.get(c.id).await.unwrap().unwrap();
        assert_eq!(record.state, EntryState::Pending);
        assert!(record.history.is_empty());
        let done = AttemptRecord::new(1, clock.now(), "success", "200 OK");
        queue.complete(c.id, c.lease, done).await.unwrap();
    }
    assert_eq!(queue.stats().await.unwrap().delivered, 2);
}

/// A delivery service that panics — in `call` or in its future — costs the entry one attempt
/// (rescheduled with the panic's message in its history), not the worker: the other entries of
/// the round are delivered, and a spawned worker keeps running rounds.
#[tokio::test]
async fn a_panicking_delivery_is_rescheduled_and_the_worker_goes_on() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let clock = Arc::new(ManualClock::new(START));
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let mut ids = Vec::new();
    for path in ["/panic-in-call", "/panic-in-future", "/fine"] {
        ids.push(common::enqueue_post(&*queue, path, START).await);
    }
    let broken = Arc::new(AtomicBool::new(true));
    let service = {
        let broken = broken.clone();
        tower::service_fn(
            move |req: http::Request<http_body_util::Full<bytes::Bytes>>| {
                let path = req.uri().path().to_owned();
                let broken = broken.load(Ordering::SeqCst);
                if broken && path == "/panic-in-call" {
                    panic!("bug in call");
                }
                async move {
                    tokio::task::yield_now().await;
                    if broken && path == "/panic-in-future" {
                        panic!("bug in the future");
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
                }
            },
        )
    };
    let mut worker = Redriver::builder(queue.clone(), service, settings(clock.clone()))
        .poll_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    let report = worker.run_once().await.unwrap();
    assert_eq!((report.delivered, report.rescheduled), (1, 2), "{report:?}");
    for (id, text) in ids.iter().zip(["bug in call", "bug in the future"]) {
        let record = queue.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, EntryState::Pending);
        let last = record.history.last().unwrap();
        assert_eq!(last.class, "transient");
        assert_eq!(
            last.outcome,
            format!("the delivery service panicked: {text}")
        );
    }

    // Spawned, the worker survives the same panics round after round, and delivers the
    // entries once the bug is gone.
    let handle = worker.spawn();
    clock.advance(DAY);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut attempts = Vec::new();
        for id in &ids[..2] {
            attempts.push(queue.get(*id).await.unwrap().unwrap().history.len());
        }
        if attempts.iter().all(|&n| n >= 2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not re-driven: {attempts:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broken.store(false, Ordering::SeqCst);
    clock.advance(DAY);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.stats().await.unwrap().pending > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not redelivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await;
    for id in &ids {
        let state = queue.get(*id).await.unwrap().unwrap().state;
        assert_eq!(state, EntryState::Delivered);
    }
}

/// A panic outside the delivery service (here in the classifier) ends the round, not the spawned
/// worker: the round's entries are delivered again once their leases expire.
#[tokio::test]
async fn a_panic_that_escapes_a_round_does_not_stop_a_spawned_worker() {
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone)]
    struct PanicsOnce(Arc<AtomicBool>);
    impl<B> tower_fault::Classify<http::Response<B>, tower_fault::BoxError> for PanicsOnce {
        fn classify(
            &self,
            outcome: Result<&http::Response<B>, &tower_fault::BoxError>,
        ) -> tower_fault::Class {
            assert!(
                !self.0.swap(false, Ordering::SeqCst),
                "bug in the classifier"
            );
            tower_fault::HttpClassifier::default().classify(outcome)
        }
    }

    let clock = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let id = common::enqueue_post(&*queue, "/a", START).await;
    let handle = Redriver::builder(
        queue.clone(),
        upstream.client(),
        RedriveSettings::builder()
            .clock(clock.clone())
            .classifier(PanicsOnce(Arc::new(AtomicBool::new(true))))
            .build()
            .unwrap(),
    )
    .lease(Duration::from_secs(60))
    .poll_interval(Duration::from_millis(10))
    .build()
    .unwrap()
    .spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.hits.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The panicked round recorded nothing: the entry is still leased.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        queue.get(id).await.unwrap().unwrap().state,
        EntryState::Pending
    );
    clock.advance(Duration::from_secs(61));
    while queue.get(id).await.unwrap().unwrap().state != EntryState::Delivered {
        assert!(tokio::time::Instant::now() < deadline, "worker stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await;
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2, "at least once");
}

/// A `Retry-After` HTTP-date is read against the layer's and the worker's clock, not the
/// system's: under a clock set in 2025, "ten hours from now" in 2025 reschedules the entry ten
/// hours on, past the schedule's own delay (read against the system clock, the date is long past).
#[tokio::test]
async fn a_retry_after_date_is_read_against_the_injected_clock() {
    let clock = Arc::new(ManualClock::new(START));
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let busy_until = {
        let clock = clock.clone();
        move || {
            let until = clock.now().plus(10 * HOUR).to_system_time();
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(503)
                    .header(http::header::RETRY_AFTER, httpdate::fmt_http_date(until))
                    .body(String::new())
                    .unwrap(),
            )
        }
    };
    let upstream = {
        let busy_until = busy_until.clone();
        tower::service_fn(
            move |_: http::Request<http_body_util::Full<bytes::Bytes>>| {
                std::future::ready(busy_until())
            },
        )
    };
    let receipt = layer(queue.clone(), clock.clone())
        .layer(upstream.clone())
        .oneshot(post("a", "x"))
        .await
        .unwrap()
        .deferred()
        .unwrap();
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(record.available_at, START.plus(10 * HOUR));

    clock.advance(10 * HOUR);
    let mut worker = Redriver::builder(queue.clone(), upstream, settings(clock.clone()))
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().rescheduled, 1);
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(record.available_at, START.plus(20 * HOUR));
}

/// An entry whose lease ran out while it waited its turn in the batch, with no renewal the
/// queue accepted (renewals failing, or none due yet), is not delivered: another worker may
/// have claimed it meanwhile.
#[tokio::test]
async fn an_entry_whose_lease_ran_out_unrenewed_is_not_delivered() {
    let clock = Arc::new(ManualClock::new(START));
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    for path in ["/1", "/2"] {
        common::enqueue_post(&*queue, path, START).await;
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let service = {
        let (clock, seen) = (clock.clone(), seen.clone());
        tower::service_fn(
            move |req: http::Request<http_body_util::Full<bytes::Bytes>>| {
                let path = req.uri().path().to_owned();
                if path == "/1" {
                    // The first delivery outlasts the lease (on the queue's clock).
                    clock.advance(Duration::from_millis(400));
                }
                seen.lock().unwrap().push(path);
                async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
            },
        )
    };
    let mut worker = Redriver::builder(queue.clone(), service, settings(clock.clone()))
        .lease(Duration::from_millis(300))
        .build()
        .unwrap();
    let report = worker.run_once().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["/1"],
        "the second entry's lease had run out"
    );
    assert_eq!((report.claimed, report.unrecorded), (2, 1), "{report:?}");
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.pending, 1, "left for whoever holds it now");
}

/// Requeuing an older dead entry while a newer entry of the same ordering key is in flight
/// does not put two entries of that key in flight at once (see the shared check).
#[tokio::test]
async fn a_requeued_entry_waits_for_the_in_flight_entry_of_its_key() {
    let queue = SqliteQueue::open_in_memory().unwrap();
    common::a_requeued_entry_waits_for_the_in_flight_entry_of_its_key(&queue, START).await;
}

/// Overwrites the root page of `index` with garbage, as a torn write or bad sector would.
fn damage_index(path: &std::path::Path, index: &str) {
    use std::io::{Seek, SeekFrom, Write};
    let (page_size, root): (u64, u64) = {
        let conn = rusqlite::Connection::open(path).unwrap();
        let page_size = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let root = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [index],
                |r| r.get(0),
            )
            .unwrap();
        (page_size, root)
    };
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start((root - 1) * page_size)).unwrap();
    file.write_all(&vec![0xA5; page_size as usize]).unwrap();
    file.sync_all().unwrap();
}

/// A damaged file (an index page overwritten): claims still work, recording an outcome fails
/// with "database disk image is malformed". The round stops at the first failure, the worker
/// backs off, reports it, and never delivers the entry again — nor the rest of the batch, nor
/// the batch once its leases run out (without the fix: 288 entries re-delivered every lease
/// period, hundreds of deliveries in 10 s).
#[tokio::test(start_paused = true)]
async fn a_damaged_file_stops_the_round_and_nothing_is_delivered_again() {
    let capture = test_support::metrics::Capture::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let queue = SqliteQueue::open_or_create(&path).await.unwrap();
        for i in 0..288 {
            common::enqueue_post(&queue, &format!("/{i}"), START).await;
        }
    }
    damage_index(&path, "redrive_entries_finished");
    let queue = Arc::new(SqliteQueue::open(&path).await.unwrap());
    let upstream = Upstream::new();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(START));
    let worker = Redriver::builder(queue.clone(), upstream.client(), orders(clock))
        .lease(Duration::from_secs(3))
        .store_backoff(Duration::from_secs(4))
        .build()
        .unwrap();
    let mut events = worker.subscribe();
    let started = tokio::time::Instant::now();
    let handle = worker.spawn();
    let mut failures = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        tokio::select! {
            event = events.recv() => match event.unwrap() {
                RedriveEvent::StoreFailed { operation, error, consecutive, retry_in, .. } => {
                    failures.push((started.elapsed(), operation, error, consecutive, retry_in));
                }
                other => panic!("unexpected event {other:?}"),
            },
            () = tokio::time::sleep_until(started + Duration::from_secs(10)) => {}
        }
    }
    handle.shutdown().await;
    assert_eq!(
        upstream.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one delivery, whose outcome could not be recorded; nothing after it"
    );
    // Rounds at 0 s, then after 1, 2, 4 and 4 s (the poll interval doubled, capped at 4 s).
    let at: Vec<u64> = failures.iter().map(|f| f.0.as_secs()).collect();
    assert_eq!(at, [0, 1, 3, 7], "{failures:?}");
    let (_, operation, error, ..) = &failures[0];
    assert_eq!(*operation, "record");
    assert!(
        error.contains("database disk image is malformed"),
        "{error}"
    );
    let retry: Vec<(u32, u64)> = failures.iter().map(|f| (f.3, f.4.as_secs())).collect();
    assert_eq!(retry, [(1, 1), (2, 2), (3, 4), (4, 4)]);
    if cfg!(feature = "metrics") {
        let snap = capture.snapshot();
        assert_eq!(
            snap.counter(
                m::STORE_ERRORS_TOTAL,
                &[("name", "orders"), ("operation", "record")]
            ),
            Some(4)
        );
        assert_eq!(
            snap.counter(m::DELIVERIES_TOTAL, &[("name", "orders")]),
            Some(1)
        );
        assert_eq!(
            snap.counter(
                m::DELIVERIES_TOTAL,
                &[("name", "orders"), ("result", "store_error")]
            ),
            Some(1)
        );
    }
}

/// `open` opens an existing queue only: a path that does not exist or an empty file is an
/// error, and nothing is created there; `open_or_create` makes the queue.
#[tokio::test]
async fn open_never_makes_a_queue_and_open_or_create_does() {
    use tower_redrive::QueueError;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mistyped.db");
    let err = SqliteQueue::open(&path).await.unwrap_err();
    assert!(matches!(err, QueueError::NoQueue { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no redrive queue at {}: the file does not exist",
            path.display()
        )
    );
    assert!(!path.exists(), "nothing created");
    std::fs::write(&path, b"").unwrap();
    let err = SqliteQueue::open_blocking(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no redrive queue at {}: the file is empty", path.display())
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");

    let made = SqliteQueue::open_or_create(&path).await.unwrap();
    common::enqueue_post(&made, "/a", START).await;
    let opened = SqliteQueue::open(&path).await.unwrap();
    assert_eq!(opened.stats().await.unwrap().pending, 1);

    let missing = dir.path().join("other.db");
    SqliteQueue::open_or_create_blocking(&missing).unwrap();
    assert!(SqliteQueue::open(&missing).await.is_ok());
}

/// A queue, an upstream answering 503, and one request a layer with `settings` deferred.
async fn deferred_in_an_outage(
    settings: RedriveSettings,
) -> (Arc<SqliteQueue>, Arc<Upstream>, Deferred) {
    let upstream = Upstream::new();
    upstream.fail_with(503);
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let receipt = RedriveLayer::new(queue.clone(), settings)
        .layer(upstream.client())
        .oneshot(post("a", "a1"))
        .await
        .unwrap()
        .deferred()
        .unwrap();
    (queue, upstream, receipt)
}

/// The schedule is given once, in the settings: the layer times a deferred entry's first
/// re-delivery with it, the worker every later one and the dead-lettering.
#[tokio::test]
async fn one_schedule_in_the_settings_times_the_layer_and_the_worker() {
    let clock = Arc::new(ManualClock::new(START));
    let minute = Duration::from_secs(60);
    let schedule = Schedule::builder()
        .tier(minute, 3 * minute)
        .jitter(0.0)
        .build()
        .unwrap();
    let settings = RedriveSettings::builder()
        .clock(clock.clone())
        .schedule(schedule)
        .build()
        .unwrap();
    let (queue, upstream, receipt) = deferred_in_an_outage(settings.clone()).await;
    assert_eq!(receipt.next_attempt_at, START.plus(minute));

    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings)
        .build()
        .unwrap();
    for age in [1, 2] {
        clock.set(START.plus(age * minute));
        assert_eq!(worker.run_once().await.unwrap().rescheduled, 1, "{age} min");
        let record = queue.get(receipt.id).await.unwrap().unwrap();
        assert_eq!(record.available_at, START.plus((age + 1) * minute));
    }
    clock.set(START.plus(3 * minute));
    assert_eq!(worker.run_once().await.unwrap().dead_lettered, 1);
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 4, "the caller's and three re-deliveries");
    assert!(
        record
            .reason
            .unwrap()
            .contains("schedule exhausted after 4 attempts")
    );
}

/// The first delay the layer draws for a deferred entry, and the next one the worker draws
/// after a failed delivery, with settings seeded `seed`.
async fn first_two_delays(seed: u64) -> (Duration, Duration) {
    let clock = Arc::new(ManualClock::new(START));
    let settings = RedriveSettings::builder()
        .clock(clock.clone())
        .seed(seed)
        .build()
        .unwrap();
    let (queue, upstream, receipt) = deferred_in_an_outage(settings.clone()).await;
    clock.set(receipt.next_attempt_at);
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings)
        .build()
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap().rescheduled, 1);
    let record = queue.get(receipt.id).await.unwrap().unwrap();
    (
        receipt.next_attempt_at.since(START),
        record.available_at.since(receipt.next_attempt_at),
    )
}

/// A seed makes the layer's and the worker's jitter reproducible, and the two draw different
/// sequences from it (both delays here are the default schedule's first tier: 10 min ±10 %).
#[tokio::test]
async fn a_seed_reproduces_the_jitter_and_the_layer_and_the_worker_draw_apart() {
    let (by_layer, by_worker) = first_two_delays(11).await;
    assert_eq!(first_two_delays(11).await, (by_layer, by_worker));
    assert_ne!(by_layer, by_worker);
    assert_ne!(first_two_delays(12).await, (by_layer, by_worker));
    for delay in [by_layer, by_worker] {
        assert!(delay >= Duration::from_secs(540) && delay <= Duration::from_secs(660));
    }
}

/// `no_<setting>()` turns a setting off, whatever was set before it.
#[tokio::test]
async fn no_settings_turn_the_rate_cap_the_depth_alert_and_the_ordering_key_off() {
    tokio::time::pause();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(START));
    let upstream = Upstream::new();
    let queue = Arc::new(SqliteQueue::open_in_memory().unwrap());
    for i in 0..3 {
        common::enqueue_post(&*queue, &format!("/{i}"), START).await;
    }
    let mut worker = Redriver::builder(queue.clone(), upstream.client(), settings(clock.clone()))
        .max_rate(0.001)
        .no_max_rate()
        .depth_alert(1)
        .no_depth_alert()
        .build()
        .unwrap();
    let mut events = worker.subscribe();
    let started = tokio::time::Instant::now();
    assert_eq!(worker.run_once().await.unwrap().delivered, 3);
    assert_eq!(started.elapsed(), Duration::ZERO, "no pacing");

    // One entry pending: a depth alert at 1 would fire.
    upstream.fail_with(503);
    let client = RedriveLayer::builder(queue.clone(), settings(clock))
        .ordering_key_header(HeaderName::from_static("x-tenant"))
        .no_ordering_key()
        .build()
        .unwrap()
        .layer(upstream.client());
    assert!(
        client
            .clone()
            .oneshot(post("a", "a1"))
            .await
            .unwrap()
            .is_deferred()
    );
    worker.refresh_gauges().await.unwrap();
    assert!(events.try_recv().is_none(), "no depth event");
    // Without an ordering key, a request is sent even though one of its tenant is queued.
    upstream.recover();
    let hits = upstream.hits.load(std::sync::atomic::Ordering::SeqCst);
    let answered = client.oneshot(post("a", "a2")).await.unwrap();
    assert!(!answered.is_deferred());
    assert_eq!(
        upstream.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits + 1
    );
}
