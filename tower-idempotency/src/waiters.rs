//! Same-server waiters for an in-flight key: woken when the owner completes or releases it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::Notify;

use crate::key::RecordKey;

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<RecordKey, Arc<Notify>>>;

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
        let notify = Arc::clone(map.entry(key.clone()).or_default());
        Subscription {
            waiters: self,
            key,
            notify,
        }
    }

    /// Drops the map's notifier when its last subscriber leaves.
    fn unsubscribe(&self, key: &RecordKey, notify: &Arc<Notify>) {
        let mut map = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = map.get(key) {
            // The map's reference plus ours: nobody else waits.
            if Arc::ptr_eq(current, notify) && Arc::strong_count(current) == 2 {
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
        if let Some(notify) = removed {
            notify.notify_waiters();
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
