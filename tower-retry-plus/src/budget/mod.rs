//! The retry budget.

mod floor;
mod window;

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
use floor::Floor;
use window::{BUCKETS, Window};

/// Width of one bucket of the sliding window.
const BUCKET_MILLIS: u64 = 500;
const BUCKET: Duration = Duration::from_millis(BUCKET_MILLIS);
/// Requests are counted into the window in batches of this many (and at every retry decision),
/// so most deposits are one atomic add, without a clock read.
const DEPOSIT_BATCH: u64 = 16;

/// The default ratio of retries to requests: Finagle's and Linkerd's.
pub(crate) const DEFAULT_RATIO: f64 = 0.2;
/// The default floor: Finagle's and Linkerd's 10 retries per second.
pub(crate) const DEFAULT_FLOOR_PER_SEC: u32 = 10;
/// The default credit of an answered retry: Google SRE's adaptive throttling uses K = 2, so
/// retries flow freely while at least half of them are answered, and in a total outage (none
/// answered) the budget falls back to its ratio and floor.
pub(crate) const DEFAULT_ANSWERED_CREDIT: f64 = 2.0;

/// Requests, retries and answered retries counted in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Logical requests deposited in the window.
    pub requests: u64,
    /// Retries withdrawn in the window.
    pub retries: u64,
    /// Retries answered in the window: their attempt ended in a success or a permanent
    /// failure, not a transient one.
    pub answered: u64,
}

struct Inner {
    ratio: f64,
    answered_credit: f64,
    start: Instant,
    requests: Window,
    /// Written only under `floor`'s lock, so check-then-count is exact.
    retries: Window,
    answered: Window,
    /// Requests deposited but not yet counted into a bucket.
    pending: AtomicU64,
    /// The floor's tokens; its lock also serialises withdrawals (deposits never take it).
    floor: Mutex<Floor>,
}

/// A retry budget over a sliding 10-second window, shared by every clone.
///
/// A budget stops retry storms. When an upstream is down, every request fails and every client
/// would multiply its load by `max_attempts`. A budget that caps retries at a share of requests
/// stops that, but spends itself just as fast when the upstream answers most requests and fails
/// some at random: there every retry has a good chance, and refusing it loses the request. So
/// the budget tells the two apart by what retries earn.
///
/// A retry is admitted if, over the requests, retries and *answered* retries counted in the
/// last 10 seconds,
///
/// ```text
/// retries + 1 <= ratio × requests + answered_credit × answered
/// ```
///
/// or else if the *floor* has a token left. An answered retry is one whose attempt ended in a
/// success or a permanent failure (anything but a transient failure or a local rejection).
///
/// * In a **partial failure** retries are answered, and with the default credit of 2 they flow
///   freely while at least half of them are answered (Google SRE's adaptive throttling, K = 2).
/// * In a **total outage** none is answered: retries are capped at `ratio` of requests (20% by
///   default) plus the floor.
/// * The **floor** is a rate: a token bucket holding one second's worth of `floor_per_sec`
///   (default 10), refilled at `floor_per_sec`, full at the start. It lets a client with little
///   traffic retry at all (20% of one request per second admits nothing), while a burst gets at
///   most `ratio` of its requests plus about one second of floor, and then the floor's rate.
///
/// ```
/// use tower_retry_plus::RetryBudget;
///
/// let budget = RetryBudget::builder().ratio(0.5).floor_per_sec(0).build().unwrap();
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 3 retries would exceed 50% of 4 requests
/// budget.record_answered(); // one of them was answered: it earns 2 more
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// ```
///
/// The check is exact at every ratio from 0 to 1 (at 0 only the floor and answered retries
/// admit retries; at 1 there is at most one retry per request, plus those).
///
/// Depositing is one atomic add: requests are counted into the window in batches of 16, and
/// whenever a retry is asked for, so a retry decision sees every request deposited before it
/// (but one a concurrent deposit is counting at that instant, which only makes it stricter).
/// A request is counted in the window from the time its batch is (at high traffic, within
/// microseconds of its own time); at low traffic a request can thus stay in the window longer
/// than 10 s, but at most 15 requests at a time, which can admit at most `15 × ratio` retries
/// more than an exact window. Withdrawing (only on the retry path) takes a lock so concurrent
/// retries cannot overdraw the budget; recording an answer is one atomic compare-and-swap and a
/// clock read, on the retry path only.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.inner.ratio)
            .field("answered_credit", &self.inner.answered_credit)
            .field("floor_per_sec", &self.lock_floor().per_sec())
            .field("window", &self.snapshot())
            .finish()
    }
}

impl Default for RetryBudget {
    /// 20% of requests, 2 retries per answered retry, and a floor of 10 retries per second (see
    /// [`RetryBudgetBuilder`] for why).
    fn default() -> Self {
        Self::builder().build().expect("default budget is valid")
    }
}

impl RetryBudget {
    /// A budget admitting retries up to `ratio` of requests plus `floor_per_sec` per second,
    /// with the default credit for answered retries (2).
    ///
    /// # Errors
    /// If `ratio` is NaN or outside `0.0..=1.0`.
    pub fn new(ratio: f64, floor_per_sec: u32) -> Result<Self, ConfigError> {
        Self::builder()
            .ratio(ratio)
            .floor_per_sec(floor_per_sec)
            .build()
    }

    /// A builder starting from the defaults (20%, credit 2, 10 per second).
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder::default()
    }

    /// The length of the sliding window (10 s).
    #[must_use]
    pub fn window(&self) -> Duration {
        BUCKET * BUCKETS as u32
    }

    fn lock_floor(&self) -> std::sync::MutexGuard<'_, Floor> {
        self.inner
            .floor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.inner.start);
        // In u64 milliseconds: `Duration::as_millis` is a u128, and a u128 division is a
        // library call that costs as much as the clock read on every deposit batch.
        let millis = elapsed
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(elapsed.subsec_millis()));
        millis / BUCKET_MILLIS
    }

    /// Counts the pending requests into the bucket of `epoch`.
    fn flush(&self, epoch: u64) {
        let pending = self.inner.pending.swap(0, Ordering::AcqRel);
        if pending > 0 {
            self.inner.requests.add(epoch, pending);
        }
    }

    fn sum(&self, epoch: u64) -> BudgetSnapshot {
        self.flush(epoch);
        BudgetSnapshot {
            requests: self.inner.requests.sum(epoch),
            retries: self.inner.retries.sum(epoch),
            answered: self.inner.answered.sum(epoch),
        }
    }

    /// Records one logical request (the retry layer calls it once per request).
    pub fn deposit(&self) {
        // One relaxed add per request; the clock is read once per batch.
        let pending = self.inner.pending.fetch_add(1, Ordering::Relaxed) + 1;
        if pending >= DEPOSIT_BATCH {
            self.flush(self.epoch(Instant::now()));
        }
    }

    /// Asks for one retry; `true` (and the retry is counted) if the budget admits it.
    pub fn try_withdraw(&self) -> bool {
        let mut floor = self.lock_floor();
        let now = Instant::now();
        let epoch = self.epoch(now);
        let snap = self.sum(epoch);
        let earned = self.inner.ratio * snap.requests as f64
            + self.inner.answered_credit * snap.answered as f64;
        // The floor is spent only when what was earned does not cover the retry.
        let admitted = (snap.retries + 1) as f64 <= earned || floor.try_take(now);
        if admitted {
            self.inner.retries.add(epoch, 1);
        }
        admitted
    }

    /// Records that a retry was answered: its attempt ended in a success or a permanent failure.
    /// The retry layer calls it for every retried attempt that did.
    pub fn record_answered(&self) {
        self.inner.answered.add(self.epoch(Instant::now()), 1);
    }

    /// The requests, retries and answered retries counted in the current window.
    #[must_use]
    pub fn snapshot(&self) -> BudgetSnapshot {
        self.sum(self.epoch(Instant::now()))
    }

    /// The floor's whole tokens left now: retries it would admit beyond what was earned.
    #[must_use]
    pub fn floor_available(&self) -> u64 {
        self.lock_floor().available(Instant::now())
    }
}

/// Builds a [`RetryBudget`]; [`build`](Self::build) checks the settings.
///
/// ```
/// use tower_retry_plus::RetryBudget;
///
/// let budget = RetryBudget::builder()
///     .ratio(0.1)
///     .answered_credit(2.0)
///     .floor_per_sec(5)
///     .build()
///     .expect("valid budget");
/// # let _ = budget;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryBudgetBuilder {
    ratio: f64,
    answered_credit: f64,
    floor_per_sec: u32,
}

impl Default for RetryBudgetBuilder {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            answered_credit: DEFAULT_ANSWERED_CREDIT,
            floor_per_sec: DEFAULT_FLOOR_PER_SEC,
        }
    }
}

impl RetryBudgetBuilder {
    /// Retries admitted per request (default 0.2, Finagle's and Linkerd's; within `0.0..=1.0`):
    /// what a total outage may add to the upstream's load.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries each answered retry earns (default 2, Google SRE's adaptive throttling K: retries
    /// flow freely while at least half of them are answered, and a total outage, where none
    /// is, falls back to the ratio and the floor). 0 makes the budget a plain ratio; it must be
    /// a finite number, at least 0.
    pub fn answered_credit(mut self, credit: f64) -> Self {
        self.answered_credit = credit;
        self
    }

    /// Retries per second admitted whatever the ratio (default 10, Finagle's and Linkerd's), as
    /// a token bucket of one second's worth: a client with little traffic can still retry,
    /// and a burst gets at most one second of it at once.
    pub fn floor_per_sec(mut self, floor_per_sec: u32) -> Self {
        self.floor_per_sec = floor_per_sec;
        self
    }

    /// Checks the settings and builds the budget.
    ///
    /// # Errors
    /// If the ratio is NaN or outside `0.0..=1.0`, or the answered credit is NaN, infinite or
    /// negative.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(crate::error::config_error(format!(
                "retry budget ratio must be within 0.0..=1.0, got {}",
                self.ratio
            )));
        }
        if !(self.answered_credit.is_finite() && self.answered_credit >= 0.0) {
            return Err(crate::error::config_error(format!(
                "retry budget answered_credit must be a finite number >= 0, got {}",
                self.answered_credit
            )));
        }
        let now = Instant::now();
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                ratio: self.ratio,
                answered_credit: self.answered_credit,
                start: now,
                requests: Window::new(),
                retries: Window::new(),
                answered: Window::new(),
                pending: AtomicU64::new(0),
                floor: Mutex::new(Floor::new(self.floor_per_sec, now)),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn budget(ratio: f64, floor_per_sec: u32) -> RetryBudget {
        RetryBudget::new(ratio, floor_per_sec).unwrap()
    }

    fn snap(requests: u64, retries: u64, answered: u64) -> BudgetSnapshot {
        BudgetSnapshot {
            requests,
            retries,
            answered,
        }
    }

    #[test]
    fn rejects_bad_settings() {
        for ratio in [f64::NAN, -0.1, 1.01, f64::INFINITY] {
            let err = RetryBudget::new(ratio, 10).unwrap_err();
            assert!(err.message().contains("ratio"), "{err}");
        }
        for credit in [f64::NAN, -1.0, f64::INFINITY] {
            let err = RetryBudget::builder()
                .answered_credit(credit)
                .build()
                .unwrap_err();
            assert!(err.message().contains("answered_credit"), "{err}");
        }
    }

    #[test]
    fn defaults() {
        let budget = RetryBudget::default();
        assert_eq!(budget.inner.ratio, DEFAULT_RATIO);
        assert_eq!(budget.inner.answered_credit, DEFAULT_ANSWERED_CREDIT);
        assert_eq!(budget.floor_available(), u64::from(DEFAULT_FLOOR_PER_SEC));
    }

    /// The floor is a rate: one second's worth at once, not the whole window's
    /// (`floor_per_sec × 10 s` spendable in a burst).
    #[tokio::test(start_paused = true)]
    async fn ratio_zero_admits_only_the_floor_as_a_rate() {
        let budget = budget(0.0, 0);
        for _ in 0..1000 {
            budget.deposit();
        }
        assert!(!budget.try_withdraw());
        let budget = self::budget(0.0, 2);
        let admitted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(admitted, 2, "one second of a 2/s floor");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        // Steady low traffic keeps its floor: 2 per second, second after second.
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 2);
        }
    }

    #[test]
    fn ratio_one_admits_one_retry_per_request() {
        let budget = budget(1.0, 0);
        for _ in 0..50 {
            budget.deposit();
        }
        let admitted = (0..200).filter(|_| budget.try_withdraw()).count();
        assert_eq!(admitted, 50);
        assert_eq!(budget.snapshot(), snap(50, 50, 0));
    }

    /// Answered retries earn retries: in a partial failure they flow, in a total outage the
    /// budget is its ratio.
    #[test]
    fn answered_retries_earn_retries() {
        let budget = budget(0.2, 0);
        for _ in 0..100 {
            budget.deposit();
        }
        // 20 retries from the ratio, none answered: the 21st is refused.
        assert_eq!((0..100).filter(|_| budget.try_withdraw()).count(), 20);
        // Half of them answered: 2 × 10 more.
        for _ in 0..10 {
            budget.record_answered();
        }
        assert_eq!((0..100).filter(|_| budget.try_withdraw()).count(), 20);
        assert_eq!(budget.snapshot(), snap(100, 40, 10));
        // Every retry answered at least half the time: never refused.
        let budget = self::budget(0.2, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        let mut admitted = 0;
        for i in 0..10_000 {
            if budget.try_withdraw() {
                admitted += 1;
                if i % 2 == 0 {
                    budget.record_answered();
                }
            }
        }
        assert_eq!(admitted, 10_000);
        // A credit of 0 is a plain ratio.
        let budget = RetryBudget::builder()
            .ratio(0.2)
            .answered_credit(0.0)
            .floor_per_sec(0)
            .build()
            .unwrap();
        for _ in 0..100 {
            budget.deposit();
        }
        for _ in 0..50 {
            budget.record_answered();
        }
        assert_eq!((0..100).filter(|_| budget.try_withdraw()).count(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_leave_with_the_window() {
        let budget = budget(0.0, 0);
        budget.record_answered();
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        budget.record_answered();
        assert_eq!(budget.snapshot(), snap(0, 0, 1));
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 2);
    }

    /// Stamps are 24 bits (~97 days of 500 ms epochs): a bucket last written exactly one wrap
    /// ago is not counted again, whether the budget was idle all that time or not.
    #[tokio::test(start_paused = true)]
    async fn bucket_stamps_that_wrapped_are_not_counted_again() {
        let wrap = BUCKET * (1 << 24);
        let budget = budget(0.5, 0);
        for _ in 0..DEPOSIT_BATCH {
            budget.deposit();
        }
        assert!(budget.try_withdraw());
        budget.record_answered();
        assert_eq!(budget.snapshot(), snap(16, 1, 1));
        // Idle for one wrap.
        tokio::time::advance(wrap).await;
        assert_eq!(budget.snapshot(), snap(0, 0, 0));
        // And counted into again.
        for _ in 0..DEPOSIT_BATCH {
            budget.deposit();
        }
        assert_eq!(budget.snapshot(), snap(16, 0, 0));
        // Busy at another bucket meanwhile, then back at the aliasing epoch.
        let budget = self::budget(0.5, 0);
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
        let budget = budget(0.5, 0);
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
        assert_eq!(budget.snapshot(), snap(0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_counted_in_batches() {
        let budget = budget(1.0, 0);
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
    fn concurrent_deposits_and_answers_are_all_counted() {
        let budget = budget(0.5, 0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..10_001 {
                        budget.deposit();
                        if i % 10 == 0 {
                            budget.record_answered();
                        }
                    }
                });
            }
        });
        assert_eq!(budget.snapshot(), snap(40_004, 0, 4 * 1001));
    }

    #[tokio::test(start_paused = true)]
    async fn long_runs_keep_sliding() {
        let budget = budget(0.2, 0);
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
        let budget = budget(0.3, 0);
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

    fn paused() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    proptest! {
        /// A burst of requests during a total outage (no retry answered) gets at most its ratio
        /// plus one second of floor, and the floor's rate after that — and no less when it
        /// asks for more.
        #[test]
        fn a_burst_gets_its_ratio_and_one_second_of_floor(
            ratio in 0.0f64..=1.0,
            floor in 0u32..50,
            requests in 0u64..2_000,
            steps in 1u32..20,
            step_ms in 0u64..450,
        ) {
            let (admitted, bound) = paused().block_on(async {
                let budget = budget(ratio, floor);
                for _ in 0..requests {
                    budget.deposit();
                }
                let start = Instant::now();
                let mut admitted = 0u64;
                let mut bound = 0.0;
                for _ in 0..steps {
                    let elapsed = start.elapsed().as_secs_f64();
                    bound = ratio * requests as f64 + f64::from(floor) * (1.0 + elapsed);
                    // Always ask for more than the bound allows.
                    let asks = (bound - admitted as f64).max(0.0) as u64 + 2;
                    admitted += (0..asks).filter(|_| budget.try_withdraw()).count() as u64;
                    tokio::time::advance(Duration::from_millis(step_ms)).await;
                }
                (admitted as f64, bound)
            });
            prop_assert!(admitted <= bound + 1e-9, "{admitted} > {bound}");
            // Whole retries only, and the floor's fraction of a token left over. A floor below
            // 2 per second holds one token: a step's refill may find it full and be lost.
            let lower = if floor >= 2 {
                bound
            } else {
                ratio * requests as f64 + f64::from(floor)
            };
            prop_assert!(admitted > lower - 2.0, "{admitted} too far below {lower}");
        }
    }
}
