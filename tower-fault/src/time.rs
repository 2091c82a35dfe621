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
    // Only an `at` itself near the end of the clock's range can still overflow; stay at the
    // latest instant reachable rather than going back to `at`.
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}
