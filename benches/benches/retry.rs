//! Retry on the happy path (no retry needed): bare `service_fn`, tower's `retry` with a simple
//! attempts policy, tower-resilience's retry, and ours — over `http::Request<Full<Bytes>>` with
//! three headers, so the one request copy any retry must make is priced in, and over a minimal
//! request (no headers, empty body), where that copy costs next to nothing and each layer's own
//! cost shows.

use std::hint::black_box;

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use resilience_benches::alloc::CountingAlloc;
use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{bare_http, http_request, minimal_request};
use resilience_benches::parallel::{bench_parallel, runtime};
use resilience_benches::report::{self, BARE, bench_calls};
use resilience_benches::retry::{Req, ours, ours_no_budget, resilience_retry, tower_retry};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

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

/// The rows every single-threaded group has: the peers and ours over `input`, then the ratios.
fn layer_rows(g: &mut BenchmarkGroup<'_, WallTime>, group: &str, input: fn() -> Req) {
    let mut tr = tower_retry();
    bench_calls(g, "tower::retry", input, move |r| call_now(&mut tr, r));
    let mut rr = resilience_retry();
    bench_calls(g, "tower-resilience retry", input, move |r| {
        call_now(&mut rr, r)
    });
    let mut o = ours();
    bench_calls(g, "ours (tower-retry-plus)", input, move |r| {
        call_now(&mut o, r)
    });
    let mut o = ours_no_budget();
    bench_calls(g, "ours, no budget", input, move |r| call_now(&mut o, r));
    report::compare(group, "ours (tower-retry-plus)", "tower::retry");
    report::compare(group, "ours, no budget", "tower::retry");
    report::compare(group, "ours (tower-retry-plus)", "tower-resilience retry");
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
    layer_rows(&mut g, GROUP, http_request);
    g.finish();
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
    layer_rows(&mut g, MINIMAL, minimal_request);
    g.finish();
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
