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

/// Ours: one tier of 8 endpoints over the same bare service; no probe, all healthy. The request
/// is rewritten to the picked endpoint's base URI (which p2c does not do), and nothing is sent
/// anywhere: the "client" is the bare service.
fn ours(balance: tower_failover::Balance) -> tower_failover::Failover<BareHttp> {
    tower_failover::Failover::builder()
        .name("bench")
        .balance(balance)
        .tier((0..ENDPOINTS).map(|i| {
            tower_failover::Endpoint::new(
                format!("e{i}"),
                format!("http://10.0.0.{}:8080", i + 1),
                bare_http(),
            )
        }))
        .build()
        .expect("valid config")
}

const GROUP: &str = "failover, pick among 8 healthy";

fn pick(c: &mut criterion::Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    let mut g = report::group(c, GROUP);
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
    let mut p2c_ours = ours(tower_failover::Balance::P2c);
    bench_calls(
        &mut g,
        "ours (tower-failover), p2c",
        http_request,
        move |r| call_now(&mut p2c_ours, r),
    );
    let mut rr_ours = ours(tower_failover::Balance::RoundRobin);
    bench_calls(
        &mut g,
        "ours (tower-failover), round-robin",
        http_request,
        move |r| call_now(&mut rr_ours, r),
    );
    g.finish();
    report::compare(
        GROUP,
        "ours (tower-failover), p2c",
        "tower p2c (PendingRequests)",
    );
}

fn main() {
    let mut c = resilience_benches::criterion();
    pick(&mut c);
    c.final_summary();
    report::finish("failover");
}
