//! End to end over loopback: a hyper HTTP/1.1 server, and clients with and without the suite's
//! recommended client stack (breaker → retry → failover), in one run: requests per second,
//! latency percentiles and the ratios to the bare client. The server and the client each get
//! their own single-threaded tokio runtime on a thread pinned to its own CPU (the 2-core
//! reference machine has one each; unpinned, the two threads trade cores and the bare client's
//! throughput moves by more than the difference being measured). 16 client workers keep 16
//! requests in flight over pooled keep-alive connections.
//!
//! Each round runs every client once, in order: bare hyper, hyper under failover, under retry →
//! failover, under the whole stack; then experiments to read those against — the bare client
//! plus 1 µs of CPU per request (a known cost), the peers in the same places (`tower::retry` →
//! failover, `tower::timeout`), our retry without its deadline, and the stack's jobs but
//! failover done by ours and by the peers composed the same way (retry, breaker → retry;
//! `tower::timeout` → `tower::retry`, tower-resilience's breaker → both); then bare reqwest
//! (through tower-fault's `ReqwestService`) and reqwest under failover, retry → failover and
//! the whole stack. A stacked client's ratio is taken against the bare client of the same round
//! (so drift in the machine's load hits both alike), and the report gives the median of those
//! per-round ratios with their range, next to each client's median round.
//!
//! Not a criterion bench (criterion times one routine; this is a load test), but `cargo bench`
//! runs it like the others. Options: `--secs <f64>` per run (default 1.5), `--rounds <n>`
//! (default 7), `--only <substring>` (the clients whose name contains it, or the one client
//! it names in full, with their bare client; add `--alone` to leave the bare client out, for a
//! profiler), `--test` (one short round, for CI smoke runs; also what `cargo test --benches`
//! gets).
//!
//! Each round's line on stderr also gives the requests each client completed, warm-up included
//! on the first line, so a profiler's counts can be divided per request.

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
use resilience_benches::pin::pin_current_thread;
use resilience_benches::report::report_dir;
use resilience_benches::retry::Attempts;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_breaker::{Breaker, CircuitBreaker, Window};
use tower_failover::{Failover, FailoverLayer};
use tower_fault::reqwest::ReqwestService;
use tower_resilience::circuitbreaker::SlidingWindowType;
use tower_retry_plus::{Retry, RetryLayer};

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
        let _ = pin_current_thread(1);
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

/// An experiment: the bare client plus `iters` iterations of pure CPU work per request, to
/// see how the bench turns a known client-side cost into lost throughput.
#[derive(Clone)]
struct Spin<S> {
    inner: S,
    iters: u64,
}

impl<S, R> Service<R> for Spin<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let mut x = 0_u64;
        for i in 0..self.iters {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        std::hint::black_box(x);
        self.inner.call(req)
    }
}

/// Iterations of `Spin`'s loop per `ns` nanoseconds on this machine.
fn spin_iterations(ns: u64) -> u64 {
    let n = 50_000_000_u64;
    let t = Instant::now();
    let mut x = 0_u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_add(i));
    }
    std::hint::black_box(x);
    let per_iter = t.elapsed().as_nanos() as f64 / n as f64;
    (ns as f64 / per_iter) as u64
}

/// Command-line options (see the module docs).
struct Args {
    secs: f64,
    rounds: usize,
    only: Option<String>,
    /// With `--only`: without their bare clients (for a profiler).
    alone: bool,
}

fn args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only = value("--only");
    let alone = args.iter().any(|a| a == "--alone");
    if resilience_benches::quick_mode() {
        return Args {
            secs: 0.2,
            rounds: 1,
            only,
            alone,
        };
    }
    Args {
        secs: value("--secs").and_then(|v| v.parse().ok()).unwrap_or(1.5),
        rounds: value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(7),
        only,
        alone,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
    runs.swap_remove(runs.len() / 2)
}

/// Failover over two endpoints in one tier, both this server (one client, cloned per endpoint).
fn failover<S: Clone + Send + Sync + 'static>(base: &str, client: S) -> Failover<S> {
    FailoverLayer::builder()
        .name("e2e")
        .tier([("a", base), ("b", base)])
        .build()
        .expect("failover config")
        .layer(client)
}

/// The recommended client stack: one breaker for the upstream (time window, as the README's),
/// outside retry (defaults: 30 s deadline, budget), outside failover.
fn stack<S: Clone + Send + Sync + 'static>(base: &str, client: S) -> Stack<S> {
    breaker_retry(failover(base, client))
}

/// The stack's breaker and retry, over `inner`.
fn breaker_retry<S>(inner: S) -> CircuitBreaker<Retry<S>> {
    ServiceBuilder::new()
        .layer(breaker().layer())
        .layer(RetryLayer::default())
        .service(inner)
}

/// The stack's breaker: one for the upstream, time window, as the README's.
fn breaker() -> Breaker {
    Breaker::builder()
        .name("e2e")
        .window(Window::time(Duration::from_secs(10)))
        .minimum_calls(100)
        .build()
        .expect("breaker config")
}

type Stack<S> = CircuitBreaker<Retry<Failover<S>>>;

const HYPER: &str = "bare hyper client";
const REQWEST: &str = "bare reqwest client (ReqwestService)";

/// One client under test: how to run it for some seconds, and the bare client it is compared
/// with (its own name for a bare one).
struct Contender<'a> {
    name: &'static str,
    baseline: &'static str,
    run: Box<dyn Fn(f64) -> Run + 'a>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("e2e: bench");
        return;
    }
    let Args {
        secs,
        rounds,
        only,
        alone,
    } = args();
    let addr = start_server();
    let pinned = pin_current_thread(0);
    let url = format!("http://{addr}/orders");
    let base = format!("http://{addr}");
    let rt = single_thread_runtime();
    let _guard = rt.enter();

    let hyper_bare: HyperClient = hyper_client();
    let hyper_failover = failover(&base, hyper_client::<Full<Bytes>>());
    let hyper_retry = RetryLayer::default().layer(failover(&base, hyper_client()));
    let hyper_stack = stack(&base, hyper_client());
    let spin = Spin {
        inner: hyper_client::<Full<Bytes>>(),
        iters: spin_iterations(1000),
    };
    let tower_retry = tower::retry::RetryLayer::new(Attempts(3))
        .layer(failover(&base, hyper_client::<Full<Bytes>>()));
    let tower_timeout = tower::timeout::TimeoutLayer::new(Duration::from_secs(30))
        .layer(hyper_client::<Full<Bytes>>());
    // The same jobs without failover, ours and the peers composed: a deadline over all
    // attempts and retries (tower's timeout outside tower's retry), then a breaker outside.
    let hyper_retry_only = RetryLayer::default().layer(hyper_client());
    let hyper_breaker_retry = breaker_retry(hyper_client());
    let peers_timeout_retry = ServiceBuilder::new()
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)))
        .layer(tower::retry::RetryLayer::new(Attempts(3)))
        .service(hyper_client::<Full<Bytes>>());
    let peers_breaker_timeout_retry = ServiceBuilder::new()
        .layer(
            tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .failure_rate_threshold(0.5)
                .sliding_window_type(SlidingWindowType::TimeBased)
                .sliding_window_duration(Duration::from_secs(10))
                .minimum_number_of_calls(100)
                .build()
                .expect("tower-resilience breaker config"),
        )
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)))
        .layer(tower::retry::RetryLayer::new(Attempts(3)))
        .service(hyper_client::<Full<Bytes>>());
    let hyper_retry_no_deadline = RetryLayer::builder()
        .no_deadline()
        .build()
        .expect("retry config")
        .layer(failover(&base, hyper_client()));
    let reqwest_client = || {
        ReqwestService::new(
            reqwest::Client::builder()
                .pool_max_idle_per_host(WORKERS)
                .tcp_nodelay(true)
                .build()
                .expect("reqwest client"),
        )
    };
    let reqwest_bare = reqwest_client();
    let reqwest_failover = failover(&base, reqwest_client());
    let reqwest_retry = RetryLayer::default().layer(failover(&base, reqwest_client()));
    let reqwest_stack = stack(&base, reqwest_client());

    let (rt, url) = (&rt, url.as_str());
    let mut clients = vec![
        Contender {
            name: HYPER,
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, hyper_bare.clone(), url, secs)),
        },
        Contender {
            name: "failover → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, hyper_failover.clone(), url, secs)),
        },
        Contender {
            name: "retry → failover → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, hyper_retry.clone(), url, secs)),
        },
        Contender {
            name: "breaker → retry → failover → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, hyper_stack.clone(), url, secs)),
        },
        // Experiments, not recommendations. A known cost: 1 µs of CPU per request in the
        // client, to read the other rows against.
        Contender {
            name: "1 µs of CPU per request → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, spin.clone(), url, secs)),
        },
        // The peers in the same places: tower's retry (clones the request and the service per
        // call, no deadline), and tower's timeout (one timer per request, as the deadline).
        Contender {
            name: "tower::retry → failover → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, tower_retry.clone(), url, secs)),
        },
        Contender {
            name: "tower::timeout → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, tower_timeout.clone(), url, secs)),
        },
        // What the default deadline's timer costs.
        Contender {
            name: "retry without deadline → failover → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, hyper_retry_no_deadline.clone(), url, secs)),
        },
        // The floor the peers set: the stack's jobs but failover, done by the peers and
        // composed the same way (tower-resilience's breaker, tower's timeout as the deadline,
        // tower's retry), next to ours without failover.
        Contender {
            name: "retry → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, hyper_retry_only.clone(), url, secs)),
        },
        Contender {
            name: "tower::timeout → tower::retry → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, peers_timeout_retry.clone(), url, secs)),
        },
        Contender {
            name: "breaker → retry → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, hyper_breaker_retry.clone(), url, secs)),
        },
        Contender {
            name: "tower-resilience breaker → tower::timeout → tower::retry → hyper client",
            baseline: HYPER,
            run: Box::new(move |secs| load(rt, peers_breaker_timeout_retry.clone(), url, secs)),
        },
        Contender {
            name: REQWEST,
            baseline: REQWEST,
            run: Box::new(move |secs| load(rt, reqwest_bare.clone(), url, secs)),
        },
        Contender {
            name: "failover → reqwest client",
            baseline: REQWEST,
            run: Box::new(move |secs| load(rt, reqwest_failover.clone(), url, secs)),
        },
        Contender {
            name: "retry → failover → reqwest client",
            baseline: REQWEST,
            run: Box::new(move |secs| load(rt, reqwest_retry.clone(), url, secs)),
        },
        Contender {
            name: "breaker → retry → failover → reqwest client",
            baseline: REQWEST,
            run: Box::new(move |secs| load(rt, reqwest_stack.clone(), url, secs)),
        },
    ];
    if let Some(only) = &only {
        let exact = clients.iter().any(|c| c.name == only.as_str());
        let wanted: Vec<&str> = clients
            .iter()
            .filter(|c| {
                // A client's whole name picks that client alone, not every name containing it.
                if exact {
                    c.name == only.as_str()
                } else {
                    c.name.contains(only.as_str())
                }
            })
            .flat_map(|c| [c.name, if alone { c.name } else { c.baseline }])
            .collect();
        clients.retain(|c| wanted.contains(&c.name));
    }

    // Warm every pool (and the allocator's caches) before the first measured round.
    let mut line = String::from("warm-up:");
    for client in &clients {
        let run = (client.run)(0.2);
        let _ = write!(line, " {}", run.requests + run.errors);
    }
    eprintln!("{line} requests");
    let mut runs: Vec<Vec<Run>> = clients.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut line = format!("round {round}:");
        for (client, runs) in clients.iter().zip(&mut runs) {
            let run = (client.run)(secs);
            let _ = write!(
                line,
                " {:.0} rps ({} requests)",
                run.rps(),
                run.requests + run.errors
            );
            runs.push(run);
        }
        eprintln!("{line}");
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## e2e\n\n### end to end, loopback HTTP/1.1, {WORKERS} in flight, {secs} s × {rounds} rounds\n"
    );
    let _ = writeln!(
        out,
        "Client and server threads pinned to their own CPUs: {}. Each client's median round; \
         ratios are per round against the bare client of the same round, then their median \
         (min–max).\n",
        if pinned { "yes" } else { "no" }
    );
    let _ = writeln!(
        out,
        "| client | rps | p50 | p99 | p99.9 | errors | rps / bare | p99 / bare |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, client) in clients.iter().enumerate() {
        let baseline = clients
            .iter()
            .position(|c| c.name == client.baseline)
            .unwrap_or(i);
        let (rps_ratio, p99_ratio) = if baseline == i {
            (String::new(), String::new())
        } else {
            let ratios = |f: &dyn Fn(&Run) -> f64| {
                let per_round: Vec<f64> = runs[i]
                    .iter()
                    .zip(&runs[baseline])
                    .map(|(ours, bare)| f(ours) / f(bare))
                    .collect();
                let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = per_round.iter().copied().fold(0.0, f64::max);
                format!("×{:.3} ({lo:.2}–{hi:.2})", median(per_round))
            };
            (
                ratios(&Run::rps),
                ratios(&|r: &Run| r.percentile(0.99).as_secs_f64()),
            )
        };
        let run = median_run(runs[i].clone());
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {} | {rps_ratio} | {p99_ratio} |",
            client.name,
            run.rps(),
            run.percentile(0.50).as_secs_f64() * 1e6,
            run.percentile(0.99).as_secs_f64() * 1e6,
            run.percentile(0.999).as_secs_f64() * 1e6,
            run.errors
        );
    }
    println!("{out}");
    let dir = report_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("e2e.md"), &out);
    }
}
