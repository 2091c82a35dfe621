//! Typed transition events.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::State;

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// The failure rate reached its threshold.
    FailureRate,
    /// The slow-call rate reached its threshold.
    SlowCallRate,
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// The open duration elapsed: probes may go through.
    OpenElapsed,
    /// Every half-open probe succeeded.
    ProbesSucceeded,
    /// A half-open probe failed.
    ProbeFailed,
    /// A half-open probe succeeded but was slow (with a slow-call rule).
    ProbeSlow,
    /// Probes were still in flight when the half-open deadline passed.
    HalfOpenTimeout,
    /// `force_open`, `force_closed`, `disable` or `reset`.
    Manual,
}

impl Cause {
    /// A short stable label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::FailureRate => "failure_rate",
            Cause::SlowCallRate => "slow_call_rate",
            Cause::ConsecutiveFailures => "consecutive_failures",
            Cause::OpenElapsed => "open_elapsed",
            Cause::ProbesSucceeded => "probes_succeeded",
            Cause::ProbeFailed => "probe_failed",
            Cause::ProbeSlow => "probe_slow",
            Cause::HalfOpenTimeout => "half_open_timeout",
            Cause::Manual => "manual",
        }
    }
}

/// One state change of a breaker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub cause: Cause,
    /// The window's failure rate when the breaker tripped on a rate rule.
    pub failure_rate: Option<f64>,
    /// The window's slow-call rate when the breaker tripped on a rate rule.
    pub slow_call_rate: Option<f64>,
    /// How long the breaker stays open, when it opened.
    pub open_for: Option<Duration>,
}

/// How many transitions a subscriber may fall behind before new ones are dropped for it.
pub const SUBSCRIBER_CAPACITY: usize = 256;

/// A stream of a breaker's transitions, in the order they happened; see
/// [`Breaker::subscribe`](crate::Breaker::subscribe).
///
/// A subscriber that falls more than [`SUBSCRIBER_CAPACITY`] events behind misses the newer
/// ones (the breaker never waits for a subscriber). The stream ends when the breaker is dropped.
#[derive(Debug)]
pub struct Transitions {
    rx: mpsc::Receiver<Transition>,
}

impl Transitions {
    pub(crate) fn new(rx: mpsc::Receiver<Transition>) -> Self {
        Self { rx }
    }

    /// The next transition (`None` once the breaker is gone).
    pub async fn recv(&mut self) -> Option<Transition> {
        self.rx.recv().await
    }

    /// The next transition if one is waiting.
    pub fn try_recv(&mut self) -> Option<Transition> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Transitions {
    type Item = Transition;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Transition>> {
        self.rx.poll_recv(cx)
    }
}

/// The subscribers of one breaker (behind the breaker's transition lock).
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    senders: Vec<mpsc::Sender<Transition>>,
}

impl Subscribers {
    pub(crate) fn subscribe(&mut self) -> Transitions {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        self.senders.push(tx);
        Transitions::new(rx)
    }

    pub(crate) fn publish(&mut self, transition: &Transition) {
        self.senders
            .retain(|tx| match tx.try_send(transition.clone()) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }
}
