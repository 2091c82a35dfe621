//! Typed health events a program can subscribe to.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::{
    endpoint::{EndpointInfo, EndpointStatus},
    entry::Entry,
    shared::{Shared, lock},
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
/// [`FailoverHandle::subscribe`](crate::FailoverHandle::subscribe).
///
/// It starts with one [`Cause::Snapshot`] event per endpoint, then every change in order. Events
/// are queued per subscriber (health changes are rare); drop the stream to unsubscribe. The
/// stream ends when the failover set is dropped.
#[derive(Debug)]
pub struct HealthEvents {
    rx: mpsc::UnboundedReceiver<HealthEvent>,
}

impl HealthEvents {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<HealthEvent>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the failover set is gone.
    pub async fn recv(&mut self) -> Option<HealthEvent> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<HealthEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for HealthEvents {
    type Item = HealthEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<HealthEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl<S, C> Shared<S, C> {
    /// A subscription that starts with one [`Cause::Snapshot`] event per endpoint.
    pub(crate) fn subscribe(&self) -> HealthEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = lock(&self.subscribers);
        for e in &self.load_snapshot().entries {
            let status = e.status();
            let _ = tx.send(HealthEvent {
                endpoint: e.info.clone(),
                from: status,
                to: status,
                cause: Cause::Snapshot,
            });
        }
        subs.push(tx);
        HealthEvents::new(rx)
    }

    /// Sends `event` to every subscriber.
    pub(crate) fn emit(&self, event: HealthEvent) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Announces a new endpoint.
    pub(crate) fn announce(&self, e: &Entry<S>) {
        let status = e.status();
        self.emit(HealthEvent {
            endpoint: e.info.clone(),
            from: EndpointStatus::Unknown,
            to: status,
            cause: Cause::Added,
        });
    }
}
