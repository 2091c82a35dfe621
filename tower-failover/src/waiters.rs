//! Readiness waiters: the tasks `poll_ready` left pending, woken on the next health or
//! membership change.

use std::{sync::Mutex, task::Waker};

use crate::shared::lock;

/// Readiness waiters kept at most (see [`Waiters::register`]).
const MAX_WAITERS: usize = 256;

/// The wakers of the tasks waiting for a usable endpoint, one per task.
#[derive(Debug, Default)]
pub(crate) struct Waiters(Mutex<Vec<Waker>>);

impl Waiters {
    /// Wakes `waker` on the next health or membership change. The list is bounded: wakers of
    /// tasks that went away stay until a change wakes them all, so past [`MAX_WAITERS`] the
    /// list is woken and emptied now (a spurious wake-up: each live task polls again and
    /// registers anew; a task that is gone costs nothing more).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut waiters = lock(&self.0);
        if waiters.iter().any(|w| w.will_wake(waker)) {
            return;
        }
        if waiters.len() >= MAX_WAITERS {
            let full = std::mem::take(&mut *waiters);
            waiters.push(waker.clone());
            drop(waiters);
            for w in full {
                w.wake();
            }
            return;
        }
        waiters.push(waker.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// Wakes every registered task and empties the list.
    pub(crate) fn wake_all(&self) {
        let waiters = std::mem::take(&mut *lock(&self.0));
        for w in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    use super::*;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakers of tasks that went away do not pile up while health stays the same: the list is
    /// bounded, and the wakers it lets go are woken (their tasks, if alive, register again).
    #[test]
    fn the_readiness_waiters_list_is_bounded() {
        let waiters = Waiters::default();
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        for _ in 0..10 * MAX_WAITERS {
            // One waker per task: `will_wake` tells them apart.
            let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
            waiters.register(&waker);
            assert!(waiters.len() <= MAX_WAITERS);
        }
        let mine = Waker::from(wakes.clone());
        waiters.register(&mine);
        waiters.register(&mine);
        assert!(waiters.len() <= MAX_WAITERS);
        waiters.wake_all();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "registered once, woken once"
        );
        assert_eq!(waiters.len(), 0);
    }
}
