//! The background task that runs active probes.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::{sync::Notify, time::Instant};
use tower_fault::{EndpointId, SeededRng};

use tower_fault::time::saturating_after;

use crate::{
    config::{InitialState, ProbeConfig},
    entry::Entry,
    probe::{Probe, ProbeFuture, ProbeOutcome},
    shared::Shared,
    snapshot::Snapshot,
};

struct Scheduled<S> {
    entry: Arc<Entry<S>>,
    due: Instant,
    running: bool,
}

/// Spawns the probe task. It holds only a `Weak` to the set and exits as soon as the set is
/// dropped (the set's `Drop` wakes it).
pub(crate) fn spawn<S, C>(
    shared: &Arc<Shared<S, C>>,
    probe: Arc<dyn Probe>,
    rt: &tokio::runtime::Handle,
    seed: u64,
) where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    let Some(cfg) = shared.probe.clone() else {
        return;
    };
    let weak = Arc::downgrade(shared);
    let wake = shared.prober_wake.clone();
    let probe_first = shared.initial == InitialState::ProbeFirst;
    rt.spawn(run(
        weak,
        wake,
        probe,
        cfg,
        SeededRng::new(seed ^ 0x9B0B_E5EE),
        probe_first,
    ));
}

async fn run<S, C>(
    weak: Weak<Shared<S, C>>,
    wake: Arc<Notify>,
    probe: Arc<dyn Probe>,
    cfg: ProbeConfig,
    mut rng: SeededRng,
    probe_first: bool,
) where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    let mut sched: Vec<Scheduled<S>> = Vec::new();
    let mut generation = u64::MAX;
    let mut running = FuturesUnordered::new();
    loop {
        let next_due = {
            let Some(shared) = weak.upgrade() else { return };
            let now = Instant::now();
            let snap = shared.load_snapshot();
            if snap.generation != generation {
                generation = snap.generation;
                sync_schedule(&mut sched, &snap, now, || {
                    if probe_first {
                        Duration::ZERO
                    } else {
                        rng.duration_between(Duration::ZERO, cfg.jitter)
                    }
                });
            }
            drop(snap);
            drop(shared);
            for s in &mut sched {
                if running.len() >= cfg.max_concurrency {
                    break;
                }
                if !s.running && s.due <= now {
                    s.running = true;
                    running.push(timed(
                        probe.check(&s.entry.info),
                        s.entry.info.id,
                        cfg.timeout,
                    ));
                }
            }
            let can_start = running.len() < cfg.max_concurrency;
            sched
                .iter()
                .filter(|s| !s.running && can_start)
                .map(|s| s.due)
                .min()
        };
        tokio::select! {
            Some((id, outcome)) = running.next(), if !running.is_empty() => {
                let Some(shared) = weak.upgrade() else { return };
                if let Some(s) = sched.iter_mut().find(|s| s.entry.info.id == id) {
                    s.running = false;
                    shared.on_probe(&s.entry, outcome);
                    let interval = if s.entry.is_healthy() { cfg.interval } else { cfg.unhealthy_interval() };
                    s.due = saturating_after(Instant::now(), interval.saturating_add(rng.duration_between(Duration::ZERO, cfg.jitter)));
                }
            }
            () = sleep_until_opt(next_due) => {}
            () = wake.notified() => {}
        }
    }
}

/// Brings the schedule in line with the set's endpoints: forgets removed ones, and schedules
/// each new one `first_delay()` from `now`.
fn sync_schedule<S>(
    sched: &mut Vec<Scheduled<S>>,
    snap: &Snapshot<S>,
    now: Instant,
    mut first_delay: impl FnMut() -> Duration,
) {
    sched.retain(|s| snap.entries.iter().any(|e| Arc::ptr_eq(e, &s.entry)));
    for e in &snap.entries {
        if !sched.iter().any(|s| Arc::ptr_eq(&s.entry, e)) {
            sched.push(Scheduled {
                entry: e.clone(),
                due: saturating_after(now, first_delay()),
                running: false,
            });
        }
    }
}

/// One probe of endpoint `id` under `timeout` (a timed-out probe is a failed probe).
async fn timed(
    check: ProbeFuture,
    id: EndpointId,
    timeout: Duration,
) -> (EndpointId, ProbeOutcome) {
    let outcome = tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| ProbeOutcome::unhealthy(format!("probe timed out after {timeout:?}")));
    (id, outcome)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
