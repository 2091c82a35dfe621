//! Circuit breaker, closed path: bare `service_fn`, recloser, failsafe, tower-resilience's
//! circuit breaker, and ours — over `http::Request<()>` → `http::Response<()>`, so the breaker's
//! own bookkeeping is what is measured. Then the same on a multi-threaded runtime with 1, 2 and
//! 8 tasks sharing one breaker, and the time-window breakers with 1k, 100k and 1M calls inside
//! the window.

use std::convert::Infallible;
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use failsafe::futures::CircuitBreaker as _;
use http::{Request, Response};
use resilience_benches::alloc::{CountingAlloc, allocations};
use resilience_benches::breaker::{Recloser, ours, ours_count};
use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{BareFuture, BareUnit, bare_unit};
use resilience_benches::parallel::{bench_parallel, runtime};
use resilience_benches::report::{self, BARE, bench_calls};
use tower::{Layer, Service};
use tower_resilience::circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn unit_request() -> Request<()> {
    Request::new(())
}

type FailsafePolicy = failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Exponential>;

/// failsafe's futures-aware breaker around the bare service's future, as a tower service.
#[derive(Clone)]
struct Failsafe {
    breaker: failsafe::StateMachine<FailsafePolicy, ()>,
    inner: BareUnit,
}

impl Failsafe {
    fn new() -> Self {
        let policy = failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::exponential(Duration::from_secs(10), Duration::from_secs(60)),
        );
        Self {
            breaker: failsafe::Config::new().failure_policy(policy).build(),
            inner: bare_unit(),
        }
    }
}

impl Service<Request<()>> for Failsafe {
    type Response = Response<()>;
    type Error = failsafe::Error<Infallible>;
    type Future = failsafe::futures::ResponseFuture<
        BareFuture<Response<()>>,
        FailsafePolicy,
        (),
        failsafe::Any,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

type ResilienceBreaker = tower_resilience::circuitbreaker::CircuitBreaker<
    BareUnit,
    tower_resilience::circuitbreaker::DefaultClassifier,
>;

fn resilience_count() -> ResilienceBreaker {
    CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("valid config")
        .layer(bare_unit())
}

fn resilience_time(window: Duration) -> ResilienceBreaker {
    CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_type(SlidingWindowType::TimeBased)
        .sliding_window_duration(window)
        .build()
        .expect("valid config")
        .layer(bare_unit())
}

const GROUP: &str = "breaker, closed";
const MULTI: &str = "breaker, closed, multi-threaded (ns/call, wall clock)";

fn single(c: &mut criterion::Criterion) {
    let mut g = report::group(c, GROUP);
    let mut bare = bare_unit();
    bench_calls(&mut g, BARE, unit_request, move |r| call_now(&mut bare, r));
    let mut rec = Recloser::new();
    bench_calls(&mut g, "recloser", unit_request, move |r| {
        call_now(&mut rec, r)
    });
    let mut fs = Failsafe::new();
    bench_calls(&mut g, "failsafe", unit_request, move |r| {
        call_now(&mut fs, r)
    });
    let mut tr = resilience_count();
    bench_calls(&mut g, "tower-resilience", unit_request, move |r| {
        call_now(&mut tr, r)
    });
    let mut o = ours_count();
    bench_calls(
        &mut g,
        "ours (tower-breaker), count window",
        unit_request,
        move |r| call_now(&mut o, r),
    );
    let mut o = ours(tower_breaker::Window::time(Duration::from_secs(60)));
    bench_calls(
        &mut g,
        "ours (tower-breaker), time window",
        unit_request,
        move |r| call_now(&mut o, r),
    );
    g.finish();
    report::compare(GROUP, "ours (tower-breaker), count window", "recloser");
    report::compare(GROUP, "ours (tower-breaker), time window", "recloser");
    report::compare(
        GROUP,
        "ours (tower-breaker), count window",
        "tower-resilience",
    );
}

fn multi(c: &mut criterion::Criterion) {
    let rt = runtime();
    let mut g = report::group(c, MULTI);
    for tasks in [1, 2, 8] {
        let id = |name: &str| format!("{name}/{tasks} tasks");
        bench_parallel(&mut g, &rt, &id("bare"), tasks, &bare_unit(), unit_request);
        bench_parallel(
            &mut g,
            &rt,
            &id("recloser"),
            tasks,
            &Recloser::new(),
            unit_request,
        );
        bench_parallel(
            &mut g,
            &rt,
            &id("failsafe"),
            tasks,
            &Failsafe::new(),
            unit_request,
        );
        bench_parallel(
            &mut g,
            &rt,
            &id("tower-resilience"),
            tasks,
            &resilience_count(),
            unit_request,
        );
        bench_parallel(&mut g, &rt, &id("ours"), tasks, &ours_count(), unit_request);
        report::compare(MULTI, &id("ours"), &id("recloser"));
    }
    g.finish();
}

/// Calls timed per fill level, after the window was filled.
const TIMED: u64 = 1000;
/// Fresh breakers per fill level; the median is reported.
const ROUNDS: usize = 3;
/// A fill that takes longer than this is abandoned (and says so in the report).
const FILL_BUDGET: Duration = Duration::from_secs(15);

/// The time-window breaker's cost per call with `fill` calls already inside a one-hour window:
/// fill (untimed), then time [`TIMED`] more calls; median of [`ROUNDS`] fresh breakers. Not a
/// criterion function: the fill has to be redone for each measurement, and 1M calls of fill per
/// criterion sample would take hours for a peer whose cost grows with the window.
fn time_window<S>(group: &str, id: &str, fill: u64, mut make: impl FnMut() -> S)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut per_call = Vec::with_capacity(ROUNDS);
    let mut allocs = 0;
    for _ in 0..ROUNDS {
        let mut svc = make();
        let fill_started = Instant::now();
        for i in 0..fill {
            drop(black_box(call_now(&mut svc, unit_request())));
            if i % 1024 == 0 && fill_started.elapsed() > FILL_BUDGET {
                let text = format!(
                    "filling the window did not finish in {} s ({i} of {fill} calls): the cost per call grows with the window",
                    FILL_BUDGET.as_secs()
                );
                println!("{group}/{id}: {text}");
                report::record(group, id, 1, fill_started.elapsed() / i.max(1) as u32, None);
                report::note(
                    group,
                    id,
                    format!("{text}; ns/call shown is the fill average"),
                );
                return;
            }
        }
        let requests: Vec<_> = (0..TIMED).map(|_| unit_request()).collect();
        let mut out = Vec::with_capacity(TIMED as usize);
        let a0 = allocations();
        let t0 = Instant::now();
        for r in requests {
            out.push(black_box(call_now(&mut svc, r)));
        }
        let elapsed = t0.elapsed();
        allocs += allocations() - a0;
        per_call.push(elapsed);
        drop(out);
    }
    per_call.sort();
    let median = per_call[ROUNDS / 2];
    report::record(group, id, TIMED, median, Some(allocs / ROUNDS as u64));
    report::note(
        group,
        id,
        format!("{fill} calls in window, then {TIMED} timed; median of {ROUNDS}"),
    );
    println!(
        "{group}/{id}: {:.1} ns/call",
        median.as_nanos() as f64 / TIMED as f64
    );
}

fn windows(c: &mut criterion::Criterion) {
    // The group is opened for the report's name only; the measurement is `time_window`'s.
    let g = report::group(c, "breaker, time window (1 h) with N calls inside");
    let group = report::current_group();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filter.is_empty()
        && !filter
            .iter()
            .any(|f| group.contains(f.as_str()) || "window".contains(f.as_str()))
    {
        return;
    }
    if std::env::args().any(|a| a == "--list") || resilience_benches::quick_mode() {
        return;
    }
    for fill in [1_000, 100_000, 1_000_000] {
        time_window(&group, &format!("ours/{fill}"), fill, || {
            ours(tower_breaker::Window::time(Duration::from_secs(3600)))
        });
        time_window(&group, &format!("tower-resilience/{fill}"), fill, || {
            resilience_time(Duration::from_secs(3600))
        });
    }
    drop(g);
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    let mut c = resilience_benches::criterion();
    single(&mut c);
    multi(&mut c);
    windows(&mut c);
    c.final_summary();
    report::finish("breaker");
}
