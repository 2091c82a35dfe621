//! Sliding windows of call outcomes: a ring of the last N calls, or buckets over the last D.
//!
//! Both are lock-free and allocation-free after construction; a snapshot of the count window is
//! O(1), of the time window O(buckets), and neither grows with traffic.

mod count;
mod time;

pub(crate) use count::{CountWindow, MAX_SIZE as MAX_COUNT};
pub(crate) use time::{MAX_BUCKETS, TimeWindow};

/// An outcome as the window stores it: bit 0 a call, bit 1 a failure, bit 2 a slow call.
pub(crate) type Sample = u8;

pub(crate) const CALL: Sample = 0b001;
pub(crate) const FAILURE: Sample = 0b010;
pub(crate) const SLOW: Sample = 0b100;

/// What a window holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCounts {
    /// Calls recorded (ignored outcomes are not recorded).
    pub calls: u64,
    /// Of which failures.
    pub failures: u64,
    /// Of which slow calls (successful or not).
    pub slow: u64,
}

impl WindowCounts {
    /// `failures / calls` (0 when empty).
    #[must_use]
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// `slow / calls` (0 when empty).
    #[must_use]
    pub fn slow_call_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The breaker's window, whichever kind was configured.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// Records one sample; `now_nanos` is only read by the time window. `true` when the
    /// record changed what the window covers (a count window grew; a time window started a
    /// bucket, so older ones may have dropped out): a success can then have raised a rate.
    #[inline]
    pub(crate) fn record(&self, sample: Sample, now_nanos: u64) -> bool {
        match self {
            Window::Count(w) => w.record(sample),
            Window::Time(w) => w.record(sample, now_nanos),
        }
    }

    /// The counts, or `None` while concurrent updates leave them momentarily inconsistent.
    pub(crate) fn snapshot(&self, now_nanos: u64) -> Option<WindowCounts> {
        match self {
            Window::Count(w) => w.snapshot(),
            Window::Time(w) => Some(w.snapshot(now_nanos)),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}
