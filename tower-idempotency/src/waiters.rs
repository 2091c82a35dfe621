//! Same-server waiters for an in-flight key: woken when the owner completes or releases it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::Notify;

use crate::key::RecordKey;

const SHARDS: usize = 16;

/// A key's notifier and how many subscriptions hold it. The count is kept here, under the
/// shard's lock, not read off the `Arc`: two subscriptions dropped at once would each see the
/// other's reference still alive (it is released after the lock) and both leave the entry behind.
#[derive(Debug)]
struct Entry {
    notify: Arc<Notify>,
    subscribers: usize,
}

type Shard = Mutex<HashMap<RecordKey, Entry>>;

/// One waiter's interest in a key; unsubscribes on drop.
pub(crate) struct Subscription<'a> {
    waiters: &'a Waiters,
    key: &'a RecordKey,
    notify: Arc<Notify>,
}

impl Subscription<'_> {
    /// The key's notifier.
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.waiters.unsubscribe(self.key, &self.notify);
    }
}

/// A sharded map of key → notifier. Only used in wait mode.
#[derive(Debug)]
pub(crate) struct Waiters {
    shards: Box<[Shard]>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: &RecordKey) -> &Shard {
        // The first byte of the digest (the value of the key text's first two hex digits).
        &self.shards[usize::from(key.digest()[0]) % SHARDS]
    }

    /// Subscribes to `key`; call [`Notify::notified`] on [`Subscription::notify`] and enable
    /// it *before* looking at the store, so a completion in between is not missed. Dropping the
    /// subscription unsubscribes (also when the waiting future is cancelled).
    pub(crate) fn subscribe<'a>(&'a self, key: &'a RecordKey) -> Subscription<'a> {
        let mut map = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(key.clone()).or_insert_with(|| Entry {
            notify: Arc::default(),
            subscribers: 0,
        });
        entry.subscribers += 1;
        let notify = Arc::clone(&entry.notify);
        Subscription {
            waiters: self,
            key,
            notify,
        }
    }

    /// Drops the map's notifier when its last subscriber leaves. A subscription whose notifier
    /// was already taken out by [`notify`](Self::notify) (and maybe replaced by a newer one)
    /// leaves the map alone.
    fn unsubscribe(&self, key: &RecordKey, notify: &Arc<Notify>) {
        let mut map = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(key)
            && Arc::ptr_eq(&entry.notify, notify)
        {
            entry.subscribers -= 1;
            if entry.subscribers == 0 {
                map.remove(key);
            }
        }
    }

    /// Wakes every waiter of `key`.
    pub(crate) fn notify(&self, key: &RecordKey) {
        let removed = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if let Some(entry) = removed {
            entry.notify.notify_waiters();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Scope;
    use tower_fault::IdempotencyKey;

    #[tokio::test]
    async fn notify_wakes_enabled_waiters_and_map_stays_small() {
        let waiters = Waiters::new();
        let key = RecordKey::new(
            &Scope::anonymous(),
            &IdempotencyKey::parse_str("k").unwrap(),
        );
        let subscription = waiters.subscribe(&key);
        {
            let notified = subscription.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            waiters.notify(&key);
            tokio::time::timeout(std::time::Duration::from_secs(1), notified)
                .await
                .expect("woken");
        }
        drop(subscription);
        assert_eq!(waiters.len(), 0);

        let a = waiters.subscribe(&key);
        let b = waiters.subscribe(&key);
        drop(a);
        assert_eq!(waiters.len(), 1, "b still waits");
        drop(b);
        assert_eq!(waiters.len(), 0);
    }

    /// Subscriptions of one key dropped at the same moment on two threads leave the map empty:
    /// with the count read off the `Arc` (released after the lock), each drop could see the
    /// other's reference still alive and both keep the entry.
    #[test]
    fn subscriptions_dropped_at_once_on_two_threads_leave_nothing_behind() {
        let waiters = Waiters::new();
        let key = RecordKey::new(
            &Scope::anonymous(),
            &IdempotencyKey::parse_str("k-concurrent").unwrap(),
        );
        let step = std::sync::Barrier::new(2);
        let leaked = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for thread in 0..2 {
                let (waiters, key, step, leaked) = (&waiters, &key, &step, &leaked);
                scope.spawn(move || {
                    for _ in 0..20_000 {
                        let subscription = waiters.subscribe(key);
                        step.wait();
                        drop(subscription);
                        step.wait();
                        if thread == 0 && waiters.len() > 0 {
                            leaked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            waiters.notify(key);
                        }
                        step.wait();
                    }
                });
            }
        });
        assert_eq!(leaked.into_inner(), 0, "rounds that left an entry behind");
    }

    #[tokio::test]
    async fn a_waiter_cancelled_mid_wait_leaves_nothing_behind() {
        let waiters = Waiters::new();
        let key = RecordKey::new(
            &Scope::anonymous(),
            &IdempotencyKey::parse_str("k-cancel").unwrap(),
        );
        // A waiting request whose client went away: its future is dropped while it waits.
        let wait = async {
            let subscription = waiters.subscribe(&key);
            subscription.notify().notified().await;
        };
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(1), wait).await;
        assert!(cancelled.is_err(), "nobody notified");
        assert_eq!(waiters.len(), 0, "the cancelled waiter's entry was leaked");
    }
}
