//! The end-of-run report: what the client saw, what the servers recorded, and the table that
//! puts runs side by side.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use metrics_util::debugging::{DebugValue, Snapshot};

use crate::{
    deployment::IDEMPOTENCY_NAME,
    faults::FaultCounts,
    load::Outcome,
    payments::Ledger,
    stack::{self, DrainReport},
};

/// Latency percentiles of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (all zero when empty).
    #[must_use]
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Self {
            p50: percentile(&sorted, 0.50),
            p95: percentile(&sorted, 0.95),
            p99: percentile(&sorted, 0.99),
        }
    }
}

/// The nearest-rank `q`-quantile of sorted samples (`Duration::ZERO` when empty).
#[must_use]
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the suite's layers counted during a run (absent for a client without them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerCounts {
    /// Attempts sent (first attempts included).
    pub attempts: u64,
    /// Transitions of a breaker to open.
    pub breaker_opens: u64,
    /// Attempts failover sent to the standby.
    pub failovers: u64,
    /// Requests the servers answered by replaying a stored response.
    pub replays: u64,
}

impl LayerCounts {
    /// Reads the counters of the [`crate::stack`] client and the [`crate::deployment`] servers
    /// from a `metrics-util` debugging snapshot (the metric names are DESIGN.md's).
    #[must_use]
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut counts = Self::default();
        for (key, _, _, value) in snapshot.into_vec() {
            let DebugValue::Counter(n) = value else {
                continue;
            };
            let key = key.key();
            let label = |name: &str| {
                key.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
            };
            let name = label("name").unwrap_or_default();
            match key.name() {
                "retry_attempts_total" if name == stack::NAME => counts.attempts += n,
                "breaker_transitions_total"
                    if name.starts_with(stack::NAME) && label("to").as_deref() == Some("open") =>
                {
                    counts.breaker_opens += n;
                }
                "failover_requests_total"
                    if name == stack::NAME && label("endpoint").as_deref() == Some("standby") =>
                {
                    counts.failovers += n;
                }
                "idempotency_requests_total"
                    if name == IDEMPOTENCY_NAME
                        && label("result").as_deref() == Some("replayed") =>
                {
                    counts.replays += n;
                }
                _ => {}
            }
        }
        counts
    }
}

/// What re-driving a client's queue after the live run achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedriveCounts {
    /// Queue entries delivered by the worker.
    pub delivered: u64,
    /// Entries the worker gave up on (dead letters).
    pub dead_lettered: u64,
    /// Entries still queued when the re-drive stopped.
    pub still_queued: u64,
    /// Rows the servers wrote, after the re-drive.
    pub recorded: u64,
    /// Valid payments never recorded, after the re-drive.
    pub lost: u64,
    /// Double charges, after the re-drive.
    pub duplicated: u64,
}

/// One run's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Column title.
    pub label: String,
    /// Payments sent.
    pub requests: u64,
    /// Payments the client saw succeed.
    pub succeeded: u64,
    /// Payments the client saw fail, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Attempts sent (first attempts included).
    pub attempts: u64,
    /// Counters of the suite's layers, if the run used them.
    pub layers: Option<LayerCounts>,
    /// Valid payments sent (each should be recorded exactly once).
    pub unique_sent: u64,
    /// Rows the servers wrote.
    pub recorded: u64,
    /// Valid payments never recorded.
    pub lost: u64,
    /// Rows beyond the first for a payment: double charges.
    pub duplicated: u64,
    /// Payments the client reported failed although the server recorded them (a deferred
    /// payment was not reported failed: it was queued).
    pub recorded_but_failed: u64,
    /// Payments the live path could not deliver and queued for re-drive.
    pub deferred: u64,
    /// What re-driving the queue achieved, for a client that queues.
    pub redrive: Option<RedriveCounts>,
    /// Client-side latency of a payment, retries included.
    pub latency: Percentiles,
    /// Faults the servers injected.
    pub faults: FaultCounts,
    /// Wall time of the run.
    pub wall: Duration,
}

impl RunReport {
    /// Builds the report of a run from its outcomes and the ledger the servers wrote.
    ///
    /// With `layers`, attempts are the layers' count (the suite's retry layer counts them in its
    /// metrics); without, they are what the client counted itself (the naive loop does).
    #[must_use]
    pub fn new(
        label: &str,
        outcomes: &[Outcome],
        ledger: &Ledger,
        layers: Option<LayerCounts>,
        faults: FaultCounts,
        wall: Duration,
    ) -> Self {
        let mut failed = BTreeMap::new();
        let (mut lost, mut duplicated, mut recorded_but_failed, mut unique_sent) = (0, 0, 0, 0);
        let mut deferred = 0;
        let mut client_attempts = 0u64;
        for outcome in outcomes {
            client_attempts += u64::from(outcome.sent.attempts.unwrap_or(1));
            let times = u64::from(ledger.times_recorded(&outcome.payment.id));
            if let Some(reason) = &outcome.sent.failure {
                *failed.entry(reason.clone()).or_insert(0) += 1;
                if outcome.sent.deferred {
                    deferred += 1;
                } else if times > 0 {
                    recorded_but_failed += 1;
                }
            }
            if outcome.payment.amount > 0 {
                unique_sent += 1;
                if times == 0 {
                    lost += 1;
                }
            }
            duplicated += times.saturating_sub(1);
        }
        let latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        let requests = outcomes.len() as u64;
        Self {
            label: label.to_owned(),
            requests,
            succeeded: requests - failed.values().sum::<u64>(),
            failed,
            attempts: layers.map_or(client_attempts, |l| l.attempts),
            layers,
            unique_sent,
            recorded: ledger.stats().records,
            lost,
            duplicated,
            recorded_but_failed,
            deferred,
            redrive: None,
            latency: Percentiles::of(&latencies),
            faults,
            wall,
        }
    }

    /// Counts what the re-drive of the queue achieved, reading the ledger again after it.
    pub fn add_redrive(&mut self, outcomes: &[Outcome], ledger: &Ledger, drained: DrainReport) {
        let (mut lost, mut duplicated) = (0, 0);
        for outcome in outcomes {
            let times = u64::from(ledger.times_recorded(&outcome.payment.id));
            if outcome.payment.amount > 0 && times == 0 {
                lost += 1;
            }
            duplicated += times.saturating_sub(1);
        }
        self.redrive = Some(RedriveCounts {
            delivered: drained.delivered,
            dead_lettered: drained.dead_lettered,
            still_queued: drained.pending,
            recorded: ledger.stats().records,
            lost,
            duplicated,
        });
    }

    /// Attempts per payment sent (first attempts included).
    #[must_use]
    pub fn attempts_per_payment(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.attempts as f64 / self.requests as f64
        }
    }

    /// Whether every valid payment ended up recorded exactly once, after the re-drive if the
    /// client queues.
    #[must_use]
    pub fn exactly_once_in_the_end(&self) -> bool {
        match &self.redrive {
            Some(r) => r.lost == 0 && r.duplicated == 0,
            None => self.exactly_once(),
        }
    }

    /// Payments that failed, whatever the reason.
    #[must_use]
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Attempts beyond the first of each payment.
    #[must_use]
    pub const fn retries(&self) -> u64 {
        self.attempts.saturating_sub(self.requests)
    }

    /// Whether every valid payment was recorded exactly once.
    #[must_use]
    pub const fn exactly_once(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }

    /// The run's outcome in a sentence: `"naive: 156 payment(s) LOST, 14 DUPLICATED (charged
    /// twice)."`, with what the re-drive achieved for a client that queued payments.
    #[must_use]
    pub fn verdict(&self) -> String {
        let live = if self.exactly_once() {
            format!(
                "{}: every valid payment recorded exactly once ({} of {})",
                self.label, self.unique_sent, self.unique_sent
            )
        } else {
            format!(
                "{}: {} payment(s) LOST, {} DUPLICATED (charged twice)",
                self.label, self.lost, self.duplicated
            )
        };
        match &self.redrive {
            Some(after) if self.deferred > 0 => format!(
                "{live}; {} deferred, and after the re-drive {} lost, {} duplicated.",
                self.deferred, after.lost, after.duplicated
            ),
            _ => format!("{live}."),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One row of the table: its name (a sub-row's starts with two spaces) and a cell per run.
pub type Row = (String, Vec<String>);

/// The rows of the table that puts `runs` side by side, as text cells (`-` where a run has no
/// such number).
#[must_use]
pub fn rows(runs: &[RunReport]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&RunReport) -> String| {
        rows.push((name.to_owned(), runs.iter().map(f).collect()));
    };
    let layer = |f: fn(&LayerCounts) -> u64| {
        move |r: &RunReport| {
            r.layers
                .as_ref()
                .map_or_else(|| "-".to_owned(), |l| f(l).to_string())
        }
    };
    row("payments sent", &|r| r.requests.to_string());
    row("succeeded", &|r| r.succeeded.to_string());
    row("failed (by reason)", &|r| r.failed_total().to_string());
    let mut reasons: Vec<&String> = runs.iter().flat_map(|r| r.failed.keys()).collect();
    reasons.sort();
    reasons.dedup();
    for reason in reasons {
        row(&format!("  {reason}"), &|r| {
            r.failed.get(reason).copied().unwrap_or(0).to_string()
        });
    }
    row("attempts", &|r| r.attempts.to_string());
    row("attempts per payment", &|r| {
        format!("{:.2}", r.attempts_per_payment())
    });
    row("retries", &|r| r.retries().to_string());
    row("breaker opens", &layer(|l| l.breaker_opens));
    row("failovers", &layer(|l| l.failovers));
    row("replays (server)", &layer(|l| l.replays));
    row("valid payments sent", &|r| r.unique_sent.to_string());
    row("payments recorded", &|r| r.recorded.to_string());
    row("LOST", &|r| r.lost.to_string());
    row("DUPLICATED", &|r| r.duplicated.to_string());
    row("failed but charged", &|r| r.recorded_but_failed.to_string());
    let redrive = |f: fn(&RedriveCounts) -> u64| {
        move |r: &RunReport| {
            r.redrive
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| f(c).to_string())
        }
    };
    row("deferred (queued)", &|r| {
        if r.redrive.is_some() {
            r.deferred.to_string()
        } else {
            "-".to_owned()
        }
    });
    row("  delivered by re-drive", &redrive(|c| c.delivered));
    row("  dead-lettered", &redrive(|c| c.dead_lettered));
    row("payments recorded after re-drive", &redrive(|c| c.recorded));
    row("LOST after re-drive", &redrive(|c| c.lost));
    row("DUPLICATED after re-drive", &redrive(|c| c.duplicated));
    row("latency p50", &|r| ms(r.latency.p50));
    row("latency p95", &|r| ms(r.latency.p95));
    row("latency p99", &|r| ms(r.latency.p99));
    row("faults injected", &|r| r.faults.total().to_string());
    row("  503 unavailable", &|r| r.faults.unavailable.to_string());
    row("  429 + Retry-After", &|r| r.faults.throttled.to_string());
    row("  reset after recording", &|r| {
        r.faults.reset_after_processing.to_string()
    });
    row("  latency spike", &|r| r.faults.spikes.to_string());
    row("  reset by the outage", &|r| {
        r.faults.outage_resets.to_string()
    });
    row("wall time", &|r| format!("{:.2} s", r.wall.as_secs_f64()));
    rows
}

/// Renders runs side by side as a plain-text table.
#[must_use]
pub fn render(runs: &[RunReport]) -> String {
    let rows = rows(runs);
    let first = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| {
            rows.iter()
                .map(|(_, cells)| cells[i].len())
                .chain([runs[i].label.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:first$}", "");
    for (run, w) in runs.iter().zip(&widths) {
        let _ = write!(out, "  {:>w$}", run.label);
    }
    out.push('\n');
    let rule = first + widths.iter().map(|w| w + 2).sum::<usize>();
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    for (name, cells) in &rows {
        let _ = write!(out, "{name:first$}");
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {cell:>w$}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        load::Sent,
        payments::{Ledger, Payment},
    };

    fn outcome(id: &str, amount: u64, failure: Option<&str>, attempts: u32) -> Outcome {
        Outcome {
            payment: Payment {
                id: id.into(),
                amount,
            },
            latency: Duration::from_millis(u64::from(attempts) * 10),
            started: tokio::time::Instant::now(),
            sent: Sent {
                failure: failure.map(Into::into),
                attempts: Some(attempts),
                deferred: false,
                server: None,
            },
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p95, Duration::from_millis(95));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(
            percentile(&[Duration::from_secs(1)], 0.0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn counts_lost_duplicated_and_failed_but_charged() {
        let ledger = Ledger::new();
        let p = |id: &str| Payment {
            id: id.into(),
            amount: 1,
        };
        ledger.record(&p("ok"));
        ledger.record(&p("twice"));
        ledger.record(&p("twice"));
        ledger.record(&p("charged"));
        let outcomes = [
            outcome("ok", 1, None, 1),
            outcome("twice", 1, None, 2),
            outcome("charged", 1, Some("gave up: reset"), 3),
            outcome("lost", 1, Some("gave up: 503"), 3),
            outcome("invalid", 0, Some("422"), 1),
        ];
        let report = RunReport::new(
            "naive",
            &outcomes,
            &ledger,
            None,
            FaultCounts::default(),
            Duration::ZERO,
        );
        assert_eq!(report.requests, 5);
        assert_eq!(report.succeeded, 2);
        assert_eq!(report.failed_total(), 3);
        assert_eq!(report.attempts, 10);
        assert_eq!(report.retries(), 5);
        assert_eq!(report.unique_sent, 4);
        assert_eq!(report.recorded, 4);
        assert_eq!(report.lost, 1);
        assert_eq!(report.duplicated, 1);
        assert_eq!(report.recorded_but_failed, 1);
        assert!(!report.exactly_once());

        let table = render(&[report]);
        assert!(table.contains("naive"));
        let lost_row = table.lines().find(|l| l.starts_with("LOST")).unwrap();
        assert!(lost_row.trim_end().ends_with('1'), "{lost_row}");
        assert!(table.contains("  gave up: 503"));
        let breaker = table
            .lines()
            .find(|l| l.starts_with("breaker opens"))
            .unwrap();
        assert!(breaker.trim_end().ends_with('-'));
    }

    #[test]
    fn layer_counts_are_read_from_the_metrics() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("retry_attempts_total", "name" => "chaos").increment(7);
            metrics::counter!("retry_attempts_total", "name" => "other").increment(100);
            for name in ["chaos-primary", "chaos-upstream"] {
                metrics::counter!("breaker_transitions_total", "name" => name, "from" => "closed", "to" => "open")
                    .increment(1);
            }
            metrics::counter!("breaker_transitions_total", "name" => "chaos-primary", "from" => "open", "to" => "half_open")
                .increment(1);
            metrics::counter!("failover_requests_total", "name" => "chaos", "endpoint" => "standby").increment(3);
            metrics::counter!("failover_requests_total", "name" => "chaos", "endpoint" => "primary").increment(9);
            metrics::counter!("idempotency_requests_total", "name" => "payments", "result" => "replayed").increment(2);
            metrics::counter!("idempotency_requests_total", "name" => "payments", "result" => "executed").increment(5);
        });
        let counts = LayerCounts::from_snapshot(snapshotter.snapshot());
        assert_eq!(
            counts,
            LayerCounts {
                attempts: 7,
                breaker_opens: 2,
                failovers: 3,
                replays: 2,
            }
        );
    }
}
