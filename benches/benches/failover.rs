//! Failover pick among 8 healthy endpoints: bare `service_fn`, tower's `balance::p2c` over 8
//! `PendingRequests` endpoints (a `ServiceList`), and ours.

use std::hint::black_box;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use resilience_benches::alloc::CountingAlloc;
use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{BareHttp, bare_http, http_request};
use resilience_benches::report::{self, BARE, bench_calls};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Req = Request<Full<Bytes>>;

const ENDPOINTS: usize = 8;

fn p2c() -> Balance<ServiceList<Vec<PendingRequests<BareHttp>>>, Req> {
    let endpoints = (0..ENDPOINTS)
        .map(|_| PendingRequests::new(bare_http(), CompleteOnResponse::default()))
        .collect::<Vec<_>>();
    Balance::new(ServiceList::new::<Req>(endpoints))
}

fn pick(c: &mut criterion::Criterion) {
    let mut g = report::group(c, "failover, pick among 8 healthy");
    let mut bare = bare_http();
    bench_calls(&mut g, BARE, http_request, move |r| call_now(&mut bare, r));
    let mut balance = p2c();
    // The first poll_ready discovers the endpoints; do it before measuring.
    drop(black_box(call_now(&mut balance, http_request())));
    bench_calls(
        &mut g,
        "tower p2c (PendingRequests)",
        http_request,
        move |r| call_now(&mut balance, r),
    );
    g.finish();
}

fn main() {
    let mut c = resilience_benches::criterion();
    pick(&mut c);
    c.final_summary();
    report::finish("failover");
}
