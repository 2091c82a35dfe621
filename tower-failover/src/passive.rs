//! What the outcome of a request says about its endpoint: passive detection of failure
//! streaks, trial verdicts, an endpoint's own rejections and failed readiness.

use std::time::Duration;

use tower_fault::{BoxError, Class};

use crate::{
    endpoint::EndpointStatus,
    entry::Entry,
    events::Cause,
    shared::{Shared, lock},
};

impl<S, C> Shared<S, C> {
    /// Feeds the class of a finished request to passive detection. `trial` is the ejection
    /// (the endpoint's ejection count when it was claimed) a trial request was sent for: its
    /// verdict only applies to that ejection, not to a later one (a probe may have brought the
    /// endpoint back, and live failures ejected it again, while it was in flight).
    ///
    /// Live traffic feeds the endpoint's [`Outcomes`]: a transient failure extends its run, and
    /// the run ejects once it is a real streak for `eject_after` (see
    /// [`Streak::is_real`](crate::outcomes::Streak::is_real)) and the max-ejected guard
    /// allows. The success path is one compare-and-swap on the entry, no lock.
    pub(crate) fn record(&self, e: &Entry<S>, class: Class, trial: Option<u64>) {
        if class.is_local_rejection() {
            self.rejected_by_endpoint(e, class.retry_after(), trial);
            return;
        }
        if let Some(ejection) = trial {
            // A trial's verdict is about its ejection; it is not part of live traffic's runs.
            let mut slow = lock(&e.slow);
            if e.in_ejection(ejection) {
                if !class.is_transient() {
                    self.set_status(e, &mut slow, EndpointStatus::Healthy, Cause::TrialPassed);
                } else if !self.eject_passively(e, &mut slow, Cause::TrialFailed) {
                    // Keeping it out would leave too few endpoints in rotation: back it comes.
                    self.refused(e, &Cause::TrialFailed);
                    self.set_status(e, &mut slow, EndpointStatus::Healthy, Cause::MaxEjected);
                }
            }
            drop(slow);
            e.release_trial();
            return;
        }
        let Some(min_run) = self.ejection.consecutive_failures else {
            return;
        };
        if !class.is_transient() {
            e.outcomes.success();
            return;
        }
        let streak = e.outcomes.failure();
        if streak.run >= min_run && e.is_healthy() && streak.is_real(min_run) {
            let mut slow = lock(&e.slow);
            let cause = Cause::ConsecutiveFailures(streak.run);
            if e.is_healthy() && !self.eject_passively(e, &mut slow, cause.clone()) {
                // The run stays, so every further failure asks again (the guard may allow it
                // by then); the refusal is reported once per run, when the run qualifies.
                if streak.run == streak.required(min_run) {
                    self.refused(e, &cause);
                }
            }
        }
    }

    /// The endpoint's own layer (its circuit breaker) refused a request unsent. That layer
    /// already judged the failures behind its refusal, and the endpoint answered nothing, so the
    /// refusal is no failure of live traffic: it neither extends nor ends a run, and it is no
    /// trial verdict.
    ///
    /// When the layer says when to come back (`retry_after`), a healthy endpoint is held out of
    /// rotation until then (at most the maximum ejection time), since every request sent there
    /// meanwhile would be refused too; a refused trial holds it out again. It returns like an
    /// ejected endpoint (a trial request or a passing probe once the time is over). The
    /// max-ejected guard does not apply: the hold is the layer's verdict, not passive
    /// detection's. Without a hint, a healthy endpoint stays in rotation, and a refused trial
    /// keeps its endpoint out for the base ejection time (otherwise every next request would
    /// be a trial spent on a refusal).
    pub(crate) fn rejected_by_endpoint(
        &self,
        e: &Entry<S>,
        retry_after: Option<Duration>,
        trial: Option<u64>,
    ) {
        let hint = retry_after
            .filter(|d| !d.is_zero())
            .map(|d| d.min(self.ejection.backoff.max()));
        let hold = match trial {
            Some(_) => Some(hint.unwrap_or(self.ejection.backoff.base())),
            None => hint,
        };
        let eligible = |e: &Entry<S>| match trial {
            Some(ejection) => e.in_ejection(ejection),
            None => e.is_healthy(),
        };
        if let Some(hold) = hold
            && eligible(e)
        {
            let mut slow = lock(&e.slow);
            if eligible(e) {
                self.hold_out(e, &mut slow, hold);
            }
        }
        if trial.is_some() {
            e.release_trial();
        }
    }

    /// An endpoint's service failed `poll_ready`: it is broken (a closed buffer, a failed
    /// connection pool), so it is ejected at once, whatever the passive-ejection threshold;
    /// it comes back like any ejected endpoint.
    ///
    /// An endpoint that is already ejected is ejected again (for longer) only when this was its
    /// trial: in panic mode ejected endpoints are polled too, and re-ejecting them on every
    /// poll would bump the health version each time and make `poll_ready` wake itself forever.
    pub(crate) fn readiness_failed(&self, e: &Entry<S>, err: &BoxError, trial: Option<u64>) {
        let mut slow = lock(&e.slow);
        tracing::debug!(failover = &*self.name, endpoint = &*e.info.name, error = %err, "endpoint not ready");
        let eject = match e.status() {
            EndpointStatus::Healthy => true,
            EndpointStatus::Ejected => trial.is_some_and(|ejection| e.in_ejection(ejection)),
            _ => false,
        };
        if eject {
            self.eject(e, &mut slow, Cause::ReadinessFailed(err.to_string()));
        }
        drop(slow);
        if trial.is_some() {
            e.release_trial();
        }
    }
}
