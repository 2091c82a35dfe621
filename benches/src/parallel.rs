//! Throughput of a call on a multi-threaded tokio runtime with 1, 2, 8… tasks sharing one
//! layer instance (clones share state), reported as wall-clock ns per call.
//!
//! Each task runs its share of the iterations in a tight loop of [`crate::drive::call_now`]
//! (every service on the happy path answers in its first poll), so what is measured is the
//! contention on the layer's shared state, not the scheduler. Allocations are not reported here:
//! the counter is per thread (see the single-threaded rows for allocations/call).

use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use tokio::runtime::Runtime;

use crate::report;

/// A multi-threaded runtime with one worker per core (2 on the reference machine).
///
/// # Panics
///
/// If the runtime cannot be built.
#[must_use]
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Benches `tasks` tasks each calling a caller made by `make` (one per task, typically capturing
/// a clone of the service), as criterion function `id`.
pub fn bench_parallel<C>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    id: &str,
    tasks: usize,
    make: impl Fn() -> C,
) where
    C: FnMut() + Send + 'static,
{
    let group_name = report::current_group();
    let tasks_u64 = tasks as u64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(tasks_u64).max(1);
            let callers: Vec<C> = (0..tasks).map(|_| make()).collect();
            let start = Instant::now();
            rt.block_on(async {
                let handles: Vec<_> = callers
                    .into_iter()
                    .map(|mut call| {
                        rt.spawn(async move {
                            for _ in 0..per {
                                call();
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.expect("bench task panicked");
                }
            });
            let elapsed = start.elapsed();
            let done = per * tasks_u64;
            report::record(&group_name, id, done, elapsed, None);
            // criterion wants the time of exactly `iters` iterations.
            Duration::from_secs_f64(elapsed.as_secs_f64() * iters as f64 / done as f64)
        });
    });
}
