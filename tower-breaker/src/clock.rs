//! Where a breaker reads the time: the OS's coarse monotonic clock by default, or tokio's.

use std::time::Duration;

/// The clock a breaker reads: for its time window's buckets, slow calls, open periods,
/// `Retry-After` hints and (keyed breakers) idle keys.
///
/// A time window reads the clock on every call, so the clock is on the hot path:
///
/// * [`Clock::Coarse`] (the default) reads the kernel's tick, `CLOCK_MONOTONIC_COARSE` on
///   Linux (through [`coarsetime`]; the tick-count clocks of macOS and Windows elsewhere). It
///   costs a few nanoseconds and no system call, but moves in steps of one tick: 1–4 ms on
///   Linux (`clock_getres(CLOCK_MONOTONIC_COARSE)`), ~1 ms on macOS, ~16 ms on Windows. A
///   reading is the time of the last tick, never ahead of the real time and at most a tick
///   behind it. What the rules keep at that precision: a call made within a tick after a
///   bucket boundary is counted in the bucket before (buckets are a second or more: in a time
///   window of 10 s, with 1 s buckets, at most 0.4 % of the calls, which then age out up to a
///   tick early); an open period ends within a tick of its length; a slow call is measured to
///   within a tick, so `build()` refuses a `slow_calls` duration shorter than
///   [`MIN_COARSE_SLOW_CALL`](crate::MIN_COARSE_SLOW_CALL) (50 ms) with this clock. It does
///   **not** follow `tokio::time::pause`/`advance`.
/// * [`Clock::Tokio`] reads tokio's clock (`tokio::time::Instant`): exact, and it follows a
///   paused clock, so it is the one for tests that pause time. Without a paused clock it is
///   `std::time::Instant::now()` (`CLOCK_MONOTONIC`: ~20 ns on bare metal, ~40 ns on the
///   virtual machine the benchmarks ran on, where the time window then costs ~×1.4 of the
///   count window).
///
/// A count window without a slow-call rule reads no clock on a call whichever is chosen.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::{Breaker, Clock, Window};
///
/// // In a test that drives time with `tokio::time::pause` / `advance`:
/// let breaker = Breaker::builder()
///     .window(Window::time(Duration::from_secs(10)))
///     .clock(Clock::Tokio)
///     .build()
///     .unwrap();
/// # let _ = breaker;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Clock {
    /// The OS's coarse monotonic clock (the kernel's tick): a few nanoseconds per read, one
    /// tick of precision; does not follow tokio's paused clock.
    #[default]
    Coarse,
    /// tokio's clock: exact, follows `tokio::time::pause`; one `CLOCK_MONOTONIC` read per
    /// reading.
    Tokio,
}

/// A started clock: nanoseconds since it was started, read from the chosen source.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timebase {
    Coarse(coarsetime::Instant),
    Tokio(tokio::time::Instant),
}

impl Timebase {
    /// Starts `clock` now.
    pub(crate) fn start(clock: Clock) -> Self {
        match clock {
            // Not `coarsetime::Instant::now()`: that also stores the reading in a global the
            // crate's `recent()` reads, a write to one shared cache line per call.
            Clock::Coarse => Self::Coarse(coarsetime::Instant::now_without_cache_update()),
            Clock::Tokio => Self::Tokio(tokio::time::Instant::now()),
        }
    }

    /// Nanoseconds since the start (saturating; never goes back).
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        match *self {
            Self::Coarse(start) => coarsetime::Instant::now_without_cache_update()
                .duration_since(start)
                .as_nanos(),
            Self::Tokio(start) => {
                nanos(tokio::time::Instant::now().saturating_duration_since(start))
            }
        }
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_moves_with_real_time_within_a_tick() {
        let base = Timebase::start(Clock::Coarse);
        let before = base.now_nanos();
        std::thread::sleep(Duration::from_millis(50));
        let after = base.now_nanos();
        let moved = Duration::from_nanos(after - before);
        // One tick of slack each side (≤ 4 ms on Linux, ~16 ms on Windows).
        assert!(
            moved >= Duration::from_millis(30) && moved <= Duration::from_millis(500),
            "{moved:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_a_paused_clock() {
        let base = Timebase::start(Clock::Tokio);
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(base.now_nanos(), 7_000_000_000);
    }
}
