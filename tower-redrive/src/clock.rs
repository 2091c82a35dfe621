//! Wall-clock time, injectable so that a days-long schedule can be tested in milliseconds.
//!
//! Queue entries are persisted with wall-clock timestamps ([`Timestamp`], milliseconds since the
//! UNIX epoch) because they outlive the process. Every component reads the time through a
//! [`Clock`]: [`SystemClock`] in production, [`TokioClock`] (wall time that follows tokio's
//! paused/advanced clock) or [`ManualClock`] in tests.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A point in wall-clock time: milliseconds since the UNIX epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The UNIX epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the UNIX epoch.
    #[must_use]
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the UNIX epoch.
    #[must_use]
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Converts a [`SystemTime`] (times before the epoch clamp to the epoch).
    #[must_use]
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(millis)
    }

    /// Converts to a [`SystemTime`].
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
    }

    /// This timestamp plus a duration (saturating).
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        let millis = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// This timestamp minus a duration (saturating).
    #[must_use]
    pub fn minus(self, d: Duration) -> Self {
        let millis = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    /// How long after `earlier` this timestamp is (zero if it is not after it).
    #[must_use]
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// The first instant `httpdate` cannot format (it panics from year 10000 on).
const YEAR_10000_MILLIS: i64 = 253_402_300_800_000;

impl fmt::Display for Timestamp {
    /// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`); a time outside what an HTTP date can
    /// express (before 1970, from year 10000 on — a corrupt row, say) as raw milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (0..YEAR_10000_MILLIS).contains(&self.0) {
            f.pad(&httpdate::fmt_http_date(self.to_system_time()))
        } else {
            f.pad(&format!("{} ms since the UNIX epoch", self.0))
        }
    }
}

/// A source of wall-clock time.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock ([`SystemTime::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// Wall-clock time that advances with tokio's clock.
///
/// Anchored at a wall-clock time when created, it adds the time elapsed on
/// [`tokio::time::Instant`] since then — so under `#[tokio::test(start_paused = true)]` a
/// worker's `sleep` of five days moves this clock five days without real waiting.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Anchored at the current system time. Must be called within a tokio runtime if the
    /// runtime's clock is paused.
    #[must_use]
    pub fn new() -> Self {
        Self::starting_at(SystemClock.now())
    }

    /// Anchored at a chosen wall-clock time.
    #[must_use]
    pub fn starting_at(anchor: Timestamp) -> Self {
        Self {
            anchor,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.anchor.plus(self.start.elapsed())
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock showing `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(start.as_millis())),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let millis = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, at: Timestamp) {
        self.millis.store(at.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.plus(Duration::from_secs(1)).as_millis(), 2_000);
        assert_eq!(t.minus(Duration::from_secs(2)).as_millis(), -1_000);
        assert_eq!(t.since(t.plus(Duration::from_secs(5))), Duration::ZERO);
        assert_eq!(
            t.plus(Duration::from_secs(5)).since(t),
            Duration::from_secs(5)
        );
        assert_eq!(
            Timestamp::from_millis(i64::MAX)
                .plus(Duration::from_secs(1))
                .as_millis(),
            i64::MAX
        );
    }

    #[test]
    fn display_never_panics_on_out_of_range_times() {
        assert_eq!(
            Timestamp::from_millis(784_111_777_000).to_string(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            Timestamp::from_millis(i64::MAX).to_string(),
            format!("{} ms since the UNIX epoch", i64::MAX)
        );
        assert_eq!(
            Timestamp::from_millis(-5).to_string(),
            "-5 ms since the UNIX epoch"
        );
        assert!(
            Timestamp::from_millis(YEAR_10000_MILLIS - 1)
                .to_string()
                .contains("9999")
        );
    }

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let clock = ManualClock::new(Timestamp::from_millis(10));
        let other = clock.clone();
        clock.advance(Duration::from_millis(5));
        assert_eq!(other.now().as_millis(), 15);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(Timestamp::from_millis(0));
        tokio::time::sleep(Duration::from_secs(3 * 86_400)).await;
        assert_eq!(clock.now().as_millis(), 3 * 86_400 * 1_000);
    }
}
