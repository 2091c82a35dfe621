//! Benches of the tower resilience suite: each layer against a bare `service_fn` and its nearest
//! peer, with allocations per call counted in the same run.
//!
//! The library holds the harness the bench binaries share:
//!
//! * [`alloc`] — a counting global allocator (thread-local counter);
//! * [`breaker`] — the breakers the breaker group compares (recloser's adapter, ours);
//! * [`drive`] — polling a service once with a no-op waker, so a happy-path call is measured
//!   without an executor in the way;
//! * [`report`] — criterion `iter_custom` glue that keeps ns/call and allocations/call and prints
//!   (and writes) a markdown table per group;
//! * [`parallel`] — throughput with N tasks on a multi-threaded runtime;
//! * [`fixtures`] — the shared request (3 headers, `Full<Bytes>` body) and bare services;
//! * [`pin`] — pinning a load test's threads to their own CPUs.
//!
//! Run everything with `cargo bench -p resilience-benches`; see `BENCHMARKS.md` at the root.
#![deny(unsafe_code)]
// narrow `#[allow(unsafe_code)]`s: the `GlobalAlloc` impl (alloc.rs), `sched_setaffinity` (pin.rs).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod alloc;
pub mod breaker;
pub mod drive;
pub mod fixtures;
pub mod parallel;
pub mod pin;
pub mod report;
pub mod retry;

use std::time::Duration;

use criterion::Criterion;

/// Criterion with short defaults (1 s warm-up, 2 s measurement, 30 samples), still overridable
/// from the command line (`-- --measurement-time 5`).
#[must_use]
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args()
}

/// Whether a bench binary should do a quick smoke run instead of measuring: criterion's rule —
/// `cargo bench` passes `--bench`; `cargo test --benches` does not, and `--test` asks for it.
#[must_use]
pub fn quick_mode() -> bool {
    let mut args = std::env::args().skip(1);
    let args: Vec<String> = args.by_ref().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Request;

    use crate::alloc::{CountingAlloc, allocations, is_counting};
    use crate::drive::call_now;
    use crate::fixtures::{bare_http, bare_unit, http_request};
    use crate::report;

    #[global_allocator]
    static ALLOC: CountingAlloc = CountingAlloc;

    #[test]
    fn the_allocator_counts_this_threads_allocations() {
        assert!(is_counting());
        let before = allocations();
        let boxes: Vec<Box<u64>> = (0..10).map(Box::new).collect();
        // 10 boxes and the vector itself.
        assert_eq!(allocations() - before, 11);
        drop(boxes);
        let other = std::thread::spawn(|| drop(std::hint::black_box(vec![0_u8; 64])));
        let before = allocations();
        other.join().expect("thread");
        assert!(
            allocations() - before <= 1,
            "another thread's allocations leaked into ours"
        );
    }

    #[test]
    fn a_bare_call_completes_in_one_poll_without_allocating() {
        let mut svc = bare_unit();
        let req = Request::new(());
        let before = allocations();
        let res = call_now(&mut svc, req).expect("infallible");
        assert_eq!(allocations() - before, 0);
        assert_eq!(res.status(), 200);
        let res = call_now(&mut bare_http(), http_request()).expect("infallible");
        assert_eq!(res.status(), 200);
    }

    #[test]
    #[should_panic(expected = "not ready in its first poll")]
    fn a_pending_future_is_a_bench_bug() {
        crate::drive::poll_now(std::future::pending::<()>());
    }

    #[test]
    fn the_report_prints_ratios_and_overheads() {
        let group = "report self-test";
        report::record(
            group,
            report::BARE,
            1000,
            Duration::from_micros(10),
            Some(0),
        );
        report::record(group, "ours", 1000, Duration::from_micros(30), Some(2000));
        report::record(group, "peer", 1000, Duration::from_micros(60), Some(3000));
        report::compare(group, "ours", "peer");
        let text = report::render();
        assert!(text.contains("| ours | 30.0 ns | 2 | +20.0 ns |"), "{text}");
        assert!(text.contains("time ×0.50, allocs 2 vs 3"), "{text}");
    }
}
