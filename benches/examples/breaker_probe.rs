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
//!
//! `padded-bare`, `padded-recloser`, `padded-count` and `padded-time` run the same over an inner
//! service whose future is as large as a real client's ([`PaddedFuture`]), which a tiny bare
//! future does not show: every move of a future past 128 bytes is a `memcpy` call. They also
//! put a second instance of each breaker type in the binary, as any program with breaker
//! services over two inner types has: how much LLVM inlines into the closed path depends on it.
//!
//! [`PaddedFuture`]: resilience_benches::fixtures::PaddedFuture

use std::hint::black_box;
use std::time::Duration;

use http::Request;
use resilience_benches::breaker::{Recloser, ours, ours_count, ours_over};
use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{bare_unit, padded_unit};
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
        "padded-bare" => run_calls(&mut padded_unit(), requests),
        "padded-recloser" => run_calls(&mut Recloser::over(padded_unit()), requests),
        "padded-count" => run_calls(&mut ours_over(Window::count(100), padded_unit()), requests),
        "padded-time" => run_calls(
            &mut ours_over(Window::time(Duration::from_secs(60)), padded_unit()),
            requests,
        ),
        other => {
            eprintln!(
                "breaker_probe: unknown breaker {other:?} (bare, recloser, count, time, padded-…)"
            );
        }
    }
}
