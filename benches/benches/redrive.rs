//! tower-redrive queue throughput: enqueue (1 KiB body), and claim + complete in batches of 32,
//! on the SQLite queue (a WAL file in a temporary directory) and, when a PostgreSQL server can
//! be started by `test_support::postgres` (or `DATABASE_URL`), on the PostgreSQL queue.
//! Operations are sequential, one at a time, from one task: this is the per-operation cost of
//! the durable store, not a concurrency test.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Uri};
use resilience_benches::alloc::CountingAlloc;
use resilience_benches::report::report_dir;
use tower_redrive::entry::{AttemptRecord, NewEntry, StoredRequest};
use tower_redrive::{Claim, PostgresQueue, RedriveQueue, SqliteQueue, Timestamp};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BATCH: usize = 32;

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn entry(i: usize) -> NewEntry {
    let uri: Uri = format!("http://payments.internal/charges/{i}")
        .parse()
        .expect("uri");
    let mut req = StoredRequest::new(Method::POST, uri);
    req.body = Bytes::from(vec![b'x'; 1024]);
    NewEntry::new(req, now())
}

struct Result {
    store: &'static str,
    entries: usize,
    enqueue: Duration,
    drain: Duration,
}

async fn measure(store: &'static str, queue: Arc<dyn RedriveQueue>, entries: usize) -> Result {
    let t0 = Instant::now();
    for i in 0..entries {
        queue.enqueue(entry(i)).await.expect("enqueue");
    }
    let enqueue = t0.elapsed();

    let t0 = Instant::now();
    let mut done = 0;
    while done < entries {
        let claimed = queue
            .claim(Claim {
                worker: "bench",
                now: now(),
                lease: Duration::from_secs(60),
                limit: BATCH,
            })
            .await
            .expect("claim");
        assert!(!claimed.is_empty(), "queue drained early: {done}/{entries}");
        for c in claimed {
            let attempt = AttemptRecord::new(c.attempts, now(), "success", "200");
            queue
                .complete(c.id, c.lease, attempt)
                .await
                .expect("complete");
            done += 1;
        }
    }
    let drain = t0.elapsed();
    Result {
        store,
        entries,
        enqueue,
        drain,
    }
}

fn args_entries() -> usize {
    let args: Vec<String> = std::env::args().collect();
    if resilience_benches::quick_mode() {
        return 50;
    }
    args.iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("redrive: bench");
        return;
    }
    let entries = args_entries();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(async {
        let mut results = Vec::new();
        let dir = std::env::temp_dir().join(format!("redrive-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sqlite = SqliteQueue::open_or_create(dir.join("queue.db"))
            .await
            .expect("sqlite queue");
        results.push(measure("SQLite (WAL file)", Arc::new(sqlite), entries).await);
        let _ = std::fs::remove_dir_all(&dir);

        match test_support::postgres::PostgresServer::start().await {
            Ok(server) => {
                let url = server.create_database().await.expect("create database");
                let pg = PostgresQueue::connect(&url).await.expect("postgres queue");
                results.push(measure("PostgreSQL (loopback)", Arc::new(pg), entries).await);
            }
            Err(e) if test_support::postgres::required() => panic!("PostgreSQL is required: {e}"),
            Err(e) => eprintln!("PostgreSQL part skipped: {e}"),
        }
        results
    });

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## redrive\n\n### redrive queue, {entries} entries of 1 KiB, one task\n"
    );
    let _ = writeln!(
        out,
        "| store | enqueue/s | µs/enqueue | claim+complete/s (batches of {BATCH}) | µs/entry |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for r in &results {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / r.entries as f64;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.0} | {:.1} |",
            r.store,
            r.entries as f64 / r.enqueue.as_secs_f64(),
            per(r.enqueue),
            r.entries as f64 / r.drain.as_secs_f64(),
            per(r.drain),
        );
    }
    println!("{out}");
    let dir = report_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("redrive.md"), &out);
    }
}
