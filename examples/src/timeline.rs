//! What happened during one run, over time — the data the HTML report ([`crate::html`])
//! draws: when each payment started and how it ended, the outage windows, and the state
//! changes of the breaker and of failover's endpoints.
//!
//! Times are offsets from the run's start (the instant the traffic and the outage schedule
//! started). State changes are timed when a task subscribed to them receives them
//! ([`EventLog`]): the layers' events carry no time of their own, and a subscriber that waits
//! on its channel sees them within the scheduler's latency (well under a millisecond on an idle
//! runtime, far below the chart's 100 ms resolution).

use std::{collections::BTreeMap, time::Duration};

use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tower_breaker::{Breaker, State};
use tower_failover::{Cause, EndpointStatus, FailoverHandle};

use crate::{load::Outcome, payments::Ledger, run::Outage};

/// How a payment ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ending {
    /// The service recorded it and said so.
    Succeeded,
    /// An invalid payment (zero amount) that failed: the service rejects those with 422.
    Rejected,
    /// The live path could not deliver it; it was queued for re-drive.
    Deferred,
    /// A valid payment the client reported failed.
    Failed,
}

/// One payment on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// When it started, from the run's start.
    pub start: Duration,
    /// From the first attempt to the final answer.
    pub latency: Duration,
    /// How it ended.
    pub ending: Ending,
    /// The server on the receipt of a success.
    pub server: Option<String>,
    /// Attempts the client made, if it says (a deferred payment's are not reported).
    pub attempts: Option<u32>,
    /// Whether the payment was valid (non-zero amount): a valid payment must be recorded once.
    pub valid: bool,
    /// How many times the servers recorded it by the end of the run (re-drive included).
    pub recorded: u32,
}

impl Mark {
    /// Builds the mark of `outcome`, started `start` into the run; `recorded` is what the ledger
    /// says about it.
    #[must_use]
    pub fn new(outcome: &Outcome, start: Duration, recorded: u32) -> Self {
        let valid = outcome.payment.amount > 0;
        let sent = &outcome.sent;
        let ending = if sent.deferred {
            Ending::Deferred
        } else if sent.failure.is_none() {
            Ending::Succeeded
        } else if valid {
            Ending::Failed
        } else {
            Ending::Rejected
        };
        Self {
            start,
            latency: outcome.latency,
            ending,
            server: sent.server.clone(),
            attempts: sent.attempts,
            valid,
            recorded,
        }
    }

    /// Attempts beyond the first (0 when the client did not say).
    #[must_use]
    pub fn retries(&self) -> u64 {
        u64::from(self.attempts.unwrap_or(1).saturating_sub(1))
    }

    /// A valid payment the servers never recorded.
    #[must_use]
    pub const fn lost(&self) -> bool {
        self.valid && self.recorded == 0
    }

    /// Recordings beyond the first: double charges.
    #[must_use]
    pub const fn charged_twice(&self) -> u64 {
        self.recorded.saturating_sub(1) as u64
    }
}

/// A server that was down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// Which server.
    pub server: String,
    /// From the run's start.
    pub from: Duration,
    /// Back up, from the run's start.
    pub until: Duration,
}

impl Down {
    /// The windows of `outage` (one per server that goes down).
    #[must_use]
    pub fn of(outage: Outage) -> Vec<Self> {
        let window = |server: &str, at: Duration, lasting: Duration| Self {
            server: server.to_owned(),
            from: at,
            until: at + lasting,
        };
        match outage {
            Outage::Primary { at, lasting } => vec![window("primary", at, lasting)],
            Outage::Both { at, lasting } => vec![
                window("primary", at, lasting),
                window("standby", at, lasting),
            ],
        }
    }
}

/// How a lane's state reads on the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tone {
    /// Working: a closed breaker, a healthy endpoint.
    Good,
    /// Recovering or routed around: a half-open breaker, an ejected endpoint.
    Degraded,
    /// Refusing: an open breaker, an unhealthy endpoint.
    Down,
    /// Set by hand or not judged yet (forced states, an endpoint not probed yet).
    Neutral,
}

/// A state of a lane, as drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneState {
    /// The layer's own label (`closed`, `half_open`, `healthy`, `ejected`…).
    pub label: &'static str,
    /// Its color class.
    pub tone: Tone,
}

impl LaneState {
    /// A breaker state.
    #[must_use]
    pub const fn breaker(state: State) -> Self {
        let tone = match state {
            State::Closed => Tone::Good,
            State::HalfOpen => Tone::Degraded,
            State::Open | State::ForcedOpen => Tone::Down,
            _ => Tone::Neutral,
        };
        Self {
            label: state.as_str(),
            tone,
        }
    }

    /// An endpoint's status.
    #[must_use]
    pub const fn endpoint(status: EndpointStatus) -> Self {
        let tone = match status {
            EndpointStatus::Healthy => Tone::Good,
            EndpointStatus::Ejected => Tone::Degraded,
            EndpointStatus::Unhealthy => Tone::Down,
            _ => Tone::Neutral,
        };
        Self {
            label: status.as_str(),
            tone,
        }
    }
}

/// One thing's state over the run: a breaker or an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// The breaker's or the endpoint's name.
    pub name: String,
    /// Its states in order, each with the time it was entered; the first at the run's start.
    pub states: Vec<(Duration, LaneState)>,
}

/// A stretch of one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Entered.
    pub from: Duration,
    /// Left (or the end of the run).
    pub until: Duration,
    /// The state.
    pub state: LaneState,
}

impl Lane {
    fn new(name: impl Into<String>, initial: LaneState) -> Self {
        Self {
            name: name.into(),
            states: vec![(Duration::ZERO, initial)],
        }
    }

    fn enter(&mut self, at: Duration, state: LaneState) {
        if self.states.last().is_some_and(|(_, s)| *s == state) {
            return;
        }
        self.states.push((at, state));
    }

    /// The lane's stretches up to `end` (states entered at `end` or later are left out).
    #[must_use]
    pub fn spans(&self, end: Duration) -> Vec<Span> {
        let mut spans: Vec<Span> = Vec::new();
        for (i, &(from, state)) in self.states.iter().enumerate() {
            if from >= end {
                break;
            }
            let until = self.states.get(i + 1).map_or(end, |(t, _)| (*t).min(end));
            spans.push(Span { from, until, state });
        }
        spans
    }
}

/// What one 100 ms (or wider) slice of a run holds, by the payments that started in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Successes by the server on the receipt (`None`: no readable receipt).
    pub succeeded: BTreeMap<Option<String>, u64>,
    /// Invalid payments rejected.
    pub rejected: u64,
    /// Payments queued for re-drive.
    pub deferred: u64,
    /// Valid payments reported failed.
    pub failed: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Valid payments never recorded.
    pub lost: u64,
    /// Recordings beyond the first.
    pub charged_twice: u64,
}

impl Bucket {
    /// Payments that started in the slice.
    #[must_use]
    pub fn payments(&self) -> u64 {
        self.succeeded.values().sum::<u64>() + self.rejected + self.deferred + self.failed
    }
}

/// One run over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// How long the live path ran (from the run's start to the last answer).
    pub length: Duration,
    /// Every payment, in the order sent.
    pub payments: Vec<Mark>,
    /// The servers' outages.
    pub outages: Vec<Down>,
    /// The client's breakers (none for a client without one).
    pub breakers: Vec<Lane>,
    /// Failover's endpoints (none for a client without failover).
    pub endpoints: Vec<Lane>,
}

impl Timeline {
    /// The timeline of a run that started at `epoch` and ran its live path for `length`:
    /// `outcomes` as the load driver returned them, and the `ledger` read at the end of the run.
    #[must_use]
    pub fn new(
        epoch: Instant,
        length: Duration,
        outcomes: &[Outcome],
        ledger: &Ledger,
        outage: Option<Outage>,
    ) -> Self {
        let payments = outcomes
            .iter()
            .map(|o| {
                let start = o.started.saturating_duration_since(epoch);
                Mark::new(o, start, ledger.times_recorded(&o.payment.id))
            })
            .collect();
        Self {
            length,
            payments,
            outages: outage.map(Down::of).unwrap_or_default(),
            breakers: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// The same timeline with the lanes an [`EventLog`] recorded.
    #[must_use]
    pub fn with_lanes(mut self, lanes: Lanes) -> Self {
        self.breakers = lanes.breakers;
        self.endpoints = lanes.endpoints;
        self
    }

    /// Where the run ends on a chart: its live path, or the end of an outage after it.
    #[must_use]
    pub fn end(&self) -> Duration {
        self.outages
            .iter()
            .map(|d| d.until)
            .fold(self.length, Duration::max)
    }

    /// The payments grouped by the slice of `width` they started in, from the run's start to
    /// `end` (at least one slice; a payment past `end` lands in the last).
    ///
    /// # Panics
    /// If `width` is zero.
    #[must_use]
    pub fn buckets(&self, width: Duration, end: Duration) -> Vec<Bucket> {
        assert!(!width.is_zero(), "a bucket has a width");
        let count = end.as_nanos().div_ceil(width.as_nanos()).max(1);
        let count = usize::try_from(count).expect("a chart has a reasonable number of buckets");
        let mut buckets = vec![Bucket::default(); count];
        for mark in &self.payments {
            let index = usize::try_from(mark.start.as_nanos() / width.as_nanos())
                .unwrap_or(usize::MAX)
                .min(count - 1);
            let bucket = &mut buckets[index];
            match mark.ending {
                Ending::Succeeded => *bucket.succeeded.entry(mark.server.clone()).or_default() += 1,
                Ending::Rejected => bucket.rejected += 1,
                Ending::Deferred => bucket.deferred += 1,
                Ending::Failed => bucket.failed += 1,
            }
            bucket.retries += mark.retries();
            bucket.lost += u64::from(mark.lost());
            bucket.charged_twice += mark.charged_twice();
        }
        buckets
    }
}

/// The lanes an [`EventLog`] recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lanes {
    /// One per breaker.
    pub breakers: Vec<Lane>,
    /// One per endpoint, in the order failover announced them.
    pub endpoints: Vec<Lane>,
}

/// Records the breakers' transitions and failover's health events, timed from the run's start,
/// until [`EventLog::finish`].
///
/// One task per subscription waits on its channel and stamps each event as it arrives.
#[derive(Debug)]
pub struct EventLog {
    stop: watch::Sender<bool>,
    breakers: Vec<JoinHandle<Lane>>,
    endpoints: Option<JoinHandle<Vec<Lane>>>,
}

impl EventLog {
    /// Subscribes to `breakers` and to `failover` (if any); offsets are taken from `epoch`.
    #[must_use]
    pub fn start<S, C>(
        epoch: Instant,
        breakers: &[Breaker],
        failover: Option<&FailoverHandle<S, C>>,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        let breakers = breakers
            .iter()
            .map(|breaker| {
                let mut events = breaker.subscribe();
                let mut lane = Lane::new(breaker.name(), LaneState::breaker(breaker.state()));
                let mut stopped = stop.subscribe();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            event = events.recv() => match event {
                                Some(t) => lane.enter(epoch.elapsed(), LaneState::breaker(t.to)),
                                None => break,
                            },
                            _ = stopped.changed() => {
                                while let Some(t) = events.try_recv() {
                                    lane.enter(epoch.elapsed(), LaneState::breaker(t.to));
                                }
                                break;
                            }
                        }
                    }
                    lane
                })
            })
            .collect();
        let endpoints = failover.map(|handle| {
            let mut events = handle.subscribe();
            let mut stopped = stop.subscribe();
            tokio::spawn(async move {
                let mut lanes: Vec<Lane> = Vec::new();
                let mut apply = |event: tower_failover::HealthEvent| {
                    let state = LaneState::endpoint(event.to);
                    let name = &*event.endpoint.name;
                    match lanes.iter_mut().find(|l| l.name == name) {
                        Some(lane) if event.cause != Cause::Snapshot => {
                            lane.enter(epoch.elapsed(), state);
                        }
                        Some(_) => {}
                        None => {
                            let mut lane = Lane::new(name, state);
                            // An endpoint added during the run starts when it was added.
                            if event.cause != Cause::Snapshot {
                                lane.states[0].0 = epoch.elapsed();
                            }
                            lanes.push(lane);
                        }
                    }
                };
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Some(event) => apply(event),
                            None => break,
                        },
                        _ = stopped.changed() => {
                            while let Some(event) = events.try_recv() {
                                apply(event);
                            }
                            break;
                        }
                    }
                }
                lanes
            })
        });
        Self {
            stop,
            breakers,
            endpoints,
        }
    }

    /// Stops recording; the lanes.
    pub async fn finish(self) -> Lanes {
        self.stop.send_replace(true);
        let mut lanes = Lanes::default();
        for task in self.breakers {
            lanes.breakers.push(joined(task.await));
        }
        if let Some(task) = self.endpoints {
            lanes.endpoints = joined(task.await);
        }
        lanes
    }
}

/// A recording task's result; its panic (a bug) goes on in the caller. The tasks are never
/// aborted.
fn joined<T>(result: Result<T, tokio::task::JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load::Sent, payments::Payment};

    fn outcome(epoch: Instant, id: &str, start_ms: u64, amount: u64, sent: Sent) -> Outcome {
        Outcome {
            payment: Payment {
                id: id.into(),
                amount,
            },
            started: epoch + Duration::from_millis(start_ms),
            latency: Duration::from_millis(5),
            sent,
        }
    }

    #[test]
    fn payments_land_in_the_slice_they_started_in_by_how_they_ended() {
        let epoch = Instant::now();
        let ledger = Ledger::new();
        let record = |id: &str, times: usize| {
            for _ in 0..times {
                ledger.record(&Payment {
                    id: id.into(),
                    amount: 1,
                });
            }
        };
        record("a", 1);
        record("b", 1);
        record("twice", 2);
        let outcomes = [
            outcome(epoch, "a", 0, 10, Sent::ok(Some(1)).served_by("primary")),
            outcome(epoch, "b", 99, 10, Sent::ok(Some(3)).served_by("standby")),
            outcome(
                epoch,
                "twice",
                100,
                10,
                Sent::ok(Some(2)).served_by("primary"),
            ),
            outcome(
                epoch,
                "lost",
                150,
                10,
                Sent::failed("gave up: connect", Some(3)),
            ),
            outcome(epoch, "queued", 250, 10, Sent::deferred()),
            outcome(epoch, "invalid", 260, 0, Sent::failed("422", Some(1))),
            outcome(epoch, "late", 900, 10, Sent::ok(None)),
        ];
        record("late", 1);
        let timeline = Timeline::new(epoch, Duration::from_millis(300), &outcomes, &ledger, None);
        let buckets = timeline.buckets(Duration::from_millis(100), Duration::from_millis(300));
        assert_eq!(buckets.len(), 3);
        let first = &buckets[0];
        assert_eq!(first.succeeded.get(&Some("primary".into())), Some(&1));
        assert_eq!(first.succeeded.get(&Some("standby".into())), Some(&1));
        assert_eq!((first.payments(), first.retries), (2, 2));
        let second = &buckets[1];
        assert_eq!(
            (second.payments(), second.failed, second.retries),
            (2, 1, 3)
        );
        assert_eq!((second.lost, second.charged_twice), (1, 1));
        // The last slice also holds what started after the end (the payment at 900 ms).
        let third = &buckets[2];
        assert_eq!((third.deferred, third.rejected), (1, 1));
        assert_eq!(third.succeeded.get(&None), Some(&1));
        assert_eq!(third.lost, 1, "the deferred payment was never recorded");
        assert_eq!(
            buckets.iter().map(Bucket::payments).sum::<u64>(),
            outcomes.len() as u64
        );
    }

    #[test]
    fn outages_extend_the_chart_and_lanes_end_with_the_run() {
        let epoch = Instant::now();
        let timeline = Timeline::new(
            epoch,
            Duration::from_secs(2),
            &[],
            &Ledger::new(),
            Some(Outage::Both {
                at: Duration::from_secs(1),
                lasting: Duration::from_secs(3),
            }),
        );
        assert_eq!(timeline.outages.len(), 2);
        assert_eq!(timeline.end(), Duration::from_secs(4));
        assert_eq!(
            timeline
                .buckets(Duration::from_millis(100), Duration::ZERO)
                .len(),
            1
        );

        let mut lane = Lane::new("b", LaneState::breaker(State::Closed));
        lane.enter(Duration::from_secs(1), LaneState::breaker(State::Open));
        lane.enter(Duration::from_secs(1), LaneState::breaker(State::Open));
        lane.enter(Duration::from_secs(3), LaneState::breaker(State::HalfOpen));
        assert_eq!(lane.states.len(), 3, "a repeated state is one stretch");
        let spans = lane.spans(Duration::from_secs(2));
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].from, Duration::from_secs(1));
        assert_eq!(spans[1].until, Duration::from_secs(2));
        assert_eq!(spans[1].state.tone, Tone::Down);
    }

    #[tokio::test(start_paused = true)]
    async fn the_event_log_times_breaker_transitions_from_the_run_start() {
        let breaker = Breaker::builder().name("b").build().unwrap();
        let epoch = Instant::now();
        let log = EventLog::start::<(), tower_fault::HttpClassifier>(
            epoch,
            std::slice::from_ref(&breaker),
            None,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        breaker.force_open();
        tokio::time::sleep(Duration::from_millis(200)).await;
        breaker.reset();
        let lanes = log.finish().await;
        assert!(lanes.endpoints.is_empty());
        let lane = &lanes.breakers[0];
        assert_eq!(lane.name, "b");
        let states: Vec<(u128, &str)> = lane
            .states
            .iter()
            .map(|(t, s)| (t.as_millis(), s.label))
            .collect();
        assert_eq!(
            states,
            [(0, "closed"), (300, "forced_open"), (500, "closed")]
        );
    }
}
