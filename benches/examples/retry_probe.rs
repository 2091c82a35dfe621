//! The retry group's calls in a plain loop, for profilers (perf, callgrind) rather than
//! criterion: requests are built in chunks of 4096 outside the timed loop, as in the bench.
//!
//! ```sh
//! cargo build --profile bench -p resilience-benches --example retry_probe
//! target/release/examples/retry_probe ours 2000            # ns/call over 2000 chunks
//! target/release/examples/retry_probe tower 2000 --minimal # GET /orders, no headers
//! valgrind --tool=callgrind --toggle-collect='*run_calls*' \
//!     target/release/examples/retry_probe ours 5          # instructions of the calls only
//! ```
//!
//! Rows: `bare`, `clone` (bare + one request clone), `tower` (tower::retry), `ours`,
//! `ours-no-budget`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{bare_http, http_request, minimal_request};
use resilience_benches::retry::{Req, ours, ours_no_budget, tower_retry};
use tower::Service;

/// The timed loop (not inlined, so a profiler can collect it alone).
#[inline(never)]
fn run_calls<S: Service<Req>>(svc: &mut S, requests: Vec<Req>, clone_first: bool) {
    for req in requests {
        let req = if clone_first {
            let copy = black_box(&req).clone();
            drop(black_box(req));
            copy
        } else {
            req
        };
        black_box(call_now(svc, black_box(req)).ok());
    }
}

fn time<S: Service<Req>>(svc: &mut S, make: fn() -> Req, rounds: u32, clone_first: bool) -> f64 {
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        let requests: Vec<_> = (0..4096).map(|_| make()).collect();
        let start = Instant::now();
        run_calls(svc, requests, clone_first);
        total += start.elapsed();
    }
    total.as_nanos() as f64 / (f64::from(rounds) * 4096.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let row = args.first().map_or("ours", String::as_str);
    let rounds = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let make = if args.iter().any(|a| a == "--minimal") {
        minimal_request
    } else {
        http_request
    };
    // Our layer needs a tokio context (its timers); nothing is spawned or slept here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    let ns = match row {
        "bare" => time(&mut bare_http(), make, rounds, false),
        "clone" => time(&mut bare_http(), make, rounds, true),
        "tower" => time(&mut tower_retry(), make, rounds, false),
        "ours" => time(&mut ours(), make, rounds, false),
        "ours-no-budget" => time(&mut ours_no_budget(), make, rounds, false),
        other => {
            eprintln!("unknown row {other:?}: bare, clone, tower, ours, ours-no-budget");
            std::process::exit(2);
        }
    };
    println!("{row}: {ns:.1} ns/call");
}
