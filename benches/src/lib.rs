//! Benches of the tower resilience suite: each layer against a bare `service_fn` and its nearest
//! peer, with allocations per call counted in the same run.
//!
//! The library holds the harness the bench binaries share:
//!
//! * [`alloc`] — a counting global allocator (thread-local counter);
//! * [`drive`] — polling a service once with a no-op waker, so a happy-path call is measured
//!   without an executor in the way;
//! * [`report`] — criterion `iter_custom` glue that keeps ns/call and allocations/call and prints
//!   (and writes) a markdown table per group;
//! * [`parallel`] — throughput with N tasks on a multi-threaded runtime;
//! * [`fixtures`] — the shared request (3 headers, `Full<Bytes>` body) and bare services.
//!
//! Run everything with `cargo bench -p resilience-benches`; see `BENCHMARKS.md` at the root.
#![deny(unsafe_code)] // see alloc.rs: the one `#[allow(unsafe_code)]` is the `GlobalAlloc` impl.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod alloc;
pub mod drive;
pub mod fixtures;
pub mod parallel;
pub mod report;

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
