//! Typed transition events.

use std::{sync::Arc, time::Duration};

use tower_fault::events::Subscription;

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

/// A stream of a breaker's transitions, in the order they happened; see
/// [`Breaker::subscribe`](crate::Breaker::subscribe). It is the suite's bounded subscription,
/// [`tower_fault::events::Subscription`].
///
/// It holds at most [`DEFAULT_CAPACITY`](tower_fault::events::DEFAULT_CAPACITY) (256) unread
/// transitions: transitions are rare, so that covers a reader busy for a while, and a
/// subscriber that stopped reading costs at most that much memory. The breaker never waits for a
/// subscriber; one that falls further behind misses the newest transitions, and
/// [`missed`](tower_fault::events::Subscription::missed) counts them — read what is queued, then
/// re-read the state ([`Breaker::state`](crate::Breaker::state)) or subscribe again. Drop it to
/// unsubscribe; it ends when the breaker is dropped.
pub type Transitions = Subscription<Transition>;
