//! One count over a sliding window of fixed buckets, lock-free.

use std::sync::atomic::{AtomicU64, Ordering};

/// Number of buckets of a window.
pub(super) const BUCKETS: u64 = 20;

// One bucket is one `AtomicU64`: [stamp: 24 bits][count: 40 bits]. Packing makes rotating a
// bucket and counting in it a single compare-and-swap, so a count is never lost to a concurrent
// rotation.
const COUNT_BITS: u32 = 40;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const STAMP_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

fn unpack(word: u64) -> (u64, u64) {
    (word >> COUNT_BITS, word & COUNT_MAX)
}

fn pack(epoch: u64, count: u64) -> u64 {
    ((epoch & STAMP_MASK) << COUNT_BITS) | count.min(COUNT_MAX)
}

/// The epoch of the window ending at `epoch` that bucket `slot` holds. Before the first full
/// window it may be "negative" (wrapped): no bucket holds such a stamp while `epoch` is that
/// young, so nothing matches it.
fn expected(slot: u64, epoch: u64) -> u64 {
    epoch.wrapping_sub((epoch + BUCKETS - slot) % BUCKETS)
}

/// A count per epoch over the last [`BUCKETS`] epochs (an epoch is a bucket's width of time).
///
/// Epochs are counted in full width by the caller; a bucket keeps only the low 24 bits of its
/// epoch as a stamp. A bucket is read only if its stamp is exactly the epoch its slot stands
/// for in the window being read, and buckets that fall out of the window are cleared whenever
/// the newest epoch moves on (all of them when it jumps past a whole window), so the buckets
/// hold epochs within one window of [`latest`](Self::latest), or nothing: a stamp that wrapped
/// (every ~97 days of 500 ms epochs) is never taken for a current one.
///
/// A count saturates at 2⁴⁰ per bucket.
pub(super) struct Window {
    buckets: [AtomicU64; BUCKETS as usize],
    /// The newest epoch counted into (full width); published after the buckets it left behind
    /// were cleared, so a reader that sees an older value knows the buckets may be stale.
    latest: AtomicU64,
}

impl Window {
    pub(super) fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latest: AtomicU64::new(0),
        }
    }

    /// Adds `n` to the bucket of `epoch`.
    pub(super) fn add(&self, epoch: u64, n: u64) {
        let latest = self.latest.load(Ordering::Acquire);
        if epoch > latest {
            // At most once per epoch in practice (racing writers of a new epoch may each do it).
            self.clear_behind(latest, epoch);
            self.latest.fetch_max(epoch, Ordering::AcqRel);
        }
        let slot = &self.buckets[(epoch % BUCKETS) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (stamp, count) = unpack(current);
            let base = if stamp == epoch & STAMP_MASK {
                count
            } else {
                0
            };
            let next = pack(epoch, base.saturating_add(n));
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Clears the buckets the window ending at `epoch` no longer holds, `latest` being the
    /// newest epoch counted into so far.
    fn clear_behind(&self, latest: u64, epoch: u64) {
        // A jump past a whole window: every bucket is older than the window (a racing writer's
        // fresh count may be cleared with them, which only undercounts). Clearing all of them,
        // rather than judging their stamps, is what makes a wrapped stamp harmless.
        let jumped = epoch - latest >= BUCKETS;
        for (slot, bucket) in (0..BUCKETS).zip(&self.buckets) {
            let word = bucket.load(Ordering::Relaxed);
            if word == 0 {
                continue;
            }
            let (stamp, _) = unpack(word);
            let in_window = expected(slot, epoch);
            // Kept: this window's epoch for the slot, or the next one (a concurrent writer a
            // little ahead of this one).
            let keep = !jumped
                && (stamp == in_window & STAMP_MASK || stamp == (in_window + BUCKETS) & STAMP_MASK);
            if !keep {
                // Lost to a concurrent count: that one rotated the bucket itself.
                let _ = bucket.compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    /// The sum of the counts of the window ending at `epoch`.
    pub(super) fn sum(&self, epoch: u64) -> u64 {
        if epoch >= self.latest.load(Ordering::Acquire).saturating_add(BUCKETS) {
            return 0; // nothing counted within the window (see `latest`)
        }
        (0..BUCKETS)
            .zip(&self.buckets)
            .map(|(slot, bucket)| {
                let (stamp, count) = unpack(bucket.load(Ordering::Acquire));
                if stamp == expected(slot, epoch) & STAMP_MASK {
                    count
                } else {
                    0
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRAP: u64 = STAMP_MASK + 1;

    #[test]
    fn counts_slide_out_of_the_window() {
        let w = Window::new();
        w.add(0, 5);
        w.add(10, 3);
        assert_eq!(w.sum(10), 8);
        assert_eq!(w.sum(19), 8);
        assert_eq!(w.sum(20), 3, "epoch 0 left the window");
        assert_eq!(w.sum(29), 3);
        assert_eq!(w.sum(30), 0);
    }

    #[test]
    fn a_rotated_bucket_starts_from_zero() {
        let w = Window::new();
        w.add(3, 7);
        w.add(23, 1); // the same slot, one window later
        assert_eq!(w.sum(23), 1);
    }

    /// A bucket whose stamp wrapped is never counted again, whether the window was idle all
    /// that time (a jump: everything cleared) or busy on other slots.
    #[test]
    fn wrapped_stamps_are_not_counted_again() {
        // Idle for exactly one wrap, then counted into again.
        let w = Window::new();
        w.add(0, 16);
        w.add(WRAP, 1);
        assert_eq!(w.sum(WRAP), 1);
        // Idle for five wraps: the same slot and the same stamp.
        let w = Window::new();
        w.add(0, 16);
        w.add(5 * WRAP, 1);
        assert_eq!(w.sum(5 * WRAP), 1);
        // Steps shorter than the window that never write a stale bucket's slot again (every
        // 18 epochs from 19: only odd slots are written) still clear it, so no later epoch can
        // alias it.
        let w = Window::new();
        w.add(2, 16);
        for e in (19..=199).step_by(18) {
            w.add(e, 1);
        }
        assert_eq!(w.buckets[2].load(Ordering::Relaxed), 0);
        assert_eq!(w.sum(199), 2, "epochs 181 and 199");
    }

    #[test]
    fn a_reader_behind_the_newest_epoch_sees_its_own_window() {
        let w = Window::new();
        w.add(5, 2);
        w.add(6, 3);
        assert_eq!(w.sum(5), 2, "epoch 6 is not part of the window ending at 5");
        assert_eq!(w.sum(6), 5);
    }

    #[test]
    fn concurrent_adds_are_all_counted() {
        let w = Window::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..10_000).for_each(|i| w.add(100 + i / 1000, 1)));
            }
        });
        assert_eq!(w.sum(109), 40_000);
    }
}
