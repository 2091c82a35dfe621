//! The recent outcomes of one endpoint, for passive ejection: the current run of transient
//! failures and the failure rate of the calls before it, packed in one atomic word.
//!
//! A run of failures is a real streak, not noise, when an endpoint failing independently at its
//! background rate would produce it less than once in a million calls
//! ([`tower_fault::evidence::required_streak`]). The background is the failure rate of roughly
//! the last 64 to 128 outcomes *before* the current run: a run is not part of its own
//! background, so a dead endpoint with a clean past is recognised at the configured minimum run.
//!
//! Layout of the word: bits 0..16 count the calls in the window, bits 16..32 the failures among
//! them, bits 32..64 the current run. Recording an outcome is one compare-and-swap on the word
//! (retried only when another outcome of the same endpoint lands in between); no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use tower_fault::evidence::{required_streak, wilson_lower_bound};

/// The window halves (calls and failures) when it reaches this many calls, so it always holds
/// between half of it and all of it (once that many outcomes were seen): the most recent ones
/// weigh most, and an endpoint's history fades within a few hundred calls.
const WINDOW: u64 = 128;

/// Standard errors above the observed background rate: the rate a run is judged against is the
/// upper bound of its Wilson interval (about 97.7 % one-sided), so a window that happens to
/// understate the noise (a few dozen calls are a small sample) does not make a noise run look
/// like a streak.
const NOISE_Z: f64 = 2.0;

const FIELD: u64 = 0xFFFF;
const FAILURES_SHIFT: u32 = 16;
const RUN_SHIFT: u32 = 32;
const WINDOW_MASK: u64 = (1 << RUN_SHIFT) - 1;

/// What one failure saw: the run it extends (itself included) and the window before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Streak {
    pub(crate) run: u32,
    calls: u64,
    failures: u64,
}

impl Streak {
    /// The failure rate the run is judged against: the upper confidence bound of the window's
    /// rate. A short clean history is weak evidence of a quiet endpoint (two successes bound the
    /// rate only below 0.67), so a run right after a cold start must be longer than `min_run`
    /// (up to twice as long, see [`Streak::required`]); some 64 clean outcomes bring the bound
    /// low enough for `min_run` to decide. With no
    /// outcome at all (a new endpoint failing from its first call) the configured minimum run
    /// decides: there is no noise to tell it from.
    pub(crate) fn background(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        // The window excludes the run: its rate is the rate of the calls around the run.
        let successes = self.calls - self.failures;
        1.0 - wilson_lower_bound(successes, self.calls, NOISE_Z)
    }

    /// The run length that ejects now: at least `min_run`, and long enough that noise at the
    /// background rate makes it less than once in a million calls.
    pub(crate) fn required(&self, min_run: u32) -> u32 {
        if self.run < min_run {
            // Cheap early answer: nothing shorter than `min_run` ejects, whatever the rate.
            return min_run;
        }
        let required = required_streak(min_run, self.background());
        if self.failures == 0 {
            // A clean but short history bounds the noise only loosely (its upper bound is
            // high): enough to make a run of `min_run` after a cold start no proof, not enough
            // to hold a dead endpoint for dozens of calls. Twice the minimum at most.
            return required.min(min_run.saturating_mul(2));
        }
        required
    }

    /// Whether the run is a real streak for a configured minimum of `min_run`.
    pub(crate) fn is_real(&self, min_run: u32) -> bool {
        self.run >= self.required(min_run)
    }
}

/// One endpoint's recent outcomes (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Outcomes(AtomicU64);

fn unpack(word: u64) -> (u64, u64, u32) {
    (
        word & FIELD,
        (word >> FAILURES_SHIFT) & FIELD,
        (word >> RUN_SHIFT) as u32,
    )
}

fn pack(calls: u64, failures: u64, run: u32) -> u64 {
    debug_assert!(calls < WINDOW && failures <= calls);
    calls | (failures << FAILURES_SHIFT) | (u64::from(run) << RUN_SHIFT)
}

/// Halves the window until it is below [`WINDOW`] calls.
fn fit(mut calls: u64, mut failures: u64) -> (u64, u64) {
    while calls >= WINDOW {
        calls >>= 1;
        failures >>= 1;
    }
    (calls, failures)
}

impl Outcomes {
    /// A success (or any answer that is not a transient failure): it ends the run, whose
    /// failures then join the window with it. A run that ends in a success was noise as far as
    /// anyone can tell; a run that ends in an ejection is dropped instead ([`end_run`]).
    ///
    /// [`end_run`]: Self::end_run
    #[inline]
    pub(crate) fn success(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let (calls, failures, run) = unpack(word);
                if run == 0 && calls + 1 < WINDOW {
                    return Some(word + 1);
                }
                let run = u64::from(run);
                let (calls, failures) = fit(calls + run + 1, failures + run);
                Some(pack(calls, failures, 0))
            });
    }

    /// A transient failure: extends the run. Returns what it saw.
    pub(crate) fn failure(&self) -> Streak {
        let before = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let (calls, failures, run) = unpack(word);
                Some(pack(calls, failures, run.saturating_add(1)))
            })
            .unwrap_or_else(|word| word);
        let (calls, failures, run) = unpack(before);
        Streak {
            run: run.saturating_add(1),
            calls,
            failures,
        }
    }

    /// Drops the current run without counting it (the endpoint was ejected for it, or came
    /// back into rotation and starts afresh); the window stays.
    pub(crate) fn end_run(&self) {
        self.0.fetch_and(WINDOW_MASK, Ordering::Relaxed);
    }

    /// The current run.
    pub(crate) fn run(&self) -> u32 {
        unpack(self.0.load(Ordering::Relaxed)).2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tower_fault::SeededRng;

    /// Feeds `n` outcomes failing independently with probability `p` (no ejection in between:
    /// a run that qualifies is reported and dropped, as an ejection would) and counts the runs
    /// that qualify for `min_run`.
    fn qualifying_runs(p: f64, n: usize, min_run: u32, seed: u64) -> usize {
        let outcomes = Outcomes::default();
        let mut rng = SeededRng::new(seed);
        let mut streaks = 0;
        for _ in 0..n {
            if rng.next_f64() < p {
                if outcomes.failure().is_real(min_run) {
                    streaks += 1;
                    outcomes.end_run();
                }
            } else {
                outcomes.success();
            }
        }
        streaks
    }

    #[test]
    fn noise_up_to_forty_percent_makes_no_streak_in_a_million_outcomes() {
        for (p, seed) in [(0.1, 1), (0.25, 2), (0.4, 3)] {
            assert_eq!(qualifying_runs(p, 1_000_000, 5, seed), 0, "p = {p}");
        }
    }

    #[test]
    fn a_dead_endpoint_is_recognised_at_the_minimum_run_after_a_clean_past() {
        for history in [0, 80, 127, 128, 500] {
            let outcomes = Outcomes::default();
            for _ in 0..history {
                outcomes.success();
            }
            for run in 1..5 {
                assert!(
                    !outcomes.failure().is_real(5),
                    "history {history}, run {run}"
                );
            }
            assert!(outcomes.failure().is_real(5), "history {history}");
        }
    }

    #[test]
    fn a_short_clean_history_is_weak_evidence_of_a_quiet_endpoint() {
        for (history, at_most) in [(1, 10), (3, 10), (16, 10), (40, 7)] {
            let outcomes = Outcomes::default();
            for _ in 0..history {
                outcomes.success();
            }
            for _ in 0..5 {
                assert!(!outcomes.failure().is_real(5), "history {history}");
            }
            let more = (6..=at_most).find(|_| outcomes.failure().is_real(5));
            assert!(more.is_some(), "history {history}: not real by {at_most}");
        }
    }

    #[test]
    fn a_dead_endpoint_is_recognised_a_few_calls_later_after_a_little_noise() {
        let outcomes = Outcomes::default();
        let mut rng = SeededRng::new(7);
        for _ in 0..1000 {
            if rng.next_f64() < 0.05 {
                let _ = outcomes.failure();
            } else {
                outcomes.success();
            }
        }
        let run = (1..100).find(|_| outcomes.failure().is_real(5)).unwrap();
        assert!((5..=8).contains(&run), "ejecting run {run}");
    }

    #[test]
    fn the_window_halves_and_a_run_ending_in_a_success_joins_it() {
        let outcomes = Outcomes::default();
        for _ in 0..WINDOW - 1 {
            outcomes.success();
        }
        let (calls, failures, _) = unpack(outcomes.0.load(Ordering::Relaxed));
        assert_eq!((calls, failures), (WINDOW - 1, 0));
        for _ in 0..3 {
            let _ = outcomes.failure();
        }
        assert_eq!(outcomes.run(), 3);
        outcomes.success();
        // 127 + 3 + 1 calls, 3 failures, halved once.
        assert_eq!(unpack(outcomes.0.load(Ordering::Relaxed)), (65, 1, 0));
        let _ = outcomes.failure();
        outcomes.end_run();
        assert_eq!(unpack(outcomes.0.load(Ordering::Relaxed)), (65, 1, 0));
    }

    proptest! {
        #[test]
        fn the_window_stays_consistent(ops in proptest::collection::vec(0u8..3, 0..600)) {
            let outcomes = Outcomes::default();
            let mut run = 0u32;
            for op in ops {
                match op {
                    0 => { outcomes.success(); run = 0; }
                    1 => {
                        let streak = outcomes.failure();
                        run += 1;
                        prop_assert_eq!(streak.run, run);
                        prop_assert!(streak.required(3) >= 3);
                        prop_assert!((0.0..=1.0).contains(&streak.background()));
                    }
                    _ => { outcomes.end_run(); run = 0; }
                }
                let (calls, failures, r) = unpack(outcomes.0.load(Ordering::Relaxed));
                prop_assert!(calls < WINDOW && failures <= calls);
                prop_assert_eq!(r, run);
            }
        }
    }
}
