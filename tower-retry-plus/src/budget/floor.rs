//! The floor of the retry budget: a token bucket of one second's worth of retries.

use std::time::Duration;

use tokio::time::Instant;

/// How long the floor's bucket takes to fill: a burst gets at most this much of the floor at
/// once, and the rest at its rate.
pub(super) const FLOOR_BURST: Duration = Duration::from_secs(1);

/// A token bucket holding `per_sec × FLOOR_BURST` tokens, refilled at `per_sec`; it starts full.
///
/// Not thread-safe on its own: the budget keeps it under the lock that serialises withdrawals.
#[derive(Debug)]
pub(super) struct Floor {
    per_sec: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Floor {
    pub(super) fn new(per_sec: u32, now: Instant) -> Self {
        let per_sec = f64::from(per_sec);
        let capacity = per_sec * FLOOR_BURST.as_secs_f64();
        Self {
            per_sec,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    /// The retries per second the floor admits.
    pub(super) fn per_sec(&self) -> f64 {
        self.per_sec
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes one token if there is one.
    pub(super) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The whole tokens available at `now`.
    pub(super) fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        // Within 0..=u32::MAX: the capacity is a u32 times one second.
        self.tokens.floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_one_second_and_refills_at_its_rate() {
        let mut floor = Floor::new(10, Instant::now());
        let now = Instant::now;
        assert_eq!((0..100).filter(|_| floor.try_take(now())).count(), 10);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(floor.available(now()), 2);
        assert_eq!((0..100).filter(|_| floor.try_take(now())).count(), 2);
        // Idle for a long time: never more than one second's worth.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(floor.available(now()), 10);
    }

    #[test]
    fn zero_admits_nothing() {
        let mut floor = Floor::new(0, Instant::now());
        assert!(!floor.try_take(Instant::now()));
    }
}
