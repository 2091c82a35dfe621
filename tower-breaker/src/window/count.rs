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
    /// `u64::MAX / len + 1`: turns `head % len` into two multiplications (see [`slot_index`]).
    ///
    /// [`slot_index`]: CountWindow::slot_index
    magic: u64,
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
            magic: (u64::MAX / u64::from(size.max(1))).wrapping_add(1),
        }
    }

    /// `head % len`. A division is the slowest instruction of a record, so while `head` fits
    /// in 32 bits (the first four billion calls) this is Lemire's direct remainder
    /// ("Faster Remainder by Direct Computation", 2019), exact for every 32-bit numerator and
    /// divisor: two multiplications, no division.
    #[inline]
    fn slot_index(&self, head: u64) -> usize {
        let len = self.slots.len() as u64;
        let index = match u32::try_from(head) {
            Ok(head) => {
                let low = self.magic.wrapping_mul(u64::from(head));
                ((u128::from(low) * u128::from(len)) >> 64) as u64
            }
            Err(_) => head % len,
        };
        index as usize
    }

    /// Records `sample`; `true` if it filled an empty slot (the window grew by one call).
    #[inline]
    pub(crate) fn record(&self, sample: Sample) -> bool {
        let index = self.slot_index(self.head.0.fetch_add(1, Relaxed));
        let slot = &self.slots[index];
        // Not writing an equal value is linearisable as a swap that returned that value.
        if slot.load(Relaxed) == sample {
            return false;
        }
        let old = slot.swap(sample, Relaxed);
        if old != sample {
            self.totals
                .0
                .fetch_add(packed(sample).wrapping_sub(packed(old)), Relaxed);
        }
        old == 0
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
            assert!(w.record(CALL | FAILURE), "fills an empty slot");
        }
        assert_eq!(w.snapshot().unwrap().failures, 4);
        assert!(!w.record(CALL), "replaces a failure");
        assert!(!w.record(CALL | SLOW));
        let c = w.snapshot().unwrap();
        assert_eq!((c.calls, c.failures, c.slow), (4, 2, 1));
        w.clear();
        assert_eq!(w.snapshot().unwrap(), WindowCounts::default());
    }

    #[test]
    fn slot_index_is_the_remainder() {
        for size in [1, 2, 3, 7, 100, 999, 1000, 65_537, MAX_SIZE] {
            let w = CountWindow::new(size);
            let len = u64::from(size);
            let heads = (0..3000)
                .chain([u64::from(u32::MAX) - 1, u64::from(u32::MAX)])
                .chain([1 << 32, (1 << 32) + 1, u64::MAX - 1, u64::MAX])
                .chain((0..64).map(|k| (len << 12).wrapping_mul(k) + k));
            for head in heads {
                assert_eq!(w.slot_index(head) as u64, head % len, "{head} % {size}");
            }
        }
    }
}
