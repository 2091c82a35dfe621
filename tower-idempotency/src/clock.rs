//! Saturating clock arithmetic, so `Duration::MAX` settings mean "forever" instead of a panic.

use std::time::Duration;

use tokio::time::Instant;

/// Where [`after`] saturates: about 30 years, as far as tokio's own `sleep` goes.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + d`, saturating at about 30 years from `now` instead of overflowing.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR_FUTURE))
        .unwrap_or_else(|| now + FAR_FUTURE)
}
