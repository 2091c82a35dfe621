//! Throughput of a call on a multi-threaded tokio runtime with 1, 2, 8… tasks sharing one
//! layer instance (clones share state), reported as wall-clock ns per call.
//!
//! Each task runs its share of the iterations in a tight loop of `ready().await` +
//! `call(req).await` on its own clone of the service; on the happy path these complete without
//! parking unless the layer's shared state is contended (an async mutex, say), so what is
//! measured is that contention, not the scheduler. Allocations are not reported here:
//! the counter is per thread (see the single-threaded rows for allocations/call).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

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

/// Benches `tasks` tasks, each calling its own clone of `svc` with requests from `req`, as
/// criterion function `id`.
pub fn bench_parallel<S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    id: &str,
    tasks: usize,
    svc: &S,
    req: fn() -> R,
) where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    R: Send + 'static,
{
    let group_name = report::current_group();
    let tasks_u64 = tasks as u64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(tasks_u64).max(1);
            let callers: Vec<S> = (0..tasks).map(|_| svc.clone()).collect();
            let start = Instant::now();
            rt.block_on(async {
                let handles: Vec<_> = callers
                    .into_iter()
                    .map(|mut svc| {
                        rt.spawn(async move {
                            for _ in 0..per {
                                let out = match svc.ready().await {
                                    Ok(ready) => ready.call(req()).await.ok(),
                                    Err(_) => None,
                                };
                                assert!(out.is_some(), "a call failed on the happy path");
                                drop(black_box(out));
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
