//! A fixed ring of buckets over the last D, keyed by epoch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{CALL, FAILURE, SLOW, Sample, WindowCounts};

/// The largest number of buckets (tags must stay unambiguous).
pub(crate) const MAX_BUCKETS: u32 = 1000;

const FIELD: u32 = 18;
const MASK: u64 = (1 << FIELD) - 1;
const TAG_SHIFT: u32 = 3 * FIELD;
/// Epochs are tagged modulo this (> `MAX_BUCKETS`, so the epochs of one window have distinct
/// tags). A power of two: the tag of the newest epoch is computed on every record, and a mask is
/// cheaper than a remainder. An empty bucket is the word 0 (a record always counts a call), so
/// tag 0 needs no reserving.
const TAG_MODULUS: u64 = 1 << 10;

const fn packed(sample: Sample) -> u64 {
    (sample & CALL) as u64
        | ((((sample & FAILURE) >> 1) as u64) << FIELD)
        | ((((sample & SLOW) >> 2) as u64) << (2 * FIELD))
}

const fn tag(epoch: u64) -> u64 {
    epoch % TAG_MODULUS
}

/// Bits of [`TimeWindow::latest`] holding the newest epoch's bucket index (`MAX_BUCKETS` < 2^10).
const INDEX_BITS: u32 = 10;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// A record takes the `fetch_add` fast path while a bucket's call count is below
/// `MASK - HEADROOM`; at most one add per thread can be in flight past that check, so no field
/// can carry into the next below the saturation the CAS path applies exactly.
const HEADROOM: u64 = 1 << 16;

/// `buckets` buckets of `width` nanoseconds each; bucket `epoch % buckets` holds epoch `epoch`.
///
/// Each bucket is one word: a 10-bit epoch tag and three 18-bit counters (up to 262,143 calls
/// per bucket; beyond that a bucket stops counting, which keeps its rates). A record is one
/// atomic read-modify-write on one word (a `fetch_add` when the bucket already holds the epoch,
/// else a CAS that both resets a stale bucket and counts the call), so rotation needs no lock.
/// When the newest epoch advances, buckets that no longer belong to the window are cleared, so
/// a tag can never be mistaken for a newer epoch's after a long idle period. Memory and the cost
/// of a record are independent of traffic; a snapshot reads every bucket once.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    width: u64,
    /// `newest epoch << INDEX_BITS | its bucket index`: a record in the newest epoch (nearly
    /// every record) finds its bucket with a multiply and a compare instead of two 64-bit
    /// divisions.
    latest: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl TimeWindow {
    pub(crate) fn new(width_nanos: u64, buckets: u32) -> Self {
        debug_assert!(u64::from(buckets) <= INDEX_MASK + 1);
        Self {
            width: width_nanos.max(1),
            latest: AtomicU64::new(0),
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn cursor(&self, epoch: u64) -> u64 {
        (epoch << INDEX_BITS) | (epoch % self.len())
    }

    /// Whether bucket `index` holding `tag_bits` belongs to the window ending at `epoch`.
    fn valid(&self, index: u64, tag_bits: u64, epoch: u64) -> bool {
        let n = self.len();
        let back = (epoch % n + n - index) % n;
        // An empty bucket (word 0) may pass as valid: it adds nothing.
        back <= epoch && tag(epoch - back) == tag_bits
    }

    /// Records `sample`; `true` if it moved the window on to a newer epoch (older buckets
    /// dropped out, which can raise a rate) or started a bucket; `false` in the steady case.
    #[inline]
    pub(crate) fn record(&self, sample: Sample, now_nanos: u64) -> bool {
        let cursor = self.latest.load(Relaxed);
        let latest = cursor >> INDEX_BITS;
        // Within the newest epoch: `now - latest * width < width` (wraps to a large value when
        // `now` is older, which takes the slow path too).
        let (epoch, index) = if now_nanos.wrapping_sub(latest * self.width) < self.width {
            (latest, cursor & INDEX_MASK)
        } else {
            match self.locate(cursor, now_nanos) {
                Some(found) => found,
                None => return false, // older than the whole window
            }
        };
        let slot = &self.buckets[index as usize];
        let tag = tag(epoch);
        let add = packed(sample);
        let mut current = slot.load(Relaxed);
        if current >> TAG_SHIFT == tag && current & MASK < MASK - HEADROOM {
            // The common case: no retry loop when callers on several threads share a bucket.
            slot.fetch_add(add, Relaxed);
            return false;
        }
        loop {
            let (next, started) = if current >> TAG_SHIFT == tag {
                if current & MASK == MASK {
                    return false;
                }
                (current + add, false)
            } else {
                ((tag << TAG_SHIFT) | add, true)
            };
            match slot.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => return started,
                Err(actual) => current = actual,
            }
        }
    }

    /// The epoch and bucket of `now_nanos` when it is not the newest epoch of `cursor`:
    /// advances the window to it when it is newer, `None` when it is older than the window.
    #[cold]
    fn locate(&self, cursor: u64, now_nanos: u64) -> Option<(u64, u64)> {
        let latest = cursor >> INDEX_BITS;
        let epoch = now_nanos / self.width;
        if epoch > latest {
            self.advance(cursor, epoch);
        } else if epoch + self.len() <= latest {
            return None;
        }
        Some((epoch, epoch % self.len()))
    }

    /// Moves the newest epoch from `cursor`'s to `epoch` and clears the buckets the epochs in
    /// between are about to reuse. This keeps the invariant that every bucket holds an epoch of
    /// the last `buckets` epochs (or nothing), which is what makes the short tags unambiguous.
    #[cold]
    fn advance(&self, cursor: u64, epoch: u64) {
        if self
            .latest
            .compare_exchange(cursor, self.cursor(epoch), Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        let latest = cursor >> INDEX_BITS;
        let n = self.len();
        if epoch - latest >= n {
            // Everything is older than the window. A sample of `epoch` recorded concurrently
            // in the instant between the CAS above and this sweep may be lost.
            for bucket in &*self.buckets {
                bucket.store(0, Relaxed);
            }
            return;
        }
        for entering in latest + 1..=epoch {
            let bucket = &self.buckets[(entering % n) as usize];
            let word = bucket.load(Relaxed);
            // The bucket holds `entering - n` (stale) or, already, `entering` (keep it).
            if word != 0 && word >> TAG_SHIFT != tag(entering) {
                let _ = bucket.compare_exchange(word, 0, Relaxed, Relaxed);
            }
        }
    }

    pub(crate) fn snapshot(&self, now_nanos: u64) -> WindowCounts {
        let epoch = now_nanos / self.width;
        let mut counts = WindowCounts::default();
        // Every bucket holds one of the `len` epochs up to the newest recorded one (records
        // keep that true; reads clear nothing). When even that one is out of the window, so is
        // everything: the short tags alone would take some long-past epochs for current ones.
        let latest = self.latest.load(Relaxed) >> INDEX_BITS;
        if epoch >= latest.saturating_add(self.len()) {
            return counts;
        }
        for (index, bucket) in self.buckets.iter().enumerate() {
            let word = bucket.load(Relaxed);
            if self.valid(index as u64, word >> TAG_SHIFT, epoch) {
                counts.calls += word & MASK;
                counts.failures += (word >> FIELD) & MASK;
                counts.slow += (word >> (2 * FIELD)) & MASK;
            }
        }
        counts
    }

    pub(crate) fn clear(&self) {
        for bucket in &*self.buckets {
            bucket.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// After a long idle period with no record, a read sees nothing: a bucket's 10-bit tag
    /// matches again every lcm(buckets, 1024) epochs.
    #[test]
    fn a_read_after_a_long_idle_period_sees_nothing() {
        let w = TimeWindow::new(S, 10);
        w.record(CALL | FAILURE, 3 * S);
        assert_eq!(w.snapshot(3 * S).failures, 1);
        for epoch in [13, 100, 5119, 5120, 5123, 5129, 5130, 1 << 30] {
            assert_eq!(
                w.snapshot(epoch * S),
                WindowCounts::default(),
                "epoch {epoch}"
            );
        }
    }

    #[test]
    fn forgets_a_bucket_when_it_ages_out() {
        let w = TimeWindow::new(S, 10);
        w.record(CALL | FAILURE, S / 2);
        assert_eq!(w.snapshot(9 * S + S / 2).failures, 1);
        assert_eq!(w.snapshot(10 * S).failures, 0);
    }

    #[test]
    fn long_idle_never_resurrects_a_tag() {
        let w = TimeWindow::new(S, 10);
        w.record(CALL | FAILURE, 3 * S);
        // Same bucket and same tag, 10 * 1023 epochs later: cleared on the advance.
        let later = (3 + 10 * TAG_MODULUS) * S;
        assert_eq!(tag(3), tag(later / S));
        w.record(CALL, later);
        let counts = w.snapshot(later);
        assert_eq!((counts.calls, counts.failures), (1, 0));
    }

    #[test]
    fn records_land_in_the_right_bucket_across_epochs_and_late_readings() {
        let w = TimeWindow::new(S, 4);
        w.record(CALL, 0);
        w.record(CALL | FAILURE, S - 1); // last instant of epoch 0: the cached bucket
        w.record(CALL, S); // first instant of epoch 1: advances
        w.record(CALL | SLOW, S / 2); // a late reading of epoch 0, after the advance
        let c = w.snapshot(S);
        assert_eq!((c.calls, c.failures, c.slow), (4, 1, 1));
        // Epoch 0 leaves the window at epoch 4; epoch 1's call stays.
        let c = w.snapshot(4 * S);
        assert_eq!((c.calls, c.failures, c.slow), (1, 0, 0));
        // A reading older than the whole window is dropped.
        w.record(CALL | FAILURE, 9 * S);
        w.record(CALL | FAILURE, 5 * S);
        assert_eq!(w.snapshot(9 * S).failures, 1);
    }

    #[test]
    fn a_full_bucket_stops_counting() {
        let w = TimeWindow::new(S, 2);
        for _ in 0..=MASK + 5 {
            w.record(CALL, 0);
        }
        assert_eq!(w.snapshot(0).calls, MASK);
    }
}
