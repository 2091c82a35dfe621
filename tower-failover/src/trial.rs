//! Trials: the one request an ejected endpoint takes once its ejection is over, and when a
//! request that found no endpoint may look again.

use std::{sync::atomic::Ordering, time::Duration};

use tokio::time::Instant;
use tower_fault::AttemptContext;

use crate::{
    config::ProbeConfig, endpoint::EndpointStatus, entry::Entry, shared::Shared, snapshot::Snapshot,
};

impl<S, C> Shared<S, C> {
    /// Claims the one trial request of an ejected endpoint whose ejection time is over, if any
    /// (only in or above the active tier: a trial never moves traffic to a standby).
    /// An endpoint this request already tried (`tried`) is not trialled with it.
    pub(crate) fn claim_trial(
        &self,
        snap: &Snapshot<S>,
        tried: Option<&AttemptContext>,
    ) -> Option<usize> {
        if self.ejected.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = self.nanos_since_epoch(Instant::now());
        let max_tier = snap.active_tier().unwrap_or(usize::MAX);
        snap.entries.iter().position(|e| {
            trial_candidate(e, max_tier, tried)
                && e.ejected_until.load(Ordering::Acquire) <= now
                && e.trial
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        })
    }

    /// When an endpoint might become usable again: the earliest end of an ejection, or the
    /// unhealthy probe interval.
    pub(crate) fn retry_hint(&self, snap: &Snapshot<S>) -> Option<Duration> {
        let now = Instant::now();
        let ejection = snap
            .entries
            .iter()
            .filter(|e| e.status() == EndpointStatus::Ejected)
            .map(|e| self.ejected_until(e).saturating_duration_since(now))
            .min();
        ejection.or_else(|| self.probe.as_ref().map(ProbeConfig::unhealthy_interval))
    }

    /// The earliest moment an ejected endpoint becomes eligible for a trial with this request:
    /// the endpoints [`claim_trial`](Self::claim_trial) would take (in or above the active
    /// tier, not tried by this request, no trial in flight). Counting others would make a
    /// waiting request wake for an endpoint it cannot take, at once and forever.
    pub(crate) fn next_trial_at(
        &self,
        snap: &Snapshot<S>,
        tried: Option<&AttemptContext>,
    ) -> Option<Instant> {
        let max_tier = snap.active_tier().unwrap_or(usize::MAX);
        snap.entries
            .iter()
            .filter(|e| trial_candidate(e, max_tier, tried) && !e.trial.load(Ordering::Acquire))
            .map(|e| self.ejected_until(e))
            .min()
    }
}

/// Whether `e` could take a trial request from a request that tried `tried`: ejected, in or
/// above the active tier (`max_tier`; a trial never moves traffic to a standby), and not
/// already tried by that request. [`Shared::claim_trial`] and [`Shared::next_trial_at`] must
/// agree on it, or a waiting request wakes for endpoints it cannot take.
fn trial_candidate<S>(e: &Entry<S>, max_tier: usize, tried: Option<&AttemptContext>) -> bool {
    e.info.tier <= max_tier
        && e.status() == EndpointStatus::Ejected
        && !tried.is_some_and(|c| c.was_tried(e.info.id))
}
