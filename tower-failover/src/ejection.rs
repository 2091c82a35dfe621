//! Taking an endpoint out of rotation: ejections with their growing, decaying backoff,
//! hold-outs on the endpoint's own word, and the max-ejected guard over passive ejection.

use std::{sync::atomic::Ordering, time::Duration};

use tokio::time::Instant;
use tower_fault::time::saturating_after;

use crate::{
    endpoint::EndpointStatus,
    entry::{Entry, Slow},
    events::Cause,
    shared::{Shared, lock},
};

impl<S, C> Shared<S, C> {
    /// Consumes the stable time since the last recovery: each full decay period of it forgives
    /// one ejection of the streak. Time out of rotation is not stable, and a failed trial must
    /// not count the same healthy period again, so it counts once.
    pub(crate) fn forgive(&self, slow: &mut Slow, now: Instant) {
        let decay = self.ejection.decay;
        if let Some(recovered) = slow.recovered_at.take()
            && !decay.is_zero()
        {
            let stable = now.saturating_duration_since(recovered).as_nanos() / decay.as_nanos();
            slow.ejection_streak = slow
                .ejection_streak
                .saturating_sub(stable.min(u128::from(u32::MAX)) as u32);
        }
    }

    /// Takes `e` out of rotation for `d` from `now`, as a new ejection (a trial sent for an
    /// earlier one gets no verdict on this one). Counts it, emits the event.
    pub(crate) fn take_out(
        &self,
        e: &Entry<S>,
        slow: &mut Slow,
        now: Instant,
        d: Duration,
        cause: Cause,
    ) {
        e.ejected_until.store(
            self.nanos_since_epoch(saturating_after(now, d)),
            Ordering::Release,
        );
        e.ejections.fetch_add(1, Ordering::Relaxed);
        e.outcomes.end_run();
        e.metrics.ejected(&cause);
        if e.status() == EndpointStatus::Ejected {
            // Out already (a failed or refused trial): same status, a new end; still an event.
            self.emit(e, EndpointStatus::Ejected, EndpointStatus::Ejected, cause);
            self.changed(&self.load_snapshot());
        } else {
            self.set_status(e, slow, EndpointStatus::Ejected, cause);
        }
    }

    /// Ejects `e` for a jittered time that grows with its ejection streak (the ejection
    /// backoff's step is the streak).
    pub(crate) fn eject(&self, e: &Entry<S>, slow: &mut Slow, cause: Cause) {
        let now = Instant::now();
        self.forgive(slow, now);
        // A decorrelated curve grows from the previous ejection of the streak, if any is left.
        let previous = if slow.ejection_streak == 0 {
            Duration::ZERO
        } else {
            slow.last_ejection
        };
        slow.ejection_streak = slow.ejection_streak.saturating_add(1);
        slow.held_out = false;
        let d = self
            .ejection
            .ejection_time(slow.ejection_streak, previous, &mut lock(&self.rng));
        slow.last_ejection = d;
        tracing::warn!(failover = &*self.name, endpoint = &*e.info.name, cause = cause.as_str(), ejection = ?d, streak = slow.ejection_streak, "endpoint ejected");
        self.take_out(e, slow, now, d, cause);
    }

    /// Holds `e` out of rotation for `d` on its own layer's word (see
    /// [`rejected_by_endpoint`](Self::rejected_by_endpoint)): its ejection streak stays as it
    /// is, so the backoff of real ejections does not grow on a breaker's verdict.
    pub(crate) fn hold_out(&self, e: &Entry<S>, slow: &mut Slow, d: Duration) {
        let now = Instant::now();
        self.forgive(slow, now);
        slow.held_out = true;
        tracing::warn!(failover = &*self.name, endpoint = &*e.info.name, hold = ?d, "endpoint held out: its own layer refuses requests");
        self.take_out(e, slow, now, d, Cause::HeldOut(d));
    }

    /// Whether passive ejection may take `e` out of rotation, or keep it out after a failed
    /// trial: the other endpoints out of rotation for any reason (ejected, held out, down by
    /// probes, not probed yet) must be fewer than
    /// [`max_ejected`](crate::config::EjectionConfig::max_ejected) of the endpoints. A rare path (an ejection
    /// being decided): one pass over the snapshot.
    pub(crate) fn may_eject(&self, e: &Entry<S>) -> bool {
        let snap = self.load_snapshot();
        let (mut endpoints, mut out) = (0, 0);
        for other in &snap.entries {
            match other.status() {
                EndpointStatus::Removed => {}
                EndpointStatus::Healthy => endpoints += 1,
                _ => {
                    endpoints += 1;
                    if !std::ptr::eq(&**other, e) {
                        out += 1;
                    }
                }
            }
        }
        out < self.ejection.max_ejected(endpoints)
    }

    /// Passive ejection (a run of live failures, a failed trial) under the max-ejected guard:
    /// ejects `e` and returns `true`, or returns `false` when the guard refuses.
    pub(crate) fn eject_passively(&self, e: &Entry<S>, slow: &mut Slow, cause: Cause) -> bool {
        // Held while deciding and ejecting, so that two ejections at once cannot both pass.
        let _gate = lock(&self.ejection_gate);
        if !self.may_eject(e) {
            return false;
        }
        self.eject(e, slow, cause);
        true
    }

    /// Counts and logs an ejection the max-ejected guard refused.
    pub(crate) fn refused(&self, e: &Entry<S>, cause: &Cause) {
        e.metrics.ejection_refused();
        tracing::warn!(
            failover = &*self.name,
            endpoint = &*e.info.name,
            cause = cause.as_str(),
            max_ejected_fraction = self.ejection.max_ejected_fraction,
            "passive ejection refused: too many endpoints out of rotation already"
        );
    }
}
