//! A true ring over the last N call outcomes with running totals.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use super::{CALL, FAILURE, SLOW, Sample, WindowCounts};

/// The largest count window (the totals are packed in 21-bit fields of one word).
pub(crate) const MAX_SIZE: u32 = 1_000_000;

const FIELD: u32 = 21;
const MASK: u64 = (1 << FIELD) - 1;

/// Keeps the hot head counter and the totals on separate cache lines from each other.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// The last `N` outcomes, one byte each, and their totals in one packed word.
///
/// Recording swaps the slot the head points at and adds `new - old` to the totals, so at any
/// quiescent moment the totals equal the sum of the slots exactly, however many calls went by —
/// the window keeps sliding after millions of calls. A success replacing a success (the steady
/// closed state) costs one `fetch_add` on the head and one load.
#[derive(Debug)]
pub(crate) struct CountWindow {
    head: Padded,
    totals: Padded,
    slots: Box<[AtomicU8]>,
}

const fn packed(sample: Sample) -> u64 {
    (sample & CALL) as u64
        | ((((sample & FAILURE) >> 1) as u64) << FIELD)
        | ((((sample & SLOW) >> 2) as u64) << (2 * FIELD))
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            head: Padded::default(),
            totals: Padded::default(),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, sample: Sample) {
        let index = self.head.0.fetch_add(1, Relaxed) % self.slots.len() as u64;
        let slot = &self.slots[index as usize];
        // Not writing an equal value is linearisable as a swap that returned that value.
        if slot.load(Relaxed) == sample {
            return;
        }
        let old = slot.swap(sample, Relaxed);
        if old != sample {
            self.totals
                .0
                .fetch_add(packed(sample).wrapping_sub(packed(old)), Relaxed);
        }
    }

    /// The totals, or `None` if a concurrent eviction was applied before its insertion (a field
    /// is then momentarily negative); the next record sees them consistent again.
    pub(crate) fn snapshot(&self) -> Option<WindowCounts> {
        let word = self.totals.0.load(Relaxed);
        let counts = WindowCounts {
            calls: word & MASK,
            failures: (word >> FIELD) & MASK,
            slow: (word >> (2 * FIELD)) & MASK,
        };
        let size = self.slots.len() as u64;
        (counts.calls <= size && counts.failures <= counts.calls && counts.slow <= counts.calls)
            .then_some(counts)
    }

    pub(crate) fn clear(&self) {
        for slot in &*self.slots {
            let old = slot.swap(0, Relaxed);
            if old != 0 {
                self.totals.0.fetch_sub(packed(old), Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_over_exactly_n() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(CALL | FAILURE);
        }
        assert_eq!(w.snapshot().unwrap().failures, 4);
        w.record(CALL);
        w.record(CALL | SLOW);
        let c = w.snapshot().unwrap();
        assert_eq!((c.calls, c.failures, c.slow), (4, 2, 1));
        w.clear();
        assert_eq!(w.snapshot().unwrap(), WindowCounts::default());
    }
}
