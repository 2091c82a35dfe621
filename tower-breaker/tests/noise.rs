//! Noise is not an outage: a breaker with its default rules stays closed while an upstream
//! fails calls at random, and opens when the upstream fails them all.

use std::time::Duration;

use tower_breaker::{Backoff, Breaker, BreakerBuilder, Cause, Clock, Jitter, State, Window};
use tower_fault::{RetryAfterHint, SeededRng};

const S: Duration = Duration::from_secs(1);

/// Feeds `calls` calls failing at random with probability `rate` (seeded); returns the
/// transitions to open that happened, and waits out every open period so the run goes on.
async fn random_faults(breaker: &Breaker, rate: f64, calls: u32, seed: u64) -> u32 {
    let mut rng = SeededRng::new(seed);
    let mut opens = 0;
    for _ in 0..calls {
        match breaker.try_acquire() {
            Ok(permit) if rng.next_f64() < rate => permit.failure(),
            Ok(permit) => permit.success(),
            Err(err) => {
                opens += 1;
                tokio::time::advance(err.retry_after().unwrap_or(S)).await;
            }
        }
    }
    opens
}

/// Fails calls until the breaker opens; how many it took.
fn calls_until_open(breaker: &Breaker) -> u32 {
    let mut calls = 0;
    while breaker.state() == State::Closed {
        breaker.try_acquire().expect("closed").failure();
        calls += 1;
        assert!(calls < 10_000, "never opened");
    }
    calls
}

#[tokio::test(start_paused = true)]
async fn the_default_rate_rule_rides_out_forty_percent_random_faults() {
    for seed in 0..5 {
        let breaker = Breaker::builder()
            .clock(Clock::Tokio)
            .seed(seed)
            .build()
            .unwrap();
        let opens = random_faults(&breaker, 0.4, 20_000, seed).await;
        assert_eq!(opens, 0, "seed {seed}: opened {opens} times on noise");
        // The same breaker still opens on an outage, within a window's worth of calls.
        let calls = calls_until_open(&breaker);
        assert!(calls <= 100, "took {calls} calls");
    }
}

#[tokio::test(start_paused = true)]
async fn a_fresh_window_opens_at_minimum_calls_when_every_call_fails() {
    let breaker = Breaker::builder().clock(Clock::Tokio).build().unwrap();
    assert_eq!(calls_until_open(&breaker), 20);
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::time(10 * S))
        .minimum_calls(50)
        .build()
        .unwrap();
    assert_eq!(calls_until_open(&breaker), 50);
}

#[tokio::test(start_paused = true)]
async fn the_raw_rate_is_available_with_zero_confidence() {
    let breaker = Breaker::builder()
        .clock(Clock::Tokio)
        .window(Window::count(20))
        .minimum_calls(20)
        .rate_confidence(0.0)
        .build()
        .unwrap();
    for i in 0..20 {
        let permit = breaker.try_acquire().unwrap();
        if i % 2 == 0 {
            permit.failure();
        } else {
            permit.success();
        }
    }
    assert_eq!(breaker.state(), State::Open, "10 of 20 is 50 %");
}

fn consecutive_only(n: u32) -> BreakerBuilder {
    Breaker::builder()
        .clock(Clock::Tokio)
        .no_failure_rate()
        .consecutive_failures(n)
        .window(Window::count(100))
}

#[tokio::test(start_paused = true)]
async fn a_consecutive_rule_waits_for_a_real_streak_under_noise() {
    let breaker = consecutive_only(3).seed(1).build().unwrap();
    let opens = random_faults(&breaker, 0.4, 20_000, 7).await;
    assert_eq!(opens, 0, "runs of 3 at 40 % are noise");
    // An outage after that noise: the run it takes is the one noise makes once in a million
    // calls at the window's background rate (16 at 40 %), not a few hundred.
    let calls = calls_until_open(&breaker);
    assert!((10..=20).contains(&calls), "took {calls} calls");
}

#[tokio::test(start_paused = true)]
async fn a_consecutive_rule_trips_at_its_run_when_failures_are_rare() {
    let breaker = consecutive_only(3).build().unwrap();
    for _ in 0..50 {
        breaker.try_acquire().unwrap().success();
    }
    assert_eq!(calls_until_open(&breaker), 3);
}

/// Trips a breaker (every call fails) and waits for its open period to end.
async fn tripped(builder: BreakerBuilder) -> Breaker {
    let breaker = builder.open_jitter(Jitter::None).build().unwrap();
    calls_until_open(&breaker);
    tokio::time::advance(breaker.retry_after().unwrap()).await;
    breaker
}

#[tokio::test(start_paused = true)]
async fn half_open_probes_are_judged_together() {
    // Defaults: 5 probes, 50 % threshold: 3 failures re-open, 3 successes close.
    let breaker = tripped(Breaker::builder().clock(Clock::Tokio)).await;
    let probes: Vec<_> = (0..5).map(|_| breaker.try_acquire().unwrap()).collect();
    assert!(breaker.try_acquire().is_err(), "only 5 probes");
    let mut probes = probes.into_iter();
    probes.next().unwrap().failure();
    probes.next().unwrap().failure();
    assert_eq!(breaker.state(), State::HalfOpen, "2 of 5 failing is noise");
    probes.next().unwrap().success();
    probes.next().unwrap().success();
    assert_eq!(breaker.state(), State::HalfOpen);
    probes.next().unwrap().success();
    assert_eq!(breaker.state(), State::Closed);

    let breaker = tripped(Breaker::builder().clock(Clock::Tokio)).await;
    let mut events = breaker.subscribe();
    for _ in 0..3 {
        breaker.try_acquire().unwrap().failure();
    }
    assert_eq!(breaker.state(), State::Open);
    let reopened = std::iter::from_fn(|| events.try_recv())
        .find(|t| t.to == State::Open)
        .unwrap();
    assert_eq!(reopened.cause, Cause::ProbeFailed);
}

#[tokio::test(start_paused = true)]
async fn the_open_period_grows_only_when_every_probe_failed() {
    let builder = Breaker::builder()
        .clock(Clock::Tokio)
        .open_backoff(Backoff::exponential(S, 2.0, 60 * S));
    // Mixed verdicts (2 successes, then 3 failures) re-open for the same period.
    let breaker = tripped(builder).await;
    let mut periods = Vec::new();
    for _ in 0..3 {
        let probes: Vec<_> = (0..5).map(|_| breaker.try_acquire().unwrap()).collect();
        for (i, probe) in probes.into_iter().enumerate() {
            if i < 2 {
                probe.success();
            } else {
                probe.failure();
            }
        }
        assert_eq!(breaker.state(), State::Open);
        periods.push(breaker.retry_after().unwrap().as_secs());
        tokio::time::advance(breaker.retry_after().unwrap()).await;
    }
    assert_eq!(
        periods,
        [1, 1, 1],
        "a mixed verdict does not grow the period"
    );
    // Every probe failing does.
    let mut periods = Vec::new();
    for _ in 0..3 {
        for _ in 0..3 {
            breaker.try_acquire().unwrap().failure();
        }
        periods.push(breaker.retry_after().unwrap().as_secs());
        tokio::time::advance(breaker.retry_after().unwrap()).await;
    }
    assert_eq!(periods, [2, 4, 8]);
}
