//! One run of the demo: the scenario (traffic, faults, outages) and the two clients driven
//! through it, each run's numbers and timeline, shared by the `chaos` binary, its fault-share
//! matrix and the end-to-end tests.

use std::time::Duration;

use metrics_util::debugging::Snapshotter;
use tokio::time::Instant;
use tower_fault::BoxError;

use crate::{
    deployment::{Deployment, StoreChoice},
    faults::FaultPlan,
    load::{self, LoadPlan},
    naive::NaiveClient,
    report::{LayerCounts, RunReport},
    stack::{ClientSettings, ProtectedClient},
    timeline::{EventLog, Timeline},
};

/// Who goes down, when, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The primary alone (failover moves to the standby).
    Primary {
        /// Into the run.
        at: Duration,
        /// How long it stays down.
        lasting: Duration,
    },
    /// Both servers: a total outage of the upstream.
    Both {
        /// Into the run.
        at: Duration,
        /// How long they stay down.
        lasting: Duration,
    },
}

impl Outage {
    /// A short description for the run's header.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Outage::Primary { at, lasting } => {
                format!("primary down from {at:.1?} for {lasting:.1?}")
            }
            Outage::Both { at, lasting } => {
                format!("both servers down from {at:.1?} for {lasting:.1?}")
            }
        }
    }

    fn schedule(&self, deployment: &Deployment) -> Vec<tokio::task::JoinHandle<()>> {
        match *self {
            Outage::Primary { at, lasting } => {
                vec![deployment.primary.schedule_outage(at, lasting)]
            }
            Outage::Both { at, lasting } => vec![
                deployment.primary.schedule_outage(at, lasting),
                deployment.standby.schedule_outage(at, lasting),
            ],
        }
    }
}

/// A named mix of faults and outages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// 14 % of writes faulted (5 % 503, 3 % 429, 3 % resets after recording, 3 % spikes) and a
    /// 1.5 s outage of the primary.
    #[default]
    Mild,
    /// 25 % of writes faulted, and the outage.
    Moderate,
    /// 40 % of writes faulted, and the outage.
    Harsh,
    /// The mild mix, and both servers down for 3 s: a total outage, which the protected client
    /// must fail fast through (storm protection).
    Blackout,
}

impl Profile {
    /// Every profile, in order.
    pub const ALL: [Profile; 4] = [
        Profile::Mild,
        Profile::Moderate,
        Profile::Harsh,
        Profile::Blackout,
    ];

    /// The profile's name on the command line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Mild => "mild",
            Profile::Moderate => "moderate",
            Profile::Harsh => "harsh",
            Profile::Blackout => "blackout",
        }
    }

    /// The profile named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The fault mix of write requests.
    #[must_use]
    pub fn plan(self, seed: u64) -> FaultPlan {
        match self {
            Profile::Mild | Profile::Blackout => FaultPlan::chaos(seed),
            Profile::Moderate => FaultPlan::with_share(0.25, seed),
            Profile::Harsh => FaultPlan::with_share(0.40, seed),
        }
    }

    /// The outage, scaled to a run (`short`: the CI run's few seconds).
    #[must_use]
    pub fn outage(self, short: bool) -> Outage {
        let secs =
            |long: f64, quick: f64| Duration::from_secs_f64(if short { quick } else { long });
        match self {
            Profile::Mild | Profile::Moderate | Profile::Harsh => Outage::Primary {
                at: secs(1.0, 0.2),
                lasting: secs(1.5, 0.4),
            },
            Profile::Blackout => Outage::Both {
                at: secs(1.0, 0.2),
                lasting: secs(3.0, 1.0),
            },
        }
    }
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Payments sent.
    pub requests: usize,
    /// Concurrency and rate.
    pub load: LoadPlan,
    /// Faults of write requests.
    pub plan: FaultPlan,
    /// An outage during the run, if any.
    pub outage: Option<Outage>,
    /// Where the servers keep idempotency records.
    pub store: StoreChoice,
    /// Seed of the traffic, the faults and the clients' jitter.
    pub seed: u64,
    /// Share of invalid payments (answered 422).
    pub invalid: f64,
    /// How long the protected client's worker may take to re-drive its queue after the run.
    pub redrive_limit: Duration,
}

/// One run's result: the numbers and what happened over time.
#[derive(Debug, Clone)]
pub struct Run {
    /// The numbers.
    pub report: RunReport,
    /// The payments, outages and layer states over time.
    pub timeline: Timeline,
}

/// The naive client's run: a reqwest retry loop against the primary only.
///
/// # Errors
/// The servers could not start.
pub async fn naive(scenario: &Scenario, progress: bool) -> Result<Run, BoxError> {
    let deployment = Deployment::start(&scenario.plan, &scenario.store).await?;
    let client = NaiveClient::new(
        deployment.primary.url("/payments"),
        3,
        Duration::from_millis(100),
    );
    let payments = load::payments(scenario.requests, scenario.seed, scenario.invalid);
    let bar = bar(payments.len(), "naive", progress);
    let started = Instant::now();
    let _outage = scenario.outage.map(|o| o.schedule(&deployment));
    let outcomes = load::drive(&payments, scenario.load, &bar, |payment| {
        let client = client.clone();
        async move { client.send(&payment).await }
    })
    .await;
    bar.finish_and_clear();
    let wall = started.elapsed();
    let report = RunReport::new(
        "naive",
        &outcomes,
        &deployment.ledger,
        None,
        deployment.faults(),
        wall,
    );
    let timeline = Timeline::new(
        started,
        wall,
        &outcomes,
        &deployment.ledger,
        scenario.outage,
    );
    Ok(Run { report, timeline })
}

/// The protected client's run: the live path through the suite's stack, then the re-drive of
/// what it queued (the report keeps both apart).
///
/// `metrics` must be the snapshotter of the installed recorder: the layers' counters are read
/// from it (and reset by the read).
///
/// # Errors
/// The servers could not start, the stack could not be built, or the queue failed.
pub async fn protected(
    scenario: &Scenario,
    metrics: &Snapshotter,
    progress: bool,
) -> Result<Run, BoxError> {
    // Counters are swapped to zero by a snapshot: start from a clean slate.
    drop(metrics.snapshot());
    let deployment = Deployment::start(&scenario.plan, &scenario.store).await?;
    let settings = ClientSettings {
        seed: scenario.seed,
        ..ClientSettings::default()
    };
    let client = ProtectedClient::new(
        &deployment.primary.url(""),
        &deployment.standby.url(""),
        &settings,
    )?;
    let payments = load::payments(scenario.requests, scenario.seed, scenario.invalid);
    let bar = bar(payments.len(), "protected", progress);
    let started = Instant::now();
    let events = EventLog::start(started, client.breakers(), Some(client.failover()));
    let outage = scenario.outage.map(|o| o.schedule(&deployment));
    let outcomes = load::drive(&payments, scenario.load, &bar, |payment| {
        let client = client.clone();
        async move { client.send(&payment).await }
    })
    .await;
    bar.finish_and_clear();
    let wall = started.elapsed();
    let lanes = events.finish().await;
    let mut report = RunReport::new(
        "protected",
        &outcomes,
        &deployment.ledger,
        Some(LayerCounts::from_snapshot(metrics.snapshot())),
        deployment.faults(),
        wall,
    );
    // Re-drive once the upstream is back: the outage (if any) ends first.
    for handle in outage.into_iter().flatten() {
        let _ = handle.await;
    }
    let drained = client.drain(scenario.redrive_limit).await?;
    report.add_redrive(&outcomes, &deployment.ledger, drained);
    // The ledger after the re-drive: a deferred payment the worker delivered is not lost.
    let timeline = Timeline::new(
        started,
        wall,
        &outcomes,
        &deployment.ledger,
        scenario.outage,
    )
    .with_lanes(lanes);
    Ok(Run { report, timeline })
}

fn bar(n: usize, label: &str, progress: bool) -> indicatif::ProgressBar {
    if progress {
        load::progress_bar(n, label)
    } else {
        indicatif::ProgressBar::hidden()
    }
}
