//! The breaker group's closed-path calls in a plain loop, for profilers (callgrind's
//! instruction counts are steady where criterion's timings move with the machine's load):
//!
//! ```sh
//! cargo build --profile bench -p resilience-benches --example breaker_probe
//! for which in bare recloser count time; do
//!     valgrind --tool=callgrind --toggle-collect='*run_calls*' \
//!         target/release/examples/breaker_probe $which 20000   # instructions of the calls only
//! done
//! ```

use std::hint::black_box;
use std::time::Duration;

use http::Request;
use resilience_benches::breaker::{Recloser, ours, ours_count};
use resilience_benches::drive::call_now;
use resilience_benches::fixtures::bare_unit;
use tower::Service;
use tower_breaker::Window;

/// The measured loop (not inlined, so a profiler can collect it alone).
#[inline(never)]
fn run_calls<S: Service<Request<()>>>(svc: &mut S, requests: Vec<Request<()>>) {
    for req in requests {
        black_box(call_now(svc, black_box(req)).ok());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "time".into());
    let calls = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let requests: Vec<_> = (0..calls).map(|_| Request::new(())).collect();
    match which.as_str() {
        "bare" => run_calls(&mut bare_unit(), requests),
        "recloser" => run_calls(&mut Recloser::new(), requests),
        "count" => run_calls(&mut ours_count(), requests),
        "time" => run_calls(&mut ours(Window::time(Duration::from_secs(60))), requests),
        other => {
            eprintln!("breaker_probe: unknown breaker {other:?} (bare, recloser, count, time)");
        }
    }
}
