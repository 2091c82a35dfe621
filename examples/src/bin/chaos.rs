//! The chaos demo: what the suite is for, in under 30 seconds.
//!
//! Starts a payments service twice on loopback (primary and standby, with a shared
//! idempotency store), injects faults (503s, 429s with `Retry-After`, latency spikes, resets
//! after the payment was recorded, and an outage of the primary), and sends payments through
//! the suite's client stack — and, with `--naive`, through a plain reqwest retry loop first.
//!
//! ```text
//! cargo run --release -p resilience-examples --bin chaos -- --naive
//! ```
//!
//! Exit status: 0 when the protected run recorded every valid payment exactly once, 1 when it
//! lost or duplicated one, 2 for bad flags, 3 when the environment failed (e.g. Redis
//! unreachable).

use std::{process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser, error::ErrorKind};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use resilience_examples::{
    deployment::{Deployment, StoreChoice},
    faults::FaultPlan,
    load::{self, LoadPlan},
    naive::NaiveClient,
    report::{LayerCounts, RunReport, render},
    stack::{ClientSettings, ProtectedClient},
};
use tokio::time::Instant;
use tower_fault::BoxError;

/// Sends payments through a faulty network twice — with a naive client and with the tower
/// resilience suite — and counts lost and duplicated payments.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Args {
    /// Payments to send [default: 600, 200 with --short].
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: Option<u64>,
    /// Payments in flight at once.
    #[arg(long, short = 'c', default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Payments started per second, 0 for no limit [default: 150, 200 with --short].
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Seed of the traffic, the faults and every jitter.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also run the same traffic through a plain reqwest client with a naive retry loop.
    #[arg(long)]
    naive: bool,
    /// Keep idempotency records in Redis at this URL (e.g. redis://127.0.0.1:6379) instead of
    /// memory.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// A quick run for CI: fewer payments, a shorter outage.
    #[arg(long)]
    short: bool,
    /// Seconds into each run when the primary goes down [default: 1.0, 0.2 with --short].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    outage_at: Option<f64>,
    /// Seconds the primary stays down, 0 for no outage [default: 1.5, 0.4 with --short].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    outage_for: Option<f64>,
    /// Share of write requests answered 503.
    #[arg(long, value_name = "SHARE", default_value_t = 0.05, value_parser = parse_share)]
    unavailable: f64,
    /// Share of write requests answered 429 with `Retry-After: 1`.
    #[arg(long, value_name = "SHARE", default_value_t = 0.03, value_parser = parse_share)]
    throttled: f64,
    /// Share of write requests processed, then answered with a connection reset.
    #[arg(long, value_name = "SHARE", default_value_t = 0.03, value_parser = parse_share)]
    reset_after: f64,
    /// Share of write requests delayed 100-400 ms.
    #[arg(long, value_name = "SHARE", default_value_t = 0.03, value_parser = parse_share)]
    spikes: f64,
    /// Share of payments with an invalid (zero) amount, which the service rejects with 422.
    #[arg(long, value_name = "SHARE", default_value_t = 0.01, value_parser = parse_share)]
    invalid: f64,
    /// Log the layers' events (breaker transitions, endpoint health) to stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a share between 0 and 1"))
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && (0.0..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a duration between 0 and 3600 seconds"))
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a rate"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} is not a rate (payments per second, 0 for no limit)"
        ))
    }
}

/// The flags, resolved.
#[derive(Debug)]
struct Scenario {
    requests: usize,
    load: LoadPlan,
    plan: FaultPlan,
    outage: Option<(Duration, Duration)>,
    store: StoreChoice,
    seed: u64,
    invalid: f64,
    naive: bool,
}

impl Scenario {
    fn from_args(args: Args) -> Result<Self, String> {
        let short = args.short;
        let pick =
            |v: Option<f64>, long: f64, quick: f64| v.unwrap_or(if short { quick } else { long });
        let plan = FaultPlan {
            unavailable: args.unavailable,
            throttled: args.throttled,
            reset_after_processing: args.reset_after,
            spike: args.spikes,
            seed: args.seed,
            ..FaultPlan::default()
        };
        plan.validate().map_err(|e| e.to_string())?;
        let outage_for = pick(args.outage_for, 1.5, 0.4);
        let outage = (outage_for > 0.0).then(|| {
            (
                Duration::from_secs_f64(pick(args.outage_at, 1.0, 0.2)),
                Duration::from_secs_f64(outage_for),
            )
        });
        let rate = pick(args.rate, 150.0, 200.0);
        Ok(Self {
            requests: usize::try_from(args.requests.unwrap_or(if short { 200 } else { 600 }))
                .map_err(|e| e.to_string())?,
            load: LoadPlan {
                concurrency: usize::try_from(args.concurrency).map_err(|e| e.to_string())?,
                rate: (rate > 0.0).then_some(rate),
            },
            plan,
            outage,
            store: args.redis.map_or(StoreChoice::Memory, StoreChoice::Redis),
            seed: args.seed,
            invalid: args.invalid,
            naive: args.naive,
        })
    }

    fn describe(&self) -> String {
        let pct = |v: f64| format!("{:.0}%", v * 100.0);
        let rate = self
            .load
            .rate
            .map_or_else(|| "unlimited".to_owned(), |r| format!("{r}/s"));
        let outage = self.outage.map_or_else(
            || "no outage".to_owned(),
            |(at, len)| format!("primary down from {at:.1?} for {len:.1?}"),
        );
        let store = match &self.store {
            StoreChoice::Memory => "memory (shared by both servers)".to_owned(),
            StoreChoice::Redis(url) => format!("redis at {url}"),
        };
        format!(
            "chaos: {} payments, concurrency {}, rate {rate}, seed {}\n\
             faults: {} 503, {} 429 (Retry-After 1 s), {} reset after the payment is recorded, \
             {} latency spikes; {outage}\n\
             idempotency store: {store}\n",
            self.requests,
            self.load.concurrency,
            self.seed,
            pct(self.plan.unavailable),
            pct(self.plan.throttled),
            pct(self.plan.reset_after_processing),
            pct(self.plan.spike),
        )
    }
}

async fn run_naive(scenario: &Scenario) -> Result<RunReport, BoxError> {
    let deployment = Deployment::start(&scenario.plan, &scenario.store).await?;
    let client = NaiveClient::new(
        deployment.primary.url("/payments"),
        3,
        Duration::from_millis(100),
    );
    let payments = load::payments(scenario.requests, scenario.seed, scenario.invalid);
    let bar = load::progress_bar(payments.len(), "naive");
    let started = Instant::now();
    let _outage = scenario
        .outage
        .map(|(at, len)| deployment.primary.schedule_outage(at, len));
    let outcomes = load::drive(&payments, scenario.load, &bar, |payment| {
        let client = client.clone();
        async move { client.send(&payment).await }
    })
    .await;
    bar.finish();
    Ok(RunReport::new(
        "naive",
        &outcomes,
        &deployment.ledger,
        None,
        deployment.faults(),
        started.elapsed(),
    ))
}

async fn run_protected(scenario: &Scenario, metrics: &Snapshotter) -> Result<RunReport, BoxError> {
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
    let bar = load::progress_bar(payments.len(), "protected");
    let started = Instant::now();
    let _outage = scenario
        .outage
        .map(|(at, len)| deployment.primary.schedule_outage(at, len));
    let outcomes = load::drive(&payments, scenario.load, &bar, |payment| {
        let client = client.clone();
        async move { client.send(&payment).await }
    })
    .await;
    bar.finish();
    let wall = started.elapsed();
    Ok(RunReport::new(
        "protected",
        &outcomes,
        &deployment.ledger,
        Some(LayerCounts::from_snapshot(metrics.snapshot())),
        deployment.faults(),
        wall,
    ))
}

fn verdict(report: &RunReport) -> String {
    if report.exactly_once() {
        format!(
            "{}: every valid payment recorded exactly once ({} of {}).",
            report.label, report.unique_sent, report.unique_sent
        )
    } else {
        format!(
            "{}: {} payment(s) LOST, {} DUPLICATED (charged twice).",
            report.label, report.lost, report.duplicated
        )
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let verbose = args.verbose;
    let scenario = match Scenario::from_args(args) {
        Ok(s) => s,
        Err(msg) => Args::command()
            .error(ErrorKind::ValueValidation, msg)
            .exit(),
    };
    let filter = if verbose { "info" } else { "error" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    // Every layer's metrics land here; the report reads them (handles are registered when the
    // layers are built, so the recorder must come first).
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    if recorder.install().is_err() {
        eprintln!("error: a metrics recorder is already installed");
        return ExitCode::from(3);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the tokio runtime: {err}");
            return ExitCode::from(3);
        }
    };
    println!("{}", scenario.describe());
    let result = runtime.block_on(async {
        let mut reports = Vec::new();
        if scenario.naive {
            reports.push(run_naive(&scenario).await?);
        }
        reports.push(run_protected(&scenario, &metrics).await?);
        Ok::<_, BoxError>(reports)
    });
    let reports = match result {
        Ok(r) => r,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(3);
        }
    };
    println!();
    print!("{}", render(&reports));
    println!();
    for report in &reports {
        println!("{}", verdict(report));
    }
    let protected = reports.last().expect("the protected run always runs");
    if protected.exactly_once() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
