//! The chaos demo: what the suite is for, in under 30 seconds.
//!
//! Starts a payments service twice on loopback (primary and standby, with a shared
//! idempotency store), injects faults (503s, 429s with `Retry-After`, latency spikes, resets
//! after the payment was recorded, and an outage of the primary), and sends payments through
//! the suite's client stack — and, with `--naive`, through a plain reqwest retry loop first.
//!
//! ```text
//! cargo run --release -p resilience-examples --bin chaos -- --naive
//! cargo run --release -p resilience-examples --bin chaos -- --naive --report chaos.html
//! ```
//!
//! Exit status: 0 when the protected run recorded every valid payment exactly once, 1 when it
//! lost or duplicated one, 2 for bad flags, 3 when the environment failed (e.g. Redis
//! unreachable).

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{CommandFactory, Parser, error::ErrorKind};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use resilience_examples::{
    deployment::StoreChoice,
    html,
    load::LoadPlan,
    matrix::{self, MatrixPlan},
    report::{RunReport, render},
    run::{self, Outage, Profile, Scenario},
};
use tower_fault::BoxError;

/// Sends payments through a faulty network twice — with a naive client and with the tower
/// resilience suite — and counts lost and duplicated payments.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Args {
    /// Payments to send [default: 600, 200 with --short; per run with --matrix: 2000, 300 with
    /// --short].
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
    /// A named mix of faults and outage: mild (14 % of writes faulted, 1.5 s outage of the
    /// primary), moderate (25 %), harsh (40 %), blackout (mild, and both servers down for 3 s).
    /// The fault and outage flags below override the profile's values.
    #[arg(long, default_value = "mild", value_parser = parse_profile)]
    profile: Profile,
    /// Also run the same traffic through a plain reqwest client with a naive retry loop.
    #[arg(long)]
    naive: bool,
    /// Run the fault-share matrix instead (both clients; 0-40 % of writes faulted, with and
    /// without an outage of the primary, at 150/s and 1000/s, and a total outage) and print it
    /// as a Markdown table. Exits 1 if the protected client misses a target.
    #[arg(long, conflicts_with_all = ["profile", "naive", "redis", "rate"])]
    matrix: bool,
    /// Keep idempotency records in Redis at this URL (e.g. redis://127.0.0.1:6379) instead of
    /// memory.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// A quick run for CI: fewer payments, a shorter outage (with --matrix: one rate).
    #[arg(long)]
    short: bool,
    /// Seconds into each run when the outage starts [default: the profile's, 1.0, 0.2 with
    /// --short].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    outage_at: Option<f64>,
    /// Seconds the outage lasts, 0 for no outage [default: the profile's: 1.5, 0.4 with
    /// --short; 3.0, 1.0 for blackout].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    outage_for: Option<f64>,
    /// Share of write requests answered 503 [default: the profile's].
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    unavailable: Option<f64>,
    /// Share of write requests answered 429 with `Retry-After: 1` [default: the profile's].
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    throttled: Option<f64>,
    /// Share of write requests processed, then answered with a connection reset [default: the
    /// profile's].
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    reset_after: Option<f64>,
    /// Share of write requests delayed 100-400 ms [default: the profile's].
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    spikes: Option<f64>,
    /// Share of payments with an invalid (zero) amount, which the service rejects with 422.
    #[arg(long, value_name = "SHARE", default_value_t = 0.01, value_parser = parse_share)]
    invalid: f64,
    /// Log the layers' events (breaker transitions, endpoint health) to stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Also write a self-contained HTML page: a timeline of each run (payments per 100 ms by
    /// outcome and serving endpoint, retries, lost and double-charged payments, the outage,
    /// the breaker's state, the endpoints' health) and the summary table.
    #[arg(long, value_name = "FILE.html", conflicts_with = "matrix")]
    report: Option<PathBuf>,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::parse(s).ok_or_else(|| {
        let names: Vec<_> = Profile::ALL.iter().map(|p| p.as_str()).collect();
        format!("`{s}` is not a profile (one of: {})", names.join(", "))
    })
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

/// The flags, resolved into one run's scenario.
fn scenario(args: &Args) -> Result<Scenario, String> {
    let short = args.short;
    let mut plan = args.profile.plan(args.seed);
    plan.unavailable = args.unavailable.unwrap_or(plan.unavailable);
    plan.throttled = args.throttled.unwrap_or(plan.throttled);
    plan.reset_after_processing = args.reset_after.unwrap_or(plan.reset_after_processing);
    plan.spike = args.spikes.unwrap_or(plan.spike);
    plan.validate().map_err(|e| e.to_string())?;
    let outage = match args.profile.outage(short) {
        Outage::Primary { at, lasting } => {
            let (at, lasting) = resolve_outage(args, at, lasting);
            (!lasting.is_zero()).then_some(Outage::Primary { at, lasting })
        }
        Outage::Both { at, lasting } => {
            let (at, lasting) = resolve_outage(args, at, lasting);
            (!lasting.is_zero()).then_some(Outage::Both { at, lasting })
        }
    };
    let rate = args.rate.unwrap_or(if short { 200.0 } else { 150.0 });
    Ok(Scenario {
        requests: usize::try_from(args.requests.unwrap_or(if short { 200 } else { 600 }))
            .map_err(|e| e.to_string())?,
        load: LoadPlan {
            concurrency: usize::try_from(args.concurrency).map_err(|e| e.to_string())?,
            rate: (rate > 0.0).then_some(rate),
        },
        plan,
        outage,
        store: args
            .redis
            .clone()
            .map_or(StoreChoice::Memory, StoreChoice::Redis),
        seed: args.seed,
        invalid: args.invalid,
        redrive_limit: Duration::from_secs(60),
    })
}

fn resolve_outage(args: &Args, at: Duration, lasting: Duration) -> (Duration, Duration) {
    (
        args.outage_at.map_or(at, Duration::from_secs_f64),
        args.outage_for.map_or(lasting, Duration::from_secs_f64),
    )
}

fn describe(profile: Profile, scenario: &Scenario) -> String {
    let pct = |v: f64| format!("{:.0}%", v * 100.0);
    let rate = scenario
        .load
        .rate
        .map_or_else(|| "unlimited".to_owned(), |r| format!("{r}/s"));
    let outage = scenario
        .outage
        .map_or_else(|| "no outage".to_owned(), |o| o.describe());
    let store = match &scenario.store {
        StoreChoice::Memory => "memory (shared by both servers)".to_owned(),
        StoreChoice::Redis(url) => format!("redis at {url}"),
    };
    let plan = &scenario.plan;
    format!(
        "chaos: {} payments, concurrency {}, rate {rate}, seed {}, profile {}\n\
         faults: {} 503, {} 429 (Retry-After 1 s), {} reset after the payment is recorded, \
         {} latency spikes; {outage}\n\
         idempotency store: {store}\n",
        scenario.requests,
        scenario.load.concurrency,
        scenario.seed,
        profile.as_str(),
        pct(plan.unavailable),
        pct(plan.throttled),
        pct(plan.reset_after_processing),
        pct(plan.spike),
    )
}

/// Runs the demo (or the matrix), writing the HTML report into `page` if asked; the exit code.
fn run(args: &Args, metrics: &Snapshotter, page: Option<File>) -> Result<ExitCode, BoxError> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    if args.matrix {
        let mut plan = if args.short {
            MatrixPlan::short(args.seed)
        } else {
            MatrixPlan::full(args.seed)
        };
        if let Some(n) = args.requests {
            plan.requests = usize::try_from(n)?;
        }
        let cells = plan.cells().len();
        eprintln!(
            "chaos: fault-share matrix, {cells} rows of {} payments, seed {}",
            plan.requests, plan.seed
        );
        let mut row = 0;
        let results = runtime.block_on(matrix::run(&plan, metrics, |r| {
            row += 1;
            let (share, outage, rate) = r.cell.labels();
            eprintln!(
                "  [{row}/{cells}] {share} faulted, outage {outage}, {rate}: naive lost {}, protected lost {} (after re-drive {})",
                r.naive.lost,
                r.protected.lost,
                r.protected.redrive.map_or(0, |c| c.lost)
            );
        }))?;
        println!("{}", matrix::render(&results));
        let violations = matrix::violations(&results);
        for v in &violations {
            println!("target missed: {v}");
        }
        return Ok(if violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let scenario = scenario(args).map_err(|msg| -> BoxError { msg.into() })?;
    let intro = describe(args.profile, &scenario);
    println!("{intro}");
    let runs = runtime.block_on(async {
        let mut runs = Vec::new();
        if args.naive {
            runs.push(run::naive(&scenario, true).await?);
        }
        runs.push(run::protected(&scenario, metrics, true).await?);
        Ok::<_, BoxError>(runs)
    })?;
    let reports: Vec<RunReport> = runs.iter().map(|r| r.report.clone()).collect();
    println!();
    print!("{}", render(&reports));
    println!();
    for report in &reports {
        println!("{}", report.verdict());
    }
    if let (Some(file), Some(path)) = (page, &args.report) {
        let page = html::render(&[intro], &runs);
        let mut out = BufWriter::new(file);
        out.write_all(page.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the report to {}: {e}", path.display()))?;
        println!(
            "\nreport: {} ({} KiB)",
            path.display(),
            page.len().div_ceil(1024)
        );
    }
    let protected = reports.last().expect("the protected run always runs");
    Ok(
        if protected.exactly_once_in_the_end() && protected.duplicated == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = scenario(&args) {
        Args::command()
            .error(ErrorKind::ValueValidation, msg)
            .exit();
    }
    // Opened before the runs, so a path that cannot be written is a bad flag, not a lost run.
    let page = args.report.as_ref().map(|path| {
        File::create(path).unwrap_or_else(|e| {
            Args::command()
                .error(
                    ErrorKind::Io,
                    format!("cannot write the report to {}: {e}", path.display()),
                )
                .exit()
        })
    });
    let filter = if args.verbose { "info" } else { "error" };
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
    match run(&args, &metrics, page) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            // No half-written or empty page left behind.
            if let Some(path) = &args.report {
                let _ = std::fs::remove_file(path);
            }
            ExitCode::from(3)
        }
    }
}
