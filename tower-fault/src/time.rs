//! Saturating time arithmetic for layers whose settings may say `Duration::MAX` to mean
//! "forever" (a deadline, a TTL, an ejection, a wait).

use std::time::Duration;

use tokio::time::Instant;

/// How far [`saturating_after`] goes: about 30 years, as far as tokio's own `sleep` goes.
pub const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `at + d`, capped at [`FAR_FUTURE`] after `at` instead of overflowing (`Instant + Duration`
/// panics on overflow).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_fault::time::{FAR_FUTURE, saturating_after};
///
/// let now = Instant::now();
/// assert_eq!(saturating_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// assert_eq!(saturating_after(now, Duration::MAX), now + FAR_FUTURE);
/// ```
#[must_use]
pub fn saturating_after(at: Instant, d: Duration) -> Instant {
    let d = d.min(FAR_FUTURE);
    if let Some(later) = at.checked_add(d) {
        return later;
    }
    // Only an `at` itself near the end of the clock's range gets here: go as far as the clock
    // allows (steps halved until they fit, a few dozen at most) rather than back to `at`.
    let mut reached = at;
    let mut step = d;
    while !step.is_zero() {
        match reached.checked_add(step) {
            Some(later) => reached = later,
            None => step /= 2,
        }
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Near the end of the clock's range, "forever" is the latest instant the clock reaches,
    /// not `at` itself (which would turn a deadline of forever into "now").
    #[test]
    fn near_the_end_of_the_clock_it_goes_as_far_as_the_clock_does() {
        // The last instant the clock reaches, found step by step, then ten seconds before it.
        let mut end = Instant::now();
        let mut step = Duration::from_secs(1 << 40);
        while !step.is_zero() {
            match end.checked_add(step) {
                Some(later) => end = later,
                None => step /= 2,
            }
        }
        let late = end - Duration::from_secs(10);
        assert_eq!(
            saturating_after(late, Duration::MAX),
            end,
            "went back to `at`"
        );
        assert_eq!(
            saturating_after(late, Duration::from_secs(4)),
            late + Duration::from_secs(4)
        );
    }
}
