//! [`FailoverHandle`]: runtime membership changes and state inspection.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, PoisonError, atomic::Ordering},
    task::{Context, Poll},
};

use tower_fault::{EndpointId, HttpClassifier};

use crate::{
    endpoint::{Endpoint, EndpointSnapshot},
    error::ConfigError,
    events::HealthEvents,
    shared::Shared,
    snapshot::Snapshot,
};

/// Adds and removes endpoints at runtime, reads their state, subscribes to events.
///
/// Obtained from [`Failover::handle`](crate::Failover::handle). A handle keeps the failover set
/// (and its probe task) alive like a clone of the service does.
pub struct FailoverHandle<S, C = HttpClassifier> {
    shared: Arc<Shared<S, C>>,
}

impl<S, C> Clone for FailoverHandle<S, C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> fmt::Debug for FailoverHandle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, C> FailoverHandle<S, C> {
    pub(crate) fn new(shared: Arc<Shared<S, C>>) -> Self {
        Self { shared }
    }

    /// Every endpoint's current state, by tier.
    #[must_use]
    pub fn endpoints(&self) -> Vec<EndpointSnapshot> {
        self.shared
            .load_snapshot()
            .entries
            .iter()
            .map(|e| self.shared.view(e))
            .collect()
    }

    /// One endpoint's current state.
    #[must_use]
    pub fn endpoint(&self, name: &str) -> Option<EndpointSnapshot> {
        self.shared
            .load_snapshot()
            .entries
            .iter()
            .find(|e| &*e.info.name == name)
            .map(|e| self.shared.view(e))
    }

    /// Subscribes to health events (see [`HealthEvents`]).
    #[must_use]
    pub fn subscribe(&self) -> HealthEvents {
        self.shared.subscribe()
    }

    /// Adds an endpoint to `tier`; a `tier` past the last one adds a new tier right after the
    /// last (so its index is the current number of tiers). It starts healthy, or unknown until
    /// probed in probe-first mode.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the name is empty or taken, or the base URI is invalid.
    pub fn add(&self, tier: usize, endpoint: Endpoint<S>) -> Result<EndpointId, ConfigError> {
        let mut slot = self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let endpoint = endpoint.check()?;
        if slot.entries.iter().any(|e| e.info.name == endpoint.name) {
            return Err(crate::error::config_error(format!(
                "endpoint name `{}` is already in use",
                endpoint.name
            )));
        }
        // Clamped: an index far past the end would otherwise size (or overflow) the tier table.
        let tier = tier.min(slot.tiers.len());
        let entry = Arc::new(self.shared.new_entry(tier, endpoint));
        let id = entry.info.id;
        let mut entries = slot.entries.clone();
        entries.push(entry.clone());
        let generation = slot.generation + 1;
        *slot = Arc::new(Snapshot::new(generation, entries));
        // Published under the lock: two changes racing must not leave the generation behind
        // the snapshot (clones compare the two to know when to reload).
        self.shared.generation.store(generation, Ordering::Release);
        drop(slot);
        tracing::info!(
            failover = &*self.shared.name,
            endpoint = &*entry.info.name,
            tier,
            "endpoint added"
        );
        self.shared.announce(&entry);
        self.shared.changed(&self.shared.load_snapshot());
        self.shared.prober_wake.notify_one();
        Ok(id)
    }

    /// Removes an endpoint: no new request goes to it; the returned [`Drain`] completes once
    /// its in-flight requests have finished. `None` if no endpoint has that name.
    pub fn remove(&self, name: &str) -> Option<Drain>
    where
        S: Send + Sync + 'static,
    {
        let mut slot = self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let pos = slot.entries.iter().position(|e| &*e.info.name == name)?;
        let mut entries = slot.entries.clone();
        let entry = entries.remove(pos);
        let generation = slot.generation + 1;
        *slot = Arc::new(Snapshot::new(generation, entries));
        // Published under the lock: two changes racing must not leave the generation behind
        // the snapshot (clones compare the two to know when to reload).
        self.shared.generation.store(generation, Ordering::Release);
        drop(slot);
        self.shared.mark_removed(&entry);
        tracing::info!(
            failover = &*self.shared.name,
            endpoint = name,
            "endpoint removed"
        );
        self.shared.prober_wake.notify_one();
        Some(Drain {
            fut: Box::pin(async move {
                loop {
                    let drained = entry.drained.notified();
                    tokio::pin!(drained);
                    drained.as_mut().enable();
                    // `SeqCst`: pairs with `CallGuard::try_begin` (see there).
                    if entry.in_flight.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                    drained.await;
                }
            }),
        })
    }
}

/// Completes when a removed endpoint has no request in flight any more.
pub struct Drain {
    fut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain").finish_non_exhaustive()
    }
}

impl Future for Drain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}
