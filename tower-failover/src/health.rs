//! The health state machine of an endpoint: status transitions (with their event, log line
//! and gauge) and the probe hysteresis.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::{
    endpoint::EndpointStatus,
    entry::{Entry, Slow},
    events::Cause,
    probe::ProbeOutcome,
    shared::{Shared, lock},
};

impl<S, C> Shared<S, C> {
    /// Moves `e` to `to` (the caller holds `e.slow`). Emits the event, logs, updates metrics.
    pub(crate) fn set_status(
        &self,
        e: &Entry<S>,
        slow: &mut Slow,
        to: EndpointStatus,
        cause: Cause,
    ) {
        let from = e.status();
        if from == to {
            return;
        }
        // `SeqCst`: a removal must be seen by a request that counted itself in flight before
        // checking (see `CallGuard::try_begin`); every status change is rare.
        e.status.store(to.to_u8(), Ordering::SeqCst);
        if from == EndpointStatus::Ejected {
            self.ejected.fetch_sub(1, Ordering::AcqRel);
        }
        if to == EndpointStatus::Ejected {
            self.ejected.fetch_add(1, Ordering::AcqRel);
        }
        if to == EndpointStatus::Healthy {
            slow.recovered_at = Some(Instant::now());
            slow.held_out = false;
            e.outcomes.end_run();
        }
        e.metrics.healthy(to == EndpointStatus::Healthy);
        let (name, endpoint) = (&*self.name, &*e.info.name);
        if to == EndpointStatus::Healthy {
            tracing::info!(failover = name, endpoint, %from, %to, cause = cause.as_str(), "endpoint healthy");
        } else if from == EndpointStatus::Healthy || to == EndpointStatus::Ejected {
            tracing::warn!(failover = name, endpoint, %from, %to, cause = cause.as_str(), "endpoint out of rotation");
        } else {
            tracing::info!(failover = name, endpoint, %from, %to, cause = cause.as_str(), "endpoint status changed");
        }
        self.emit(e, from, to, cause);
        self.changed(&self.load_snapshot());
    }

    /// Feeds one probe verdict through the hysteresis.
    pub(crate) fn on_probe(&self, e: &Entry<S>, outcome: ProbeOutcome) {
        let Some(cfg) = &self.probe else { return };
        let mut slow = lock(&e.slow);
        let status = e.status();
        match outcome {
            ProbeOutcome::Healthy => {
                slow.probe_passes = slow.probe_passes.saturating_add(1);
                slow.probe_failures = 0;
                let to_healthy = match status {
                    EndpointStatus::Unknown => true,
                    EndpointStatus::Unhealthy => slow.probe_passes >= cfg.healthy_threshold,
                    EndpointStatus::Ejected => Instant::now() >= self.ejected_until(e),
                    EndpointStatus::Healthy | EndpointStatus::Removed => false,
                };
                if to_healthy {
                    self.set_status(e, &mut slow, EndpointStatus::Healthy, Cause::ProbePassed);
                }
            }
            ProbeOutcome::Unhealthy(reason) => {
                slow.probe_failures = slow.probe_failures.saturating_add(1);
                slow.probe_passes = 0;
                tracing::debug!(failover = &*self.name, endpoint = &*e.info.name, %reason, failures = slow.probe_failures, "probe failed");
                let to_unhealthy = match status {
                    EndpointStatus::Unknown => true,
                    EndpointStatus::Healthy | EndpointStatus::Ejected => {
                        slow.probe_failures >= cfg.unhealthy_threshold
                    }
                    EndpointStatus::Unhealthy | EndpointStatus::Removed => false,
                };
                if to_unhealthy {
                    self.set_status(
                        e,
                        &mut slow,
                        EndpointStatus::Unhealthy,
                        Cause::ProbeFailed(reason.into_owned()),
                    );
                }
            }
        }
    }

    /// Marks `e` removed (new requests never pick it; in-flight ones finish).
    pub(crate) fn mark_removed(&self, e: &Entry<S>) {
        let mut slow = lock(&e.slow);
        self.set_status(e, &mut slow, EndpointStatus::Removed, Cause::Removed);
    }
}
