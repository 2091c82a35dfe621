//! The fault-share matrix: the naive and the protected client under growing shares of faulted
//! writes, with and without an outage of the primary, at a modest and a high rate, plus a total
//! outage. It shows that the protected stack degrades gracefully: it does better, not worse,
//! as faults grow, and still fails fast when everything is down.

use std::{fmt::Write as _, time::Duration};

use metrics_util::debugging::Snapshotter;
use tower_fault::BoxError;

use crate::{
    deployment::StoreChoice,
    faults::FaultPlan,
    load::LoadPlan,
    report::RunReport,
    run::{self, Outage, Scenario},
};

/// What the matrix covers.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixPlan {
    /// Shares of write requests faulted (503, 429, resets after recording, spikes: 2:1:1:1).
    pub shares: Vec<f64>,
    /// The primary's outage, run as a second row per share (`None`: no outage rows).
    pub outage: Option<Outage>,
    /// Payment rates (per second).
    pub rates: Vec<f64>,
    /// Payments per run.
    pub requests: usize,
    /// Payments in flight at most.
    pub concurrency: usize,
    /// Also a total outage (both servers down for the whole run) at the highest rate.
    pub blackout: bool,
    /// Seed of everything.
    pub seed: u64,
}

impl MatrixPlan {
    /// The full matrix: shares 0–40 % by 10, with and without a 1.5 s outage of the primary,
    /// at 150/s and 1 000/s, 2 000 payments a run, and the total outage.
    #[must_use]
    pub fn full(seed: u64) -> Self {
        Self {
            shares: vec![0.0, 0.1, 0.2, 0.3, 0.4],
            outage: Some(Outage::Primary {
                at: Duration::from_secs(1),
                lasting: Duration::from_millis(1500),
            }),
            rates: vec![150.0, 1000.0],
            requests: 2000,
            concurrency: 256,
            blackout: true,
            seed,
        }
    }

    /// The matrix CI runs: the same shares and rows at 1 000/s with 400 payments a run (a
    /// shorter outage, once the client has been running for 150 ms), and the total outage.
    #[must_use]
    pub fn short(seed: u64) -> Self {
        Self {
            outage: Some(Outage::Primary {
                at: Duration::from_millis(150),
                lasting: Duration::from_millis(300),
            }),
            rates: vec![1000.0],
            requests: 400,
            ..Self::full(seed)
        }
    }

    /// The cells, in table order.
    #[must_use]
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &rate in &self.rates {
            for &share in &self.shares {
                cells.push(Cell {
                    share,
                    outage: None,
                    rate,
                });
                if let Some(outage) = self.outage {
                    cells.push(Cell {
                        share,
                        outage: Some(outage),
                        rate,
                    });
                }
            }
        }
        if self.blackout {
            let rate = self.rates.iter().copied().fold(0.0, f64::max);
            // Down for longer than the whole run: every live attempt meets the outage.
            let lasting = Duration::from_secs_f64(self.requests as f64 / rate.max(1.0) + 1.0);
            cells.push(Cell {
                share: 0.0,
                outage: Some(Outage::Both {
                    at: Duration::ZERO,
                    lasting,
                }),
                rate,
            });
        }
        cells
    }

    fn scenario(&self, cell: &Cell) -> Scenario {
        Scenario {
            requests: self.requests,
            load: LoadPlan {
                concurrency: self.concurrency,
                rate: Some(cell.rate),
            },
            plan: FaultPlan::with_share(cell.share, self.seed),
            outage: cell.outage,
            store: StoreChoice::Memory,
            seed: self.seed,
            invalid: 0.0,
            redrive_limit: Duration::from_secs(60),
        }
    }
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Share of writes faulted.
    pub share: f64,
    /// The outage, if any.
    pub outage: Option<Outage>,
    /// Payments per second.
    pub rate: f64,
}

impl Cell {
    /// `"20 %"`, `"primary"`, …: the row's labels.
    #[must_use]
    pub fn labels(&self) -> (String, &'static str, String) {
        let outage = match self.outage {
            None => "none",
            Some(Outage::Primary { .. }) => "primary",
            Some(Outage::Both { .. }) => "total",
        };
        (
            format!("{:.0} %", self.share * 100.0),
            outage,
            format!("{:.0}/s", self.rate),
        )
    }
}

/// A row's two runs.
#[derive(Debug, Clone)]
pub struct CellResult {
    /// The row.
    pub cell: Cell,
    /// The naive client's run.
    pub naive: RunReport,
    /// The protected client's run.
    pub protected: RunReport,
}

/// Runs every cell of `plan`, naive then protected, calling `done` after each.
///
/// # Errors
/// A run that could not start (see [`run::protected`]).
pub async fn run(
    plan: &MatrixPlan,
    metrics: &Snapshotter,
    mut done: impl FnMut(&CellResult),
) -> Result<Vec<CellResult>, BoxError> {
    let mut results = Vec::new();
    for cell in plan.cells() {
        let scenario = plan.scenario(&cell);
        let naive = run::naive(&scenario, false).await?.report;
        let protected = run::protected(&scenario, metrics, false).await?.report;
        let result = CellResult {
            cell,
            naive,
            protected,
        };
        done(&result);
        results.push(result);
    }
    Ok(results)
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }
}

/// The matrix as a Markdown table: for each client, lost and duplicated valid payments,
/// payments it was told failed that were charged anyway, attempts per payment, p99 latency and
/// wall time; for the protected client, also what it queued and what was still lost after the
/// queue was re-driven.
#[must_use]
pub fn render(results: &[CellResult]) -> String {
    let mut out = String::from(
        "| faulted | outage | rate | naive lost | naive dup | naive failed but charged | naive attempts/payment | naive p99 | naive wall | protected lost (live) | protected dup | protected failed but charged | protected attempts/payment | protected p99 | protected wall | deferred | lost after re-drive |\n\
         |---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let (share, outage, rate) = r.cell.labels();
        let (n, p) = (&r.naive, &r.protected);
        let after = p
            .redrive
            .map_or_else(|| "-".to_owned(), |c| c.lost.to_string());
        let _ = writeln!(
            out,
            "| {share} | {outage} | {rate} | {} | {} | {} | {:.2} | {} | {:.1} s | {} | {} | {} | {:.2} | {} | {:.1} s | {} | {after} |",
            n.lost,
            n.duplicated,
            n.recorded_but_failed,
            n.attempts_per_payment(),
            ms(n.latency.p99),
            n.wall.as_secs_f64(),
            p.lost,
            p.duplicated,
            p.recorded_but_failed,
            p.attempts_per_payment(),
            ms(p.latency.p99),
            p.wall.as_secs_f64(),
            p.deferred,
        );
    }
    out
}

/// What the matrix must show, checked row by row; the failures, as sentences.
///
/// * the protected client never duplicates a payment, live or after the re-drive;
/// * it loses no valid payment on the live path up to 30 % of writes faulted, and never more
///   than the naive client;
/// * nothing is lost after the re-drive;
/// * under a total outage it fails fast: at most 1.3 attempts per payment.
#[must_use]
pub fn violations(results: &[CellResult]) -> Vec<String> {
    let mut found = Vec::new();
    for r in results {
        let (share, outage, rate) = r.cell.labels();
        let row = format!("{share} faulted, outage {outage}, {rate}");
        let p = &r.protected;
        let after = p.redrive.unwrap_or_default();
        if p.duplicated > 0 || after.duplicated > 0 {
            found.push(format!(
                "{row}: the protected client duplicated {} payment(s) ({} after re-drive)",
                p.duplicated, after.duplicated
            ));
        }
        let total_outage = matches!(r.cell.outage, Some(Outage::Both { .. }));
        if !total_outage && r.cell.share <= 0.3 + 1e-9 && p.lost > 0 {
            found.push(format!(
                "{row}: the protected client lost {} payment(s) on the live path",
                p.lost
            ));
        }
        if !total_outage && p.lost > r.naive.lost {
            found.push(format!(
                "{row}: the protected client lost more than the naive one ({} > {})",
                p.lost, r.naive.lost
            ));
        }
        if after.lost > 0 {
            found.push(format!(
                "{row}: {} payment(s) still lost after the re-drive",
                after.lost
            ));
        }
        if total_outage && p.attempts_per_payment() > 1.3 {
            found.push(format!(
                "{row}: {:.2} attempts per payment during a total outage (at most 1.3)",
                p.attempts_per_payment()
            ));
        }
    }
    found
}
