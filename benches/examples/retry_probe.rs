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

use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use resilience_benches::drive::call_now;
use resilience_benches::fixtures::{bare_http, bare_http_of, http_request, minimal_request};
use tower::{Layer, Service};

type Req = Request<Full<Bytes>>;
type Res = Response<Full<Bytes>>;

/// tower's retry with the simplest useful policy, as in the bench.
#[derive(Clone, Debug)]
struct Attempts(usize);

impl<E> tower::retry::Policy<Req, Res, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

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
        "tower" => time(
            &mut tower::retry::RetryLayer::new(Attempts(3)).layer(bare_http()),
            make,
            rounds,
            false,
        ),
        "ours" => time(
            &mut tower_retry_plus::RetryLayer::default().layer(bare_http_of()),
            make,
            rounds,
            false,
        ),
        "ours-no-budget" => {
            let layer = tower_retry_plus::RetryLayer::builder()
                .no_budget()
                .build()
                .expect("valid config");
            time(&mut layer.layer(bare_http_of()), make, rounds, false)
        }
        other => {
            eprintln!("unknown row {other:?}: bare, clone, tower, ours, ours-no-budget");
            std::process::exit(2);
        }
    };
    println!("{row}: {ns:.1} ns/call");
}
