//! End to end over loopback: a hyper HTTP/1.1 server and a hyper-util client, bare versus the
//! suite's full client stack, in one run: requests per second and latency percentiles, and the
//! ratios. The server and the client each get their own single-threaded tokio runtime (one
//! core each on the 2-core reference machine); 16 client workers keep 16 requests in flight over
//! pooled keep-alive connections. Runs alternate bare / stack / bare / stack… so that drift in
//! the machine's load hits both alike; the report takes the median run of each.
//!
//! Not a criterion bench (criterion times one routine; this is a load test), but `cargo bench`
//! runs it like the others. Options: `--secs <f64>` per run (default 2), `--rounds <n>`
//! (default 3), `--test` (one short round, for CI smoke runs; also what `cargo test --benches` gets).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use resilience_benches::alloc::CountingAlloc;
use resilience_benches::report::report_dir;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WORKERS: usize = 16;

fn single_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts the loopback server on its own thread and runtime; answers `200 ok` to everything.
fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = single_thread_runtime();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().expect("server address")
}

type HyperClient<B = Full<Bytes>> = Client<HttpConnector, B>;

fn hyper_client<B>() -> HyperClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(WORKERS)
        .build(connector)
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// Sorted latencies in ns.
    latencies: Vec<u64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        Duration::from_nanos(self.latencies[idx])
    }
}

/// Drives `WORKERS` workers, each sending GETs back to back through its clone of `svc`, for
/// `secs`; every response body is read to the end.
fn load<S, B>(rt: &Runtime, svc: S, url: &str, secs: f64) -> Run
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    let url: Arc<str> = url.into();
    rt.block_on(async move {
        let stop = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut handles = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            let mut svc = svc.clone();
            let url = url.clone();
            handles.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(64 * 1024);
                let mut errors = 0_u64;
                while Instant::now() < stop {
                    let req = Request::get(&*url)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    let t0 = Instant::now();
                    let ok = match svc.ready().await {
                        Ok(ready) => match ready.call(req).await {
                            Ok(res) => res.into_body().collect().await.is_ok(),
                            Err(_) => false,
                        },
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(t0.elapsed().as_nanos() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            }));
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        for h in handles {
            let (l, e) = h.await.expect("worker");
            latencies.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed();
        latencies.sort_unstable();
        Run {
            requests: latencies.len() as u64,
            errors,
            elapsed,
            latencies,
        }
    })
}

fn args() -> (f64, usize) {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    if resilience_benches::quick_mode() {
        return (0.2, 1);
    }
    (
        value("--secs").unwrap_or(2.0),
        value("--rounds").map_or(3, |r| r as usize),
    )
}

fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
    runs.swap_remove(runs.len() / 2)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("e2e: bench");
        return;
    }
    let (secs, rounds) = args();
    let addr = start_server();
    let url = format!("http://{addr}/orders");
    let rt = single_thread_runtime();
    let _guard = rt.enter();

    let bare: HyperClient = hyper_client();
    // The full client stack of DESIGN.md: retry → breaker → failover[2 endpoints] → client.
    let client = hyper_client();
    let failover = tower_failover::Failover::builder()
        .name("e2e")
        .tier([
            tower_failover::Endpoint::new("a", format!("http://{addr}"), client.clone()),
            tower_failover::Endpoint::new("b", format!("http://{addr}"), client),
        ])
        .build()
        .expect("failover config");
    let breaker = tower_breaker::Breaker::builder()
        .name("e2e")
        .build()
        .expect("breaker config");
    let stack = ServiceBuilder::new()
        .layer(tower_retry_plus::RetryLayer::default())
        .layer(breaker.layer())
        .service(failover);
    let stack_name = "retry → breaker → failover → hyper client";

    // Warm both pools.
    let _ = load(&rt, bare.clone(), &url, 0.2);
    let _ = load(&rt, stack.clone(), &url, 0.2);

    let mut bare_runs = Vec::new();
    let mut stack_runs = Vec::new();
    for round in 0..rounds {
        bare_runs.push(load(&rt, bare.clone(), &url, secs));
        stack_runs.push(load(&rt, stack.clone(), &url, secs));
        eprintln!(
            "round {round}: bare {:.0} rps, stack {:.0} rps",
            bare_runs[round].rps(),
            stack_runs[round].rps()
        );
    }
    let bare = median_run(bare_runs);
    let stack = median_run(stack_runs);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## e2e\n\n### end to end, loopback HTTP/1.1, {WORKERS} in flight, {secs} s × {rounds} rounds (median round)\n"
    );
    let _ = writeln!(out, "| client | rps | p50 | p99 | p99.9 | errors |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (name, run) in [("bare hyper client", &bare), (stack_name, &stack)] {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {} |",
            run.rps(),
            run.percentile(0.50).as_secs_f64() * 1e6,
            run.percentile(0.99).as_secs_f64() * 1e6,
            run.percentile(0.999).as_secs_f64() * 1e6,
            run.errors
        );
    }
    let _ = writeln!(
        out,
        "\n- stack / bare: rps ×{:.3}, p99 ×{:.3}",
        stack.rps() / bare.rps(),
        stack.percentile(0.99).as_secs_f64() / bare.percentile(0.99).as_secs_f64()
    );
    println!("{out}");
    let dir = report_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("e2e.md"), &out);
    }
}
