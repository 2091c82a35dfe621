//! The failover group's p2c pick in a plain loop, for profilers (callgrind's instruction counts
//! are steady where criterion's timings move with the machine's load):
//!
//! ```sh
//! cargo build --profile bench -p resilience-benches --example failover_probe
//! valgrind --tool=callgrind --toggle-collect='*run_calls*' \
//!     target/release/examples/failover_probe 20000       # instructions of the calls only
//! ```

use std::hint::black_box;

use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{BareHttp, http_request};
use tower::Service;

/// The measured loop (not inlined, so a profiler can collect it alone).
#[inline(never)]
fn run_calls<S: Service<http::Request<http_body_util::Full<bytes::Bytes>>>>(
    svc: &mut S,
    requests: Vec<http::Request<http_body_util::Full<bytes::Bytes>>>,
) {
    for req in requests {
        black_box(call_now(svc, black_box(req)).ok());
    }
}

fn main() {
    let calls = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    let mut failover: tower_failover::Failover<BareHttp> = tower_failover::Failover::builder()
        .name("probe")
        .tier((0..8).map(|i| {
            tower_failover::Endpoint::new(
                format!("e{i}"),
                format!("http://10.0.0.{}:8080", i + 1),
                resilience_benches::fixtures::bare_http(),
            )
        }))
        .build()
        .expect("valid config");
    let requests: Vec<_> = (0..calls).map(|_| http_request()).collect();
    run_calls(&mut failover, requests);
}
