//! Same-server waiters for an in-flight key: woken when the owner completes or releases it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::Notify;

use crate::key::RecordKey;

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<RecordKey, Arc<Notify>>>;

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
        let prefix = u8::from_str_radix(&key.as_str()[..2], 16).unwrap_or(0);
        &self.shards[usize::from(prefix) % SHARDS]
    }

    /// The notifier of `key`; call [`Notify::notified`] and enable it *before* looking at the
    /// store, so a completion in between is not missed.
    pub(crate) fn subscribe(&self, key: &RecordKey) -> Arc<Notify> {
        let mut map = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key.clone()).or_default())
    }

    /// Drops the map's notifier when its last subscriber leaves.
    pub(crate) fn unsubscribe(&self, key: &RecordKey, notify: Arc<Notify>) {
        let mut map = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = map.get(key) {
            // The map's reference plus ours: nobody else waits.
            if Arc::ptr_eq(current, &notify) && Arc::strong_count(current) == 2 {
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
        let notify = waiters.subscribe(&key);
        {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            waiters.notify(&key);
            tokio::time::timeout(std::time::Duration::from_secs(1), notified)
                .await
                .expect("woken");
        }
        waiters.unsubscribe(&key, notify);
        assert_eq!(waiters.len(), 0);

        let a = waiters.subscribe(&key);
        let b = waiters.subscribe(&key);
        waiters.unsubscribe(&key, a);
        assert_eq!(waiters.len(), 1, "b still waits");
        waiters.unsubscribe(&key, b);
        assert_eq!(waiters.len(), 0);
    }
}
