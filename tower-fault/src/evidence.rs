//! How much evidence a count of failures is: the statistics the health detectors (breakers,
//! passive ejection) share, so that uncorrelated noise is not mistaken for an outage.
//!
//! An upstream that fails one request in four at random is not down, and every retry has three
//! chances in four. A detector that trips on "half of the last 20 calls failed" or "three
//! failures in a row" trips on such noise all the time at high request rates; these functions
//! say when a count is real evidence instead.

/// The lower bound of the Wilson score interval for a proportion of `hits` in `total`, `z`
/// standard errors below the observed rate.
///
/// With `z = 0` it is the observed rate itself. With `z = 2` (about 97.7 % one-sided
/// confidence) a rate reaches a threshold only when the sample shows it clearly: 20 failures in
/// 20 calls give 0.83, 15 in 20 give 0.53, 50 in 100 give 0.40, 60 in 100 give 0.50.
///
/// ```
/// use tower_fault::evidence::wilson_lower_bound;
///
/// assert_eq!(wilson_lower_bound(5, 10, 0.0), 0.5);
/// assert!(wilson_lower_bound(20, 20, 2.0) > 0.8);
/// assert!(wilson_lower_bound(50, 100, 2.0) < 0.5);
/// assert_eq!(wilson_lower_bound(0, 0, 2.0), 0.0);
/// ```
#[must_use]
pub fn wilson_lower_bound(hits: u64, total: u64, z: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    let p = (hits.min(total) as f64) / n;
    if z <= 0.0 {
        return p;
    }
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

/// How rare a run of failures must be, under the background failure rate, to count as a real
/// streak rather than noise: less than once in a million calls.
pub const STREAK_NOISE_ODDS: f64 = 1e-6;

/// The length a run of consecutive failures must reach to be a real streak, given the failure
/// rate of the calls around it (`background`, in `[0, 1]`), and at least `min_run`.
///
/// Independent failures at rate `p` produce a run of `k` with probability `p^k` at each call,
/// so the run must be long enough that `p^k` is below [`STREAK_NOISE_ODDS`]: with `p` = 0.05 a
/// run of 5 will do, with `p` = 0.25 it takes 10, with `p` = 0.4 it takes 16. A dead endpoint
/// fails every call, so its run grows without limit and is recognised a few calls later than a
/// fixed threshold would recognise it; noise is not recognised at all.
///
/// A `background` of 1 (every call around the run failed too) needs no more than `min_run`:
/// there is no success to tell noise from an outage, and the rate rules speak for such a window.
///
/// ```
/// use tower_fault::evidence::required_streak;
///
/// assert_eq!(required_streak(5, 0.0), 5);
/// assert_eq!(required_streak(5, 0.05), 5);
/// assert_eq!(required_streak(5, 0.25), 10);
/// assert_eq!(required_streak(5, 0.4), 16);
/// assert_eq!(required_streak(3, 1.0), 3);
/// ```
#[must_use]
pub fn required_streak(min_run: u32, background: f64) -> u32 {
    if !(background > 0.0 && background < 1.0) {
        return min_run;
    }
    let needed = (STREAK_NOISE_ODDS.ln() / background.ln()).ceil();
    // `needed` is positive and finite here (both logarithms are negative); the cast saturates.
    min_run.max(needed as u32)
}

/// The failure rate of the calls around a run: `failures - run` of `calls - run`, 0 when the
/// run is all there is.
///
/// ```
/// use tower_fault::evidence::background_rate;
///
/// assert_eq!(background_rate(30, 100, 5), 25.0 / 95.0);
/// assert_eq!(background_rate(10, 10, 10), 0.0);
/// ```
#[must_use]
pub fn background_rate(failures: u64, calls: u64, run: u64) -> f64 {
    let others = calls.saturating_sub(run);
    if others == 0 {
        return 0.0;
    }
    failures.saturating_sub(run).min(others) as f64 / others as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wilson_matches_known_values() {
        let close = |a: f64, b: f64| (a - b).abs() < 0.005;
        assert!(close(wilson_lower_bound(20, 20, 2.0), 0.833));
        assert!(close(wilson_lower_bound(15, 20, 2.0), 0.527));
        assert!(close(wilson_lower_bound(60, 100, 2.0), 0.502));
        assert!(close(wilson_lower_bound(50, 100, 2.0), 0.404));
    }

    #[test]
    fn streaks_that_noise_makes_once_a_million_calls() {
        for (p, k) in [(0.2, 9), (0.25, 10), (0.3, 12), (0.4, 16), (0.5, 20)] {
            assert_eq!(required_streak(1, p), k, "p = {p}");
            assert!(p.powi(k as i32) < STREAK_NOISE_ODDS);
            assert!(p.powi(k as i32 - 1) >= STREAK_NOISE_ODDS);
        }
        assert_eq!(required_streak(4, f64::NAN), 4);
    }

    proptest! {
        #[test]
        fn the_bound_is_below_the_rate_and_grows_with_hits(hits in 0u64..1000, extra in 0u64..1000, z in 0.0f64..4.0) {
            let total = hits + extra;
            let bound = wilson_lower_bound(hits, total, z);
            prop_assert!((0.0..=1.0).contains(&bound));
            if total > 0 {
                prop_assert!(bound <= hits as f64 / total as f64 + 1e-12);
                if extra > 0 {
                    prop_assert!(wilson_lower_bound(hits + 1, total, z) >= bound);
                }
            }
        }

        #[test]
        fn a_noisier_background_needs_a_longer_run(a in 0.0f64..1.0, b in 0.0f64..1.0, min in 1u32..20) {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            prop_assert!(required_streak(min, lo) <= required_streak(min, hi));
            prop_assert!(required_streak(min, hi) >= min);
        }
    }
}
