//! The keyed breakers' guard: never more than a fraction of keys open at once.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the open (or half-open) breakers of a keyed set and refuses a trip that would exceed
/// `max_fraction` of the keys (at least one breaker may always open), like Envoy's
/// `max_ejection_percent`.
#[derive(Debug)]
pub(crate) struct FleetGuard {
    max_fraction: f64,
    open: AtomicUsize,
    keys: AtomicUsize,
}

impl FleetGuard {
    pub(crate) fn new(max_fraction: f64) -> Self {
        Self {
            max_fraction,
            open: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_keys(&self, keys: usize) {
        self.keys.store(keys, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Reserves one open slot if the fraction allows it.
    pub(crate) fn try_open(&self) -> bool {
        let keys = self.keys.load(Ordering::Relaxed);
        let allowed = ((keys as f64 * self.max_fraction).floor() as usize).max(1);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < allowed).then_some(open + 1)
            })
            .is_ok()
    }

    pub(crate) fn release(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                open.checked_sub(1)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_one_and_at_most_the_fraction() {
        let guard = FleetGuard::new(0.25);
        guard.set_keys(2);
        assert!(guard.try_open());
        assert!(!guard.try_open());
        guard.set_keys(8);
        assert!(guard.try_open());
        assert!(!guard.try_open());
        guard.release();
        assert_eq!(guard.open(), 1);
    }
}
