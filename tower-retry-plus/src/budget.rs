//! The retry budget.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::error::ConfigError;

/// Width of one bucket of the sliding window.
const BUCKET_MILLIS: u64 = 500;
const BUCKET: Duration = Duration::from_millis(BUCKET_MILLIS);
/// Number of buckets: the window is `BUCKET × BUCKETS` = 10 s.
const BUCKETS: usize = 20;

// One bucket is one `AtomicU64`: [epoch: 24 bits][retries: 20 bits][requests: 20 bits].
// Packing makes rotating a bucket and counting in it a single compare-and-swap, so a count is
// never lost to a concurrent rotation.
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << 24) - 1;
/// Requests are counted into the window in batches of this many (and at every retry decision),
/// so most deposits are one atomic add, without a clock read.
const DEPOSIT_BATCH: u64 = 16;

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * COUNT_BITS),
        (word >> COUNT_BITS) & COUNT_MAX,
        word & COUNT_MAX,
    )
}

fn pack(epoch: u64, retries: u64, requests: u64) -> u64 {
    ((epoch & EPOCH_MASK) << (2 * COUNT_BITS))
        | (retries.min(COUNT_MAX) << COUNT_BITS)
        | requests.min(COUNT_MAX)
}

/// Requests and retries counted in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Logical requests deposited in the window.
    pub requests: u64,
    /// Retries withdrawn in the window.
    pub retries: u64,
}

struct Inner {
    ratio: f64,
    floor: f64,
    start: Instant,
    buckets: [AtomicU64; BUCKETS],
    /// Requests deposited but not yet counted into a bucket.
    pending: AtomicU64,
    /// The newest epoch counted into (full width). Stamps are 24 bits and wrap every ~97 days:
    /// when the newest epoch moves on, buckets older than the window are cleared, so every
    /// bucket holds an epoch of the window ending at `latest`, or nothing; a sum at an epoch
    /// past that window sees nothing. A stamp can then never be mistaken for a newer epoch's.
    latest: AtomicU64,
    /// Serialises withdrawals so that check-then-count is exact; deposits never take it.
    withdraw: Mutex<()>,
}

/// A retry budget over a sliding 10-second window, shared by every clone.
///
/// A budget stops retry storms. When an upstream is down, every request fails and every client
/// would multiply its load by `max_attempts`; with a budget, retries are capped at
/// `ratio × requests + floor_per_sec × 10 s` over the last 10 seconds.
///
/// ```
/// use tower_retry_plus::RetryBudget;
///
/// let budget = RetryBudget::new(0.5, 0).unwrap();
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 3 retries would exceed 50% of 4 requests
/// ```
///
/// A retry is admitted only if `retries_in_window + 1 <= ratio × requests_in_window +
/// floor_per_sec × 10`, over the requests and retries counted in the window. The check is exact
/// at every ratio from 0 to 1 (at 0 only the floor admits retries; at 1 there is at most one
/// retry per request, plus the floor).
///
/// Depositing is one atomic add: requests are counted into the window in batches of 16, and
/// whenever a retry is asked for, so a retry decision sees every request deposited before it
/// (but one a concurrent deposit is counting at that instant, which only makes it stricter).
/// A request is counted in the window from the time its batch is (at high traffic, within
/// microseconds of its own time); at low traffic a request can thus stay in the window longer
/// than 10 s, but at most 15 requests at a time, which can admit at most `15 × ratio` retries
/// more than an exact window (the default floor alone admits 100). Withdrawing (only on the
/// retry path) takes a lock so concurrent retries cannot overdraw the budget. Each 500 ms
/// bucket counts up to about a million requests; beyond that it saturates, which only makes
/// the budget stricter.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.inner.ratio)
            .field(
                "floor_per_sec",
                &(self.inner.floor / self.window().as_secs_f64()),
            )
            .field("window", &self.snapshot())
            .finish()
    }
}

impl Default for RetryBudget {
    /// 20% of requests plus 10 retries per second (Finagle's and Linkerd's defaults).
    fn default() -> Self {
        Self::new(0.2, 10).expect("default budget is valid")
    }
}

impl RetryBudget {
    /// A budget admitting retries up to `ratio` of requests plus `floor_per_sec` per second.
    ///
    /// # Errors
    /// If `ratio` is NaN or outside `0.0..=1.0`.
    pub fn new(ratio: f64, floor_per_sec: u32) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(crate::error::config_error(format!(
                "retry budget ratio must be within 0.0..=1.0, got {ratio}"
            )));
        }
        let window = (BUCKET * BUCKETS as u32).as_secs_f64();
        Ok(Self {
            inner: Arc::new(Inner {
                ratio,
                floor: f64::from(floor_per_sec) * window,
                start: Instant::now(),
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                pending: AtomicU64::new(0),
                latest: AtomicU64::new(0),
                withdraw: Mutex::new(()),
            }),
        })
    }

    /// The length of the sliding window (10 s).
    #[must_use]
    pub fn window(&self) -> Duration {
        BUCKET * BUCKETS as u32
    }

    fn epoch(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.inner.start);
        // In u64 milliseconds: `Duration::as_millis` is a u128, and a u128 division is a
        // library call that costs as much as the clock read on every deposit.
        let millis = elapsed
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(elapsed.subsec_millis()));
        millis / BUCKET_MILLIS
    }

    /// Adds `retries` and `requests` to the bucket of `epoch`.
    fn count(&self, epoch: u64, retries_add: u64, requests_add: u64) {
        if self.inner.latest.fetch_max(epoch, Ordering::AcqRel) < epoch {
            // At most once per bucket width: clear what the window left behind.
            for slot in &self.inner.buckets {
                let word = slot.load(Ordering::Relaxed);
                let age = (epoch & EPOCH_MASK).wrapping_sub(unpack(word).0) & EPOCH_MASK;
                if word != 0 && age >= BUCKETS as u64 {
                    // Lost to a concurrent count: that one rotated the bucket itself.
                    let _ = slot.compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
        }
        let slot = &self.inner.buckets[(epoch % BUCKETS as u64) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (stamp, retries, requests) = unpack(current);
            let (retries, requests) = if stamp == epoch & EPOCH_MASK {
                (retries, requests)
            } else {
                (0, 0)
            };
            let next = pack(epoch, retries + retries_add, requests + requests_add);
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn sum(&self, epoch: u64) -> BudgetSnapshot {
        let mut snap = BudgetSnapshot {
            requests: 0,
            retries: 0,
        };
        if epoch >= self.inner.latest.load(Ordering::Acquire) + BUCKETS as u64 {
            return snap; // idle for longer than the window (see `Inner::latest`)
        }
        for slot in &self.inner.buckets {
            let (stamp, retries, requests) = unpack(slot.load(Ordering::Acquire));
            let age = (epoch & EPOCH_MASK).wrapping_sub(stamp) & EPOCH_MASK;
            if age < BUCKETS as u64 {
                snap.requests += requests;
                snap.retries += retries;
            }
        }
        snap
    }

    /// Counts the pending requests into the bucket of `epoch`.
    fn flush(&self, epoch: u64) {
        let pending = self.inner.pending.swap(0, Ordering::AcqRel);
        if pending > 0 {
            self.count(epoch, 0, pending);
        }
    }

    /// Records one logical request (the retry layer calls it once per request).
    pub fn deposit(&self) {
        // One relaxed add per request; the clock is read once per batch.
        let pending = self.inner.pending.fetch_add(1, Ordering::Relaxed) + 1;
        if pending >= DEPOSIT_BATCH {
            self.flush(self.epoch());
        }
    }

    /// Asks for one retry; `true` (and the retry is counted) if the budget admits it.
    pub fn try_withdraw(&self) -> bool {
        let _serialised = self
            .inner
            .withdraw
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let epoch = self.epoch();
        self.flush(epoch);
        let snap = self.sum(epoch);
        let allowed = self.inner.ratio * snap.requests as f64 + self.inner.floor;
        if (snap.retries + 1) as f64 <= allowed {
            self.count(epoch, 1, 0);
            true
        } else {
            false
        }
    }

    /// The requests and retries counted in the current window.
    #[must_use]
    pub fn snapshot(&self) -> BudgetSnapshot {
        let epoch = self.epoch();
        self.flush(epoch);
        self.sum(epoch)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rejects_bad_ratios() {
        for ratio in [f64::NAN, -0.1, 1.01, f64::INFINITY] {
            let err = RetryBudget::new(ratio, 10).unwrap_err();
            assert!(err.message().contains("ratio"), "{err}");
        }
    }

    #[test]
    fn ratio_zero_admits_only_the_floor() {
        let budget = RetryBudget::new(0.0, 0).unwrap();
        for _ in 0..1000 {
            budget.deposit();
        }
        assert!(!budget.try_withdraw());
        let budget = RetryBudget::new(0.0, 1).unwrap();
        let admitted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(admitted, 10); // 1/s over a 10 s window
    }

    #[test]
    fn ratio_one_admits_one_retry_per_request() {
        let budget = RetryBudget::new(1.0, 0).unwrap();
        for _ in 0..50 {
            budget.deposit();
        }
        let admitted = (0..200).filter(|_| budget.try_withdraw()).count();
        assert_eq!(admitted, 50);
        assert_eq!(
            budget.snapshot(),
            BudgetSnapshot {
                requests: 50,
                retries: 50
            }
        );
    }

    /// Bucket stamps are 24 bits (~97 days of 500 ms epochs): a bucket last written exactly
    /// one wrap ago is not counted again, whether the budget was idle all that time or not.
    #[tokio::test(start_paused = true)]
    async fn bucket_stamps_that_wrapped_are_not_counted_again() {
        let wrap = BUCKET * (1 << 24);
        let budget = RetryBudget::new(0.5, 0).unwrap();
        for _ in 0..DEPOSIT_BATCH {
            budget.deposit();
        }
        assert!(budget.try_withdraw());
        assert_eq!(
            budget.snapshot(),
            BudgetSnapshot {
                requests: 16,
                retries: 1
            }
        );
        // Idle for one wrap.
        tokio::time::advance(wrap).await;
        assert_eq!(
            budget.snapshot(),
            BudgetSnapshot {
                requests: 0,
                retries: 0
            }
        );
        // Busy at another bucket meanwhile, then back at the aliasing epoch.
        let budget = RetryBudget::new(0.5, 0).unwrap();
        for _ in 0..DEPOSIT_BATCH {
            budget.deposit();
        }
        tokio::time::advance(wrap - 3 * BUCKET).await;
        for _ in 0..DEPOSIT_BATCH {
            budget.deposit();
        }
        tokio::time::advance(3 * BUCKET).await;
        assert_eq!(budget.snapshot().requests, 16, "only the recent batch");
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let budget = RetryBudget::new(0.5, 0).unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.snapshot().requests, 10);
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(budget.snapshot().requests, 14);
        tokio::time::advance(Duration::from_millis(5_600)).await;
        // the first 10 requests left the window; the 4 later ones remain
        assert_eq!(budget.snapshot().requests, 4);
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            budget.snapshot(),
            BudgetSnapshot {
                requests: 0,
                retries: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_counted_in_batches() {
        let budget = RetryBudget::new(1.0, 0).unwrap();
        // Two full batches are counted at the time they fill, and leave with it.
        for _ in 0..2 * DEPOSIT_BATCH {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(budget.snapshot().requests, 0);
        // A partial batch is counted when the window is next read: late, by at most
        // `DEPOSIT_BATCH - 1` requests (documented on the type).
        for _ in 0..DEPOSIT_BATCH - 1 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(budget.snapshot().requests, DEPOSIT_BATCH - 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(budget.snapshot().requests, 0);
    }

    #[test]
    fn concurrent_deposits_are_all_counted() {
        let budget = RetryBudget::new(0.5, 0).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..10_001).for_each(|_| budget.deposit()));
            }
        });
        assert_eq!(budget.snapshot().requests, 40_004);
    }

    #[tokio::test(start_paused = true)]
    async fn long_runs_keep_sliding() {
        let budget = RetryBudget::new(0.2, 0).unwrap();
        for i in 0..100_000u32 {
            budget.deposit();
            if i % 100 == 0 {
                tokio::time::advance(Duration::from_millis(50)).await;
            }
        }
        // 1000 advances of 50 ms: 50 s passed; only the last 10 s (≈20k requests) count
        let snap = budget.snapshot();
        assert!((19_000..=21_000).contains(&snap.requests), "{snap:?}");
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let budget = RetryBudget::new(0.3, 0).unwrap();
        for _ in 0..1000 {
            budget.deposit();
        }
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..500).filter(|_| budget.try_withdraw()).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 300);
    }

    proptest! {
        #[test]
        fn admitted_retries_never_exceed_the_formula(
            ratio in 0.0f64..=1.0,
            floor in 0u32..5,
            requests in 0u64..500,
        ) {
            let budget = RetryBudget::new(ratio, floor).unwrap();
            for _ in 0..requests {
                budget.deposit();
            }
            let admitted = (0..2_000).filter(|_| budget.try_withdraw()).count() as f64;
            let bound = ratio * requests as f64 + f64::from(floor) * 10.0;
            prop_assert!(admitted <= bound);
            prop_assert!(admitted > bound - 1.0);
        }
    }
}
