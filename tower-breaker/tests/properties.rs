//! Property tests of the windows against naive models, and concurrency.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use proptest::prelude::*;
use tower_breaker::{Backoff, Breaker, Clock, Jitter, State, Window};
use tower_fault::Class;

/// Never trips (100% of at least `size` calls), so the window can be observed freely.
fn observer(window: Window, minimum: u32) -> Breaker {
    Breaker::builder()
        .clock(Clock::Tokio)
        .window(window)
        .minimum_calls(minimum)
        .failure_rate_threshold(1.0)
        .build()
        .unwrap()
}

fn class(outcome: u8) -> Class {
    match outcome {
        0 => Class::Success,
        1 => Class::TRANSIENT,
        _ => Class::Permanent,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn count_window_matches_the_last_n_recorded_calls(
        size in 1u32..40,
        outcomes in proptest::collection::vec(0u8..3, 0..300),
    ) {
        let breaker = observer(Window::count(size), size);
        let mut model: VecDeque<bool> = VecDeque::new();
        for outcome in outcomes {
            breaker.try_acquire().unwrap().record(class(outcome));
            if outcome < 2 {
                model.push_back(outcome == 1);
                if model.len() > size as usize {
                    model.pop_front();
                }
            }
            if breaker.state() != State::Closed {
                // Only when every one of `size` calls failed.
                prop_assert!(model.len() == size as usize && model.iter().all(|f| *f));
                breaker.reset();
                model.clear();
                continue;
            }
            let counts = breaker.counts();
            prop_assert_eq!(counts.calls, model.len() as u64);
            prop_assert_eq!(counts.failures, model.iter().filter(|f| **f).count() as u64);
        }
    }

    #[test]
    fn time_window_matches_the_calls_of_the_last_buckets(
        buckets in 1u32..12,
        steps in proptest::collection::vec((0u64..1500, 0u8..3), 0..200),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let width = 100u64; // ms per bucket
            let breaker = observer(Window::time_with_buckets(Duration::from_millis(width * u64::from(buckets)), buckets), 1_000_000);
            let start = tokio::time::Instant::now();
            let mut model: Vec<(u64, bool)> = Vec::new(); // (epoch, failed)
            for (advance_ms, outcome) in steps {
                tokio::time::advance(Duration::from_millis(advance_ms)).await;
                let epoch = start.elapsed().as_millis() as u64 / width;
                breaker.try_acquire().unwrap().record(class(outcome));
                if outcome < 2 {
                    model.push((epoch, outcome == 1));
                }
                let live: Vec<_> = model.iter().filter(|(e, _)| e + u64::from(buckets) > epoch).collect();
                let counts = breaker.counts();
                prop_assert_eq!(counts.calls, live.len() as u64);
                prop_assert_eq!(counts.failures, live.iter().filter(|(_, f)| *f).count() as u64);
            }
            Ok(())
        })?;
    }
}

#[test]
fn concurrent_recording_keeps_the_ring_exact() {
    let breaker = observer(Window::count(64), 64);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let breaker = breaker.clone();
            std::thread::spawn(move || {
                for i in 0..50_000u32 {
                    let class = if (i + t) % 7 == 0 {
                        Class::TRANSIENT
                    } else {
                        Class::Success
                    };
                    breaker.try_acquire().unwrap().record(class);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counts = breaker.counts();
    assert_eq!(counts.calls, 64);
    assert!(counts.failures <= 64);
    // Settle: 64 more successes replace every slot exactly.
    for _ in 0..64 {
        breaker.try_acquire().unwrap().success();
    }
    assert_eq!((breaker.counts().calls, breaker.counts().failures), (64, 0));
}

#[test]
fn concurrent_probes_never_exceed_the_permits() {
    for _ in 0..20 {
        let breaker = Breaker::builder()
            .clock(Clock::Tokio)
            .consecutive_failures(1)
            .half_open_permits(5)
            .open_backoff(Backoff::exponential(
                Duration::from_millis(1),
                2.0,
                Duration::from_millis(1),
            ))
            .open_jitter(Jitter::None)
            .build()
            .unwrap();
        breaker.try_acquire().unwrap().failure();
        std::thread::sleep(Duration::from_millis(2));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let breaker = breaker.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..100)
                        .filter_map(|_| breaker.try_acquire_owned().ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // Keep every permit alive until all threads are done: dropping one frees a slot.
        let permits: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(permits.iter().map(Vec::len).sum::<usize>(), 5);
    }
}
