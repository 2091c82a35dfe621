//! Retry on the happy path (no retry needed): bare `service_fn`, tower's `retry` with a simple
//! attempts policy, tower-resilience's retry, and ours — over `http::Request<Full<Bytes>>` with
//! three headers, so the one request copy any retry must make is priced in, and over a minimal
//! request (no headers, empty body), where that copy costs next to nothing and each layer's own
//! cost shows.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use resilience_benches::alloc::CountingAlloc;
use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{
    BareHttp, BareHttpOf, bare_http, bare_http_of, http_request, minimal_request,
};
use resilience_benches::parallel::{bench_parallel, runtime};
use resilience_benches::report::{self, BARE, bench_calls};
use tower::Layer;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Req = Request<Full<Bytes>>;
type Res = Response<Full<Bytes>>;

/// tower's retry with the simplest useful policy: up to `n` attempts on error.
#[derive(Clone, Debug)]
struct Attempts(usize);

impl<E> tower::retry::Policy<Req, Res, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn tower_retry() -> tower::retry::Retry<Attempts, BareHttp> {
    tower::retry::RetryLayer::new(Attempts(3)).layer(bare_http())
}

type ResilienceRetry = tower_resilience::retry::Retry<BareHttp, Req, Res, std::convert::Infallible>;

fn resilience_retry() -> ResilienceRetry {
    tower_resilience::retry::RetryLayer::<Req, Res, std::convert::Infallible>::builder()
        .max_attempts(3)
        .fixed_backoff(Duration::from_millis(10))
        .build()
        .layer(bare_http())
}

type Ours = tower_retry_plus::Retry<BareHttpOf<tower_retry_plus::ReplayBody<Full<Bytes>>>>;

/// Ours with its defaults (4 attempts, full-jitter exponential backoff, the shared retry budget).
fn ours() -> Ours {
    tower_retry_plus::RetryLayer::default().layer(bare_http_of())
}

/// Ours without the retry budget (no shared counter touched per request).
fn ours_no_budget() -> Ours {
    tower_retry_plus::RetryLayer::builder()
        .no_budget()
        .build()
        .expect("valid config")
        .layer(bare_http_of())
}

const GROUP: &str = "retry (no retry needed)";
const MINIMAL: &str = "retry (no retry needed), minimal request";
const MULTI: &str = "retry, multi-threaded (ns/call, wall clock, request built in the loop)";

/// Our layer needs a tokio context (its timers); nothing is spawned or slept on this path.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
}

fn single(c: &mut criterion::Criterion) {
    let rt = current_thread();
    let _guard = rt.enter();
    let mut g = report::group(c, GROUP);
    let mut bare = bare_http();
    bench_calls(&mut g, BARE, http_request, move |r| call_now(&mut bare, r));
    let mut clone_only = bare_http();
    bench_calls(&mut g, "bare + one request clone", http_request, move |r| {
        let copy = black_box(&r).clone();
        drop(black_box(r));
        call_now(&mut clone_only, copy)
    });
    let mut tr = tower_retry();
    bench_calls(&mut g, "tower::retry", http_request, move |r| {
        call_now(&mut tr, r)
    });
    let mut rr = resilience_retry();
    bench_calls(&mut g, "tower-resilience retry", http_request, move |r| {
        call_now(&mut rr, r)
    });
    let mut o = ours();
    bench_calls(&mut g, "ours (tower-retry-plus)", http_request, move |r| {
        call_now(&mut o, r)
    });
    let mut o = ours_no_budget();
    bench_calls(&mut g, "ours, no budget", http_request, move |r| {
        call_now(&mut o, r)
    });
    g.finish();
    report::compare(GROUP, "ours (tower-retry-plus)", "tower::retry");
    report::compare(GROUP, "ours, no budget", "tower::retry");
    report::compare(GROUP, "ours (tower-retry-plus)", "tower-resilience retry");
}

/// The same rows over [`minimal_request`]: what each layer costs beyond copying the request.
fn minimal(c: &mut criterion::Criterion) {
    let rt = current_thread();
    let _guard = rt.enter();
    let mut g = report::group(c, MINIMAL);
    let mut bare = bare_http();
    bench_calls(&mut g, BARE, minimal_request, move |r| {
        call_now(&mut bare, r)
    });
    let mut tr = tower_retry();
    bench_calls(&mut g, "tower::retry", minimal_request, move |r| {
        call_now(&mut tr, r)
    });
    let mut rr = resilience_retry();
    bench_calls(
        &mut g,
        "tower-resilience retry",
        minimal_request,
        move |r| call_now(&mut rr, r),
    );
    let mut o = ours();
    bench_calls(
        &mut g,
        "ours (tower-retry-plus)",
        minimal_request,
        move |r| call_now(&mut o, r),
    );
    let mut o = ours_no_budget();
    bench_calls(&mut g, "ours, no budget", minimal_request, move |r| {
        call_now(&mut o, r)
    });
    g.finish();
    report::compare(MINIMAL, "ours (tower-retry-plus)", "tower::retry");
    report::compare(MINIMAL, "ours, no budget", "tower::retry");
    report::compare(MINIMAL, "ours (tower-retry-plus)", "tower-resilience retry");
}

fn multi(c: &mut criterion::Criterion) {
    let rt = runtime();
    let mut g = report::group(c, MULTI);
    for tasks in [1, 2, 8] {
        let id = |name: &str| format!("{name}/{tasks} tasks");
        bench_parallel(&mut g, &rt, &id("bare"), tasks, &bare_http(), http_request);
        bench_parallel(
            &mut g,
            &rt,
            &id("tower::retry"),
            tasks,
            &tower_retry(),
            http_request,
        );
        bench_parallel(&mut g, &rt, &id("ours"), tasks, &ours(), http_request);
        report::compare(MULTI, &id("ours"), &id("tower::retry"));
    }
    g.finish();
}

fn main() {
    let mut c = resilience_benches::criterion();
    single(&mut c);
    minimal(&mut c);
    multi(&mut c);
    c.final_summary();
    report::finish("retry");
}
