//! Typed health events a program can subscribe to.

use std::{sync::Arc, time::Duration};

use tower_fault::events::Subscription;

use crate::{
    endpoint::{EndpointInfo, EndpointStatus},
    entry::Entry,
    shared::Shared,
};

/// Why an endpoint's status changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// Sent once per endpoint to a new subscriber: the current status (`from == to`).
    Snapshot,
    /// The endpoint was added (at build time or through the handle).
    Added,
    /// The endpoint was removed through the handle.
    Removed,
    /// Active probes failed (`unhealthy_threshold` in a row, or the first one in probe-first
    /// mode); the last failure's reason.
    ProbeFailed(String),
    /// Active probes passed (`healthy_threshold` in a row, the first one in probe-first mode, or
    /// one after an ejection ended).
    ProbePassed,
    /// Live traffic failed transiently this many times in a row, a run that noise at the
    /// endpoint's recent failure rate would not make: passive ejection.
    ConsecutiveFailures(u32),
    /// The one trial request after an ejection succeeded.
    TrialPassed,
    /// The one trial request after an ejection failed: ejected again, for longer.
    TrialFailed,
    /// The endpoint's service failed `poll_ready` (it is broken): ejected at once.
    ReadinessFailed(String),
    /// The endpoint's own layer (its circuit breaker) refused a request unsent and said when to
    /// come back: the endpoint is held out of rotation for this long (status
    /// [`Ejected`](EndpointStatus::Ejected), without growing its ejection backoff), and returns
    /// like an ejected endpoint, through a trial request or a passing probe.
    HeldOut(Duration),
    /// The trial request of an ejected endpoint failed, but ejecting it again would keep more
    /// endpoints out of rotation than passive ejection may
    /// ([`max_ejected_fraction`](crate::FailoverBuilder::max_ejected_fraction)): it returns to
    /// rotation instead.
    MaxEjected,
}

impl Cause {
    /// A short stable label for logs and metrics.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Cause::Snapshot => "snapshot",
            Cause::Added => "added",
            Cause::Removed => "removed",
            Cause::ProbeFailed(_) => "probe_failed",
            Cause::ProbePassed => "probe_passed",
            Cause::ConsecutiveFailures(_) => "consecutive_failures",
            Cause::TrialPassed => "trial_passed",
            Cause::TrialFailed => "trial_failed",
            Cause::ReadinessFailed(_) => "readiness_failed",
            Cause::HeldOut(_) => "held_out",
            Cause::MaxEjected => "max_ejected",
        }
    }
}

/// An endpoint's status changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// The failover set's instance name (its `name` setting).
    pub name: Arc<str>,
    /// Which endpoint.
    pub endpoint: Arc<EndpointInfo>,
    /// The status before.
    pub from: EndpointStatus,
    /// The status now.
    pub to: EndpointStatus,
    /// Why.
    pub cause: Cause,
}

/// The stream of [`HealthEvent`]s returned by
/// [`FailoverHandle::subscribe`](crate::FailoverHandle::subscribe) and
/// [`Failover::subscribe`](crate::Failover::subscribe): the suite's bounded subscription
/// ([`tower_fault::events::Subscription`]).
///
/// It starts with one [`Cause::Snapshot`] event per endpoint (the state when it subscribed;
/// these do not count against the bound), then every change in order. It holds at most
/// [`DEFAULT_CAPACITY`](tower_fault::events::DEFAULT_CAPACITY) (256) unread changes: health
/// changes are rare, so that covers a reader busy for a while, and a subscriber that stopped
/// reading costs at most that much memory. The set never waits for a subscriber; one that falls
/// further behind misses the newest changes, and [`missed`](tower_fault::events::Subscription::missed)
/// counts them — read what is queued, then re-read the state
/// ([`FailoverHandle::endpoints`](crate::FailoverHandle::endpoints)) or subscribe again. Drop it
/// to unsubscribe; it ends when the failover set is dropped.
pub type HealthEvents = Subscription<HealthEvent>;

impl<S, C> Shared<S, C> {
    /// A subscription that starts with one [`Cause::Snapshot`] event per endpoint.
    ///
    /// The snapshot is read under the lock `emit` takes, and every status is stored before its
    /// event is emitted, so no change falls between the snapshot and the first event.
    pub(crate) fn subscribe(&self) -> HealthEvents {
        self.events.subscribe_with(|| {
            self.load_snapshot()
                .entries
                .iter()
                .map(|e| {
                    let status = e.status();
                    self.event(e, status, status, Cause::Snapshot)
                })
                .collect::<Vec<_>>()
        })
    }

    /// The event of `e` going from `from` to `to`, named after this set.
    fn event(
        &self,
        e: &Entry<S>,
        from: EndpointStatus,
        to: EndpointStatus,
        cause: Cause,
    ) -> HealthEvent {
        HealthEvent {
            name: self.name.clone(),
            endpoint: e.info.clone(),
            from,
            to,
            cause,
        }
    }

    /// Queues the event of `e` going from `from` to `to` for every subscriber that has room
    /// (never waits).
    pub(crate) fn emit(
        &self,
        e: &Entry<S>,
        from: EndpointStatus,
        to: EndpointStatus,
        cause: Cause,
    ) {
        self.events.publish(self.event(e, from, to, cause));
    }

    /// Announces a new endpoint.
    pub(crate) fn announce(&self, e: &Entry<S>) {
        let status = e.status();
        self.emit(e, EndpointStatus::Unknown, status, Cause::Added);
    }
}
