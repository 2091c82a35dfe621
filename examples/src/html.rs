//! The chaos demo's HTML report (`chaos --report FILE.html`): one self-contained page — inline
//! CSS and SVG, no script, nothing fetched when it is viewed — with a timeline of each run and
//! the summary table.
//!
//! Each run's timeline shares one time axis and one scale with the others, so the runs compare
//! at a glance:
//!
//! * **payments** started per 100 ms, stacked by how they ended: succeeded (one color per server
//!   on the receipt — which endpoint served), invalid and rejected, deferred to the re-drive
//!   queue, failed;
//! * **retries**: attempts beyond the first of the payments started in each slice;
//! * **ledger**: valid payments never recorded (lost) and recordings beyond the first (charged
//!   twice), by the end of the run;
//! * **lanes**: the outage windows, each breaker's state and each endpoint's health over time;
//! * the outage windows are also shaded behind every panel.
//!
//! The page is also well-formed XML (every element closed, every attribute quoted, only the
//! five predefined entities), so tests can parse it with an XML parser. Bars carry
//! `data-series` and `data-count` attributes; an SVG `<title>` in each is its tooltip.
//!
//! ```
//! use resilience_examples::{html, report::RunReport, run::Run, timeline::Timeline};
//! # use resilience_examples::{faults::FaultCounts, payments::Ledger};
//! # use std::time::Duration;
//! # let ledger = Ledger::new();
//! # let report = RunReport::new("naive", &[], &ledger, None, FaultCounts::default(), Duration::ZERO);
//! # let timeline = Timeline::new(tokio::time::Instant::now(), Duration::ZERO, &[], &ledger, None);
//! let run = Run { report, timeline };
//! let page = html::render(&["chaos: 0 payments".to_owned()], &[run]);
//! assert!(page.starts_with("<!DOCTYPE html>"));
//! assert!(!page.contains("<script"));
//! ```

use std::{collections::BTreeSet, fmt::Write as _, time::Duration};

use crate::{
    report::{self, RunReport},
    run::Run,
    timeline::{Bucket, Down, Lane, Timeline, Tone},
};

/// Width of a timeline, in CSS pixels (the SVG is drawn 1:1, never scaled).
pub const WIDTH: u32 = 960;
/// Left of the plot area: the panels' and lanes' names go there.
const LEFT: u32 = 160;
const RIGHT: u32 = 16;
/// Width of the plot area.
const PLOT: u32 = WIDTH - LEFT - RIGHT;
const PAYMENTS_HEIGHT: u32 = 170;
const SMALL_HEIGHT: u32 = 56;
/// Space kept free above the tallest bar of a panel.
const HEADROOM: u32 = 6;
const PANEL_GAP: u32 = 14;
const LANE_HEIGHT: u32 = 16;
const LANE_GAP: u32 = 6;
const AXIS_HEIGHT: u32 = 26;
const TOP: u32 = 8;
/// Where the names of panels end (their y-axis values are between) and those of lanes.
const PANEL_NAME: u32 = LEFT - 34;
const LANE_NAME: u32 = LEFT - 6;

/// At most this many slices on a time axis: 100 ms slices up to a 20 s run, wider ones
/// beyond, so a long run's page stays small and its bars a few pixels wide.
const MAX_BUCKETS: u128 = 200;
/// Slice widths, in milliseconds, tried in order.
const BUCKET_WIDTHS_MS: [u64; 12] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 3_600_000,
];
/// At most this many labelled ticks on a time axis.
const MAX_TICKS: u128 = 12;
const TICK_STEPS_MS: [u64; 16] = [
    100, 200, 250, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
    600_000, 1_800_000, 3_600_000,
];

/// Successes, one color per server named on receipts (in the order of the names).
const SERVER_COLORS: [&str; 4] = ["#2e9d5b", "#1f77b4", "#17becf", "#bcbd22"];
/// A success without a readable receipt.
const UNNAMED_COLOR: &str = "#8fc79a";
const REJECTED_COLOR: &str = "#9e9e9e";
const DEFERRED_COLOR: &str = "#8e6bbf";
const FAILED_COLOR: &str = "#d62728";
const RETRIES_COLOR: &str = "#ff9f1c";
const LOST_COLOR: &str = "#7f0000";
const TWICE_COLOR: &str = "#e377c2";
const OUTAGE_COLOR: &str = "#4d4d4d";
/// The panels' frames: a color nothing else on the page uses, so a test of the rendered page
/// can find the plot areas.
pub const FRAME_COLOR: &str = "#56647b";
const GRID_COLOR: &str = "#eceef2";

const fn tone_color(tone: Tone) -> &'static str {
    match tone {
        Tone::Good => "#a8dbb5",
        Tone::Degraded => "#f2b134",
        Tone::Down => "#ef6f66",
        Tone::Neutral => "#c7c7c7",
    }
}

const STYLE: &str = "\
body{margin:0;background:#fff;color:#1d2330;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}
main{max-width:1000px;margin:0 auto;padding:20px 20px 40px}
h1{font-size:22px;margin:0 0 10px}
h2{font-size:17px;margin:26px 0 2px}
p.summary{margin:0 0 8px;color:#4a5263}
pre.scenario{background:#f4f6f9;border-radius:6px;padding:10px 12px;font-size:12.5px;white-space:pre-wrap;margin:0 0 10px}
ul.verdicts{margin:0 0 10px;padding-left:20px}
li.bad{color:#b3261e;font-weight:600}
li.good{color:#1e7b3c;font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:12.5px;margin:8px 0 0}
.legend span.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
section.run{overflow-x:auto}
svg.timeline{display:block}
svg text{font-size:11px;fill:#4a5263}
svg text.panel{font-weight:600;fill:#1d2330}
svg text.none{font-style:italic}
table.summary{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums;margin-top:6px}
table.summary th,table.summary td{padding:3px 12px;border-bottom:1px solid #e7e9ee;text-align:right}
table.summary th.name,table.summary td.name{text-align:left}
table.summary tr.sub td.name{padding-left:28px;color:#5b6275}
table.summary td.bad{color:#b3261e;font-weight:700}
p.notes{font-size:12.5px;color:#5b6275;max-width:900px}
";

/// Escapes text for an HTML/XML text node or a quoted attribute.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page of `runs` (in the order given, e.g. naive then protected), headed by `intro`
/// (the scenario, one paragraph per item, shown as preformatted text) and ending with the
/// summary table.
#[must_use]
pub fn render(intro: &[String], runs: &[Run]) -> String {
    let scale = Scale::of(runs);
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
         <title>chaos: timeline and summary</title>\n<style>\n",
    );
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<main>\n<h1>Chaos demo: timeline of each run</h1>\n");
    if !intro.is_empty() {
        let _ = writeln!(
            out,
            "<pre class=\"scenario\">{}</pre>",
            escape(intro.join("\n").trim_end())
        );
    }
    out.push_str("<ul class=\"verdicts\">\n");
    for run in runs {
        let r = &run.report;
        let class = if r.exactly_once_in_the_end() && r.duplicated == 0 {
            "good"
        } else {
            "bad"
        };
        let _ = writeln!(out, "<li class=\"{class}\">{}</li>", escape(&r.verdict()));
    }
    out.push_str("</ul>\n");
    legend(&mut out, &scale, runs);
    for run in runs {
        let label = escape(&run.report.label);
        let _ = writeln!(
            out,
            "<section class=\"run\" id=\"run-{label}\">\n<h2>{label}</h2>\n<p class=\"summary\">{}</p>",
            escape(&summary(&run.report))
        );
        chart(&mut out, &scale, run);
        out.push_str("</section>\n");
    }
    out.push_str("<h2>Summary</h2>\n");
    table(&mut out, runs);
    let _ = writeln!(
        out,
        "<p class=\"notes\">Payments are counted in the {} slice they started in, colored by how \
         they ended as the client saw it; a success is colored by the server named on its \
         receipt (on a replayed answer, the server that recorded the payment). Retries are the \
         attempts beyond the first of the payments started in a slice. The ledger panel reads \
         the servers' records at the end of the run (after the re-drive, for a client that \
         queues): lost payments were never recorded, extra charges are recordings beyond the \
         first. Lanes show the outage windows, the breaker's state and each endpoint's health \
         as the layers reported them. Hover over a bar or a lane for its numbers.</p>",
        duration_label(scale.bucket)
    );
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn summary(r: &RunReport) -> String {
    format!(
        "{} payments in {:.2} s: {} succeeded, {} failed, {} attempts ({:.2} per payment).",
        r.requests,
        r.wall.as_secs_f64(),
        r.succeeded,
        r.failed_total(),
        r.attempts,
        r.attempts_per_payment()
    )
}

/// What every chart of the page shares: the time axis, the slices and the panels' scales.
#[derive(Debug, Clone)]
struct Scale {
    end: Duration,
    bucket: Duration,
    tick: Duration,
    payments: u64,
    retries: u64,
    damage: u64,
    /// The servers named on receipts, in color order (`None`: a success without a receipt).
    servers: Vec<Option<String>>,
}

impl Scale {
    fn of(runs: &[Run]) -> Self {
        let end = runs
            .iter()
            .map(|r| r.timeline.end())
            .fold(Duration::from_millis(100), Duration::max);
        let bucket = pick(&BUCKET_WIDTHS_MS, end, MAX_BUCKETS);
        let tick = pick(&TICK_STEPS_MS, end, MAX_TICKS);
        let mut servers = BTreeSet::new();
        let (mut payments, mut retries, mut damage) = (1, 1, 1);
        for run in runs {
            for b in run.timeline.buckets(bucket, end) {
                payments = payments.max(b.payments());
                retries = retries.max(b.retries);
                damage = damage.max(b.lost + b.charged_twice);
                servers.extend(b.succeeded.into_keys());
            }
        }
        Self {
            end,
            bucket,
            tick,
            payments: nice(payments),
            retries: nice(retries),
            damage: nice(damage),
            servers: servers.into_iter().collect(),
        }
    }

    /// The x of `t` on the axis (clamped to the plot area).
    fn x(&self, t: Duration) -> u32 {
        let share = (t.as_secs_f64() / self.end.as_secs_f64()).clamp(0.0, 1.0);
        LEFT + (share * f64::from(PLOT)).round() as u32
    }

    fn server_color(&self, server: Option<&String>) -> &'static str {
        match server {
            None => UNNAMED_COLOR,
            Some(name) => {
                let named = self.servers.iter().flatten();
                let index = named.take_while(|s| *s != name).count();
                SERVER_COLORS[index % SERVER_COLORS.len()]
            }
        }
    }
}

/// The first of `steps_ms` that cuts `end` into at most `max` pieces (or the piece that does).
fn pick(steps_ms: &[u64], end: Duration, max: u128) -> Duration {
    steps_ms
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .find(|step| end.as_nanos().div_ceil(step.as_nanos()) <= max)
        .unwrap_or_else(|| {
            let nanos = end.as_nanos().div_ceil(max);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        })
}

/// The smallest 1, 2 or 5 times a power of ten at least `v` (at least 1).
fn nice(v: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for m in [1, 2, 5] {
            let candidate = magnitude.saturating_mul(m);
            if candidate >= v {
                return candidate;
            }
        }
        if magnitude > u64::MAX / 10 {
            return u64::MAX;
        }
        magnitude *= 10;
    }
}

/// `"100 ms"`, `"2 s"`, `"5 min"`.
fn duration_label(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 || !ms.is_multiple_of(60_000) {
        format!("{} s", secs(d))
    } else {
        format!("{} min", ms / 60_000)
    }
}

/// Seconds with at most two decimals and no trailing zeros: `"1.5"`, `"2"`, `"0.25"`.
fn secs(d: Duration) -> String {
    let text = format!("{:.2}", d.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn span_label(from: Duration, until: Duration) -> String {
    format!("{}–{} s", secs(from), secs(until))
}

/// One stacked series of the payments panel.
struct Series {
    key: String,
    label: String,
    color: &'static str,
}

fn series(scale: &Scale) -> Vec<Series> {
    let mut all: Vec<Series> = scale
        .servers
        .iter()
        .map(|server| Series {
            key: format!("succeeded:{}", server.as_deref().unwrap_or("(no receipt)")),
            label: server.as_ref().map_or_else(
                || "succeeded (no receipt)".to_owned(),
                |s| format!("succeeded via {s}"),
            ),
            color: scale.server_color(server.as_ref()),
        })
        .collect();
    for (key, label, color) in [
        ("rejected", "invalid, rejected (422)", REJECTED_COLOR),
        ("deferred", "deferred (queued for re-drive)", DEFERRED_COLOR),
        ("failed", "failed", FAILED_COLOR),
    ] {
        all.push(Series {
            key: key.to_owned(),
            label: label.to_owned(),
            color,
        });
    }
    all
}

fn count(bucket: &Bucket, key: &str) -> u64 {
    match key {
        "rejected" => bucket.rejected,
        "deferred" => bucket.deferred,
        "failed" => bucket.failed,
        _ => bucket
            .succeeded
            .iter()
            .find(|(server, _)| {
                key.strip_prefix("succeeded:") == Some(server.as_deref().unwrap_or("(no receipt)"))
            })
            .map_or(0, |(_, n)| *n),
    }
}

fn swatch(out: &mut String, color: &str, label: &str) {
    let _ = write!(
        out,
        "<span><span class=\"swatch\" style=\"background:{color}\"></span>{}</span>",
        escape(label)
    );
}

fn legend(out: &mut String, scale: &Scale, runs: &[Run]) {
    out.push_str("<div class=\"legend\">");
    for s in series(scale) {
        swatch(out, s.color, &s.label);
    }
    swatch(out, RETRIES_COLOR, "retries");
    swatch(out, LOST_COLOR, "lost (never recorded)");
    swatch(out, TWICE_COLOR, "charged twice");
    swatch(out, OUTAGE_COLOR, "server down");
    let mut states = BTreeSet::new();
    for run in runs {
        for lane in run.timeline.breakers.iter().chain(&run.timeline.endpoints) {
            for (_, state) in &lane.states {
                states.insert((state.tone, state.label));
            }
        }
    }
    for (tone, label) in states {
        swatch(out, tone_color(tone), &label.replace('_', "-"));
    }
    out.push_str("</div>\n");
}

fn rect(out: &mut String, x: u32, y: u32, width: u32, height: u32, color: &str) {
    let _ = write!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{height}\" fill=\"{color}\"/>"
    );
}

/// A 1-pixel frame just outside the plot area of a panel at `top` of `height`.
fn frame(out: &mut String, top: u32, height: u32) {
    out.push_str("<g class=\"frame\">");
    rect(out, LEFT - 1, top - 1, PLOT + 2, 1, FRAME_COLOR);
    rect(out, LEFT - 1, top + height, PLOT + 2, 1, FRAME_COLOR);
    rect(out, LEFT - 1, top, 1, height, FRAME_COLOR);
    rect(out, LEFT + PLOT, top, 1, height, FRAME_COLOR);
    out.push_str("</g>\n");
}

/// The name of a panel or lane, right-aligned at `right` (one line each).
fn name(out: &mut String, right: u32, y: u32, lines: &[&str], class: &str) {
    for (i, line) in lines.iter().enumerate() {
        let class = if i == 0 { class } else { "" };
        let _ = write!(
            out,
            "<text x=\"{right}\" y=\"{}\" text-anchor=\"end\" class=\"{class}\">{}</text>",
            y + 13 * i as u32,
            escape(line)
        );
    }
}

/// The value labels of a panel's y axis: its maximum at the top, 0 at the baseline.
fn y_labels(out: &mut String, top: u32, height: u32, max: u64) {
    let _ = write!(
        out,
        "<text x=\"{x}\" y=\"{}\" text-anchor=\"end\">{max}</text>\
         <text x=\"{x}\" y=\"{}\" text-anchor=\"end\">0</text>",
        top + HEADROOM + 4,
        top + height,
        x = LEFT - 5
    );
}

/// Stacked bars: for each slice, `(value, color, series key, tooltip)` from the bottom up.
fn bars(
    out: &mut String,
    scale: &Scale,
    top: u32,
    height: u32,
    max: u64,
    stacks: &[Vec<(u64, &str, &str, String)>],
) {
    let usable = f64::from(height - HEADROOM);
    let bottom = top + height;
    let y = |cum: u64| bottom - ((cum as f64 / max as f64).min(1.0) * usable).round() as u32;
    for (i, stack) in stacks.iter().enumerate() {
        let from = scale.bucket * u32::try_from(i).unwrap_or(u32::MAX);
        let (x0, x1) = (scale.x(from), scale.x(from + scale.bucket));
        if x1 <= x0 {
            continue;
        }
        let gap = u32::from(x1 - x0 >= 3);
        let mut cum = 0;
        for (value, color, key, tip) in stack {
            if *value == 0 {
                continue;
            }
            let (lower, upper) = (y(cum), y(cum + value));
            cum += value;
            let _ = write!(
                out,
                "<rect class=\"bar\" data-series=\"{}\" data-count=\"{value}\" x=\"{x0}\" y=\"{upper}\" \
                 width=\"{}\" height=\"{}\" fill=\"{color}\"><title>{}: {}</title></rect>",
                escape(key),
                x1 - x0 - gap,
                lower - upper,
                span_label(from, from + scale.bucket),
                escape(tip)
            );
        }
    }
    out.push('\n');
}

/// One lane: its name and colored spans.
fn lane(out: &mut String, scale: &Scale, y: u32, label: &str, lane: &Lane, end: Duration) {
    name(out, LANE_NAME, y + 12, &[label], "");
    let _ = write!(out, "<g class=\"lane\" data-lane=\"{}\">", escape(label));
    for span in lane.spans(end) {
        let (x0, x1) = (scale.x(span.from), scale.x(span.until));
        let _ = write!(
            out,
            "<rect class=\"span\" data-state=\"{}\" x=\"{x0}\" y=\"{y}\" width=\"{}\" height=\"{LANE_HEIGHT}\" \
             fill=\"{}\"><title>{}: {} {}</title></rect>",
            span.state.label,
            x1.saturating_sub(x0),
            tone_color(span.state.tone),
            escape(label),
            span.state.label.replace('_', "-"),
            span_label(span.from, span.until)
        );
    }
    out.push_str("</g>\n");
}

/// The lanes of one `kind` (`breaker`, `endpoint`) from `y` down, drawn up to `end`; `none` in
/// their place when the client has none.
fn lane_group(
    out: &mut String,
    scale: &Scale,
    y: &mut u32,
    kind: &str,
    lanes: &[Lane],
    none: &str,
    end: Duration,
) {
    if lanes.is_empty() {
        empty_lane(out, *y, kind, none);
        *y += LANE_HEIGHT + LANE_GAP;
    }
    for each in lanes {
        lane(out, scale, *y, &format!("{kind} {}", each.name), each, end);
        *y += LANE_HEIGHT + LANE_GAP;
    }
}

/// A lane with nothing to draw: a note in its place.
fn empty_lane(out: &mut String, y: u32, label: &str, note: &str) {
    name(out, LANE_NAME, y + 12, &[label], "");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" class=\"none\">{}</text>",
        LEFT + 4,
        y + 12,
        escape(note)
    );
}

/// The outage windows, merged where several servers were down at once.
fn outage_windows(outages: &[Down]) -> Vec<(Duration, Duration, Vec<&str>)> {
    let mut windows: Vec<(Duration, Duration, Vec<&str>)> = Vec::new();
    for down in outages {
        match windows
            .iter_mut()
            .find(|(from, until, _)| *from == down.from && *until == down.until)
        {
            Some((_, _, servers)) => servers.push(&down.server),
            None => windows.push((down.from, down.until, vec![&down.server])),
        }
    }
    windows
}

fn chart(out: &mut String, scale: &Scale, run: &Run) {
    let timeline: &Timeline = &run.timeline;
    let buckets = timeline.buckets(scale.bucket, scale.end);
    let lanes = 1 + timeline.breakers.len().max(1) + timeline.endpoints.len().max(1);
    let lanes = u32::try_from(lanes).unwrap_or(u32::MAX);
    let payments_top = TOP;
    let retries_top = payments_top + PAYMENTS_HEIGHT + PANEL_GAP;
    let ledger_top = retries_top + SMALL_HEIGHT + PANEL_GAP;
    let lanes_top = ledger_top + SMALL_HEIGHT + PANEL_GAP;
    let axis_top = lanes_top + lanes * (LANE_HEIGHT + LANE_GAP);
    let height = axis_top + AXIS_HEIGHT;
    let label = escape(&run.report.label);
    let _ = writeln!(
        out,
        "<svg class=\"timeline\" data-run=\"{label}\" width=\"{WIDTH}\" height=\"{height}\" \
         role=\"img\" aria-label=\"timeline of the {label} run\">"
    );

    // Behind everything: the grid and the outage windows.
    let mut t = Duration::ZERO;
    while t <= scale.end {
        rect(
            out,
            scale.x(t),
            payments_top,
            1,
            axis_top - payments_top,
            GRID_COLOR,
        );
        t += scale.tick;
    }
    let windows = outage_windows(&timeline.outages);
    for (from, until, _) in &windows {
        let (x0, x1) = (scale.x(*from), scale.x(*until));
        let _ = write!(
            out,
            "<rect class=\"outage-band\" x=\"{x0}\" y=\"{payments_top}\" width=\"{}\" height=\"{}\" \
             fill=\"{FAILED_COLOR}\" fill-opacity=\"0.08\"/>",
            x1.saturating_sub(x0),
            axis_top - payments_top
        );
    }
    out.push('\n');

    // Payments by how they ended.
    let width = duration_label(scale.bucket);
    name(
        out,
        PANEL_NAME,
        payments_top + 14,
        &["payments", &format!("started per {width}")],
        "panel",
    );
    y_labels(out, payments_top, PAYMENTS_HEIGHT, scale.payments);
    let all = series(scale);
    let stacks: Vec<_> = buckets
        .iter()
        .map(|b| {
            all.iter()
                .map(|s| {
                    let n = count(b, &s.key);
                    (n, s.color, s.key.as_str(), format!("{n} {}", s.label))
                })
                .collect()
        })
        .collect();
    out.push_str("<g data-panel=\"payments\">");
    bars(
        out,
        scale,
        payments_top,
        PAYMENTS_HEIGHT,
        scale.payments,
        &stacks,
    );
    out.push_str("</g>\n");
    frame(out, payments_top, PAYMENTS_HEIGHT);

    // Retries.
    name(
        out,
        PANEL_NAME,
        retries_top + 14,
        &["retries", "attempts after the first"],
        "panel",
    );
    y_labels(out, retries_top, SMALL_HEIGHT, scale.retries);
    let stacks: Vec<_> = buckets
        .iter()
        .map(|b| {
            vec![(
                b.retries,
                RETRIES_COLOR,
                "retries",
                format!("{} retries", b.retries),
            )]
        })
        .collect();
    out.push_str("<g data-panel=\"retries\">");
    bars(
        out,
        scale,
        retries_top,
        SMALL_HEIGHT,
        scale.retries,
        &stacks,
    );
    out.push_str("</g>\n");
    frame(out, retries_top, SMALL_HEIGHT);

    // The ledger's verdict.
    name(
        out,
        PANEL_NAME,
        ledger_top + 14,
        &["ledger", "lost, charged twice"],
        "panel",
    );
    y_labels(out, ledger_top, SMALL_HEIGHT, scale.damage);
    let stacks: Vec<_> = buckets
        .iter()
        .map(|b| {
            vec![
                (
                    b.lost,
                    LOST_COLOR,
                    "lost",
                    format!("{} lost (never recorded)", b.lost),
                ),
                (
                    b.charged_twice,
                    TWICE_COLOR,
                    "charged-twice",
                    format!("{} charged twice", b.charged_twice),
                ),
            ]
        })
        .collect();
    out.push_str("<g data-panel=\"ledger\">");
    bars(out, scale, ledger_top, SMALL_HEIGHT, scale.damage, &stacks);
    out.push_str("</g>\n");
    frame(out, ledger_top, SMALL_HEIGHT);

    // Lanes: outages, breakers, endpoints.
    let mut y = lanes_top;
    if windows.is_empty() {
        empty_lane(out, y, "outage", "none");
    } else {
        name(out, LANE_NAME, y + 12, &["outage"], "");
        out.push_str("<g class=\"lane\" data-lane=\"outage\">");
        for (from, until, servers) in &windows {
            let (x0, x1) = (scale.x(*from), scale.x(*until));
            let _ = write!(
                out,
                "<rect class=\"span\" data-state=\"down\" x=\"{x0}\" y=\"{y}\" width=\"{}\" \
                 height=\"{LANE_HEIGHT}\" fill=\"{OUTAGE_COLOR}\"><title>{} down {}</title></rect>",
                x1.saturating_sub(x0),
                escape(&servers.join(" and ")),
                span_label(*from, *until)
            );
        }
        out.push_str("</g>\n");
    }
    y += LANE_HEIGHT + LANE_GAP;
    let end = timeline.length;
    let none = "none (a plain retry loop)";
    lane_group(out, scale, &mut y, "breaker", &timeline.breakers, none, end);
    let none = "one server, no health tracking (no failover)";
    lane_group(
        out,
        scale,
        &mut y,
        "endpoint",
        &timeline.endpoints,
        none,
        end,
    );

    // The time axis.
    let mut t = Duration::ZERO;
    while t <= scale.end {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} s</text>",
            scale.x(t),
            axis_top + 14,
            secs(t)
        );
        t += scale.tick;
    }
    out.push_str("\n</svg>\n");
}

fn table(out: &mut String, runs: &[Run]) {
    let reports: Vec<RunReport> = runs.iter().map(|r| r.report.clone()).collect();
    out.push_str("<table class=\"summary\">\n<thead><tr><th class=\"name\"></th>");
    for r in &reports {
        let _ = write!(out, "<th>{}</th>", escape(&r.label));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (row, cells) in report::rows(&reports) {
        let sub = row.starts_with("  ");
        let alarm = row.starts_with("LOST") || row.starts_with("DUPLICATED");
        let _ = write!(
            out,
            "<tr{}><td class=\"name\">{}</td>",
            if sub { " class=\"sub\"" } else { "" },
            escape(row.trim_start())
        );
        for cell in cells {
            let bad = alarm && cell != "0" && cell != "-";
            let _ = write!(
                out,
                "<td{}>{}</td>",
                if bad { " class=\"bad\"" } else { "" },
                escape(&cell)
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        faults::FaultCounts,
        load::{Outcome, Sent},
        payments::{Ledger, Payment},
        run::Outage,
        timeline::{LaneState, Lanes},
    };
    use tokio::time::Instant;
    use tower_breaker::State;
    use tower_failover::EndpointStatus;

    /// A run of `n` payments, one every 10 ms: every tenth fails, the rest succeed on
    /// `primary` before 1 s and on `standby` after; the payment `pay-<3>` is recorded twice.
    fn run(label: &str, n: u64, lanes: bool) -> Run {
        let epoch = Instant::now();
        let ledger = Ledger::new();
        let outcomes: Vec<Outcome> = (0..n)
            .map(|i| {
                let payment = Payment {
                    id: format!("pay-<{i}>"),
                    amount: 10,
                };
                let sent = if i % 10 == 9 {
                    Sent::failed("gave up: connect", Some(3))
                } else {
                    ledger.record(&payment);
                    Sent::ok(Some(1)).served_by(if i < 100 { "primary" } else { "standby" })
                };
                if i == 3 {
                    ledger.record(&payment);
                }
                Outcome {
                    payment,
                    started: epoch + Duration::from_millis(10 * i),
                    latency: Duration::from_millis(2),
                    sent,
                }
            })
            .collect();
        let wall = Duration::from_millis(10 * n);
        let report = RunReport::new(
            label,
            &outcomes,
            &ledger,
            None,
            FaultCounts::default(),
            wall,
        );
        let outage = Outage::Primary {
            at: Duration::from_millis(500),
            lasting: Duration::from_millis(400),
        };
        let mut timeline = Timeline::new(epoch, wall, &outcomes, &ledger, Some(outage));
        if lanes {
            let breaker = Lane {
                name: "up".into(),
                states: vec![
                    (Duration::ZERO, LaneState::breaker(State::Closed)),
                    (Duration::from_millis(600), LaneState::breaker(State::Open)),
                ],
            };
            let endpoint = Lane {
                name: "primary".into(),
                states: vec![(Duration::ZERO, LaneState::endpoint(EndpointStatus::Healthy))],
            };
            timeline = timeline.with_lanes(Lanes {
                breakers: vec![breaker],
                endpoints: vec![endpoint],
            });
        }
        Run { report, timeline }
    }

    fn sum_counts(doc: &roxmltree::Document<'_>, run: &str, panel: &str, series: &str) -> u64 {
        doc.descendants()
            .filter(|n| n.attribute("data-run") == Some(run))
            .flat_map(|svg| svg.descendants())
            .filter(|n| n.attribute("data-panel") == Some(panel))
            .flat_map(|g| g.descendants())
            .filter(|n| {
                n.attribute("data-series")
                    .is_some_and(|s| series.is_empty() || s == series)
            })
            .map(|n| n.attribute("data-count").unwrap().parse::<u64>().unwrap())
            .sum()
    }

    #[test]
    fn the_page_is_well_formed_and_its_bars_add_up() {
        let runs = [run("naive & co", 150, false), run("protected", 120, true)];
        let page = render(&["chaos: <test> & \"quotes\"".to_owned()], &runs);
        let doc = roxmltree::Document::parse_with_options(
            &page,
            roxmltree::ParsingOptions {
                allow_dtd: true,
                ..Default::default()
            },
        )
        .expect("well-formed");
        assert_eq!(doc.root_element().tag_name().name(), "html");
        assert!(page.contains("chaos: &lt;test&gt; &amp; &quot;quotes&quot;"));
        assert!(!page.contains("<script"));
        for (label, n) in [("naive & co", 150), ("protected", 120)] {
            assert_eq!(sum_counts(&doc, label, "payments", ""), n);
            assert_eq!(sum_counts(&doc, label, "payments", "failed"), n / 10);
            // Every tenth payment failed after three attempts.
            assert_eq!(sum_counts(&doc, label, "retries", ""), n / 10 * 2);
            assert_eq!(sum_counts(&doc, label, "ledger", "charged-twice"), 1);
            assert_eq!(sum_counts(&doc, label, "ledger", "lost"), n / 10);
        }
        assert_eq!(
            sum_counts(&doc, "naive & co", "payments", "succeeded:standby"),
            45
        );
        assert_eq!(
            sum_counts(&doc, "protected", "payments", "succeeded:standby"),
            18
        );
        let lanes: Vec<(&str, Option<&str>)> = doc
            .descendants()
            .filter(|n| n.attribute("data-run") == Some("protected"))
            .flat_map(|svg| svg.descendants())
            .filter(|n| n.has_attribute("data-state"))
            .map(|n| {
                (
                    n.attribute("data-state").unwrap(),
                    n.parent().and_then(|p| p.attribute("data-lane")),
                )
            })
            .collect();
        assert_eq!(
            lanes,
            [
                ("down", Some("outage")),
                ("closed", Some("breaker up")),
                ("open", Some("breaker up")),
                ("healthy", Some("endpoint primary")),
            ]
        );
        // The naive run has no lanes of its own: notes instead.
        assert!(page.contains("none (a plain retry loop)"));
        // The summary table has the text table's rows.
        let rows = doc.descendants().filter(|n| n.has_tag_name("tr")).count();
        let reports: Vec<RunReport> = runs.iter().map(|r| r.report.clone()).collect();
        assert_eq!(rows, report::rows(&reports).len() + 1);
    }

    #[test]
    fn slices_and_ticks_widen_for_long_runs() {
        let at = |secs: u64| Duration::from_secs(secs);
        assert_eq!(
            pick(&BUCKET_WIDTHS_MS, at(5), MAX_BUCKETS),
            Duration::from_millis(100)
        );
        assert_eq!(
            pick(&BUCKET_WIDTHS_MS, at(20), MAX_BUCKETS),
            Duration::from_millis(100)
        );
        assert_eq!(
            pick(&BUCKET_WIDTHS_MS, at(21), MAX_BUCKETS),
            Duration::from_millis(200)
        );
        assert_eq!(pick(&BUCKET_WIDTHS_MS, at(3_000), MAX_BUCKETS), at(30));
        // Past the list: the width that makes MAX_BUCKETS slices.
        assert_eq!(
            pick(&BUCKET_WIDTHS_MS, at(2_000_000), MAX_BUCKETS),
            at(10_000)
        );
        assert_eq!(
            pick(&TICK_STEPS_MS, at(5), MAX_TICKS),
            Duration::from_millis(500)
        );
        assert_eq!(nice(0), 1);
        assert_eq!(nice(7), 10);
        assert_eq!(nice(11), 20);
        assert_eq!(nice(200), 200);
        assert_eq!(nice(201), 500);
        assert_eq!(duration_label(Duration::from_millis(100)), "100 ms");
        assert_eq!(duration_label(at(2)), "2 s");
        assert_eq!(duration_label(at(300)), "5 min");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5");
    }

    #[test]
    fn a_long_run_stays_small() {
        // 20 000 payments over 200 s: 1 s slices, so the page does not grow with the run.
        let page = render(&[], &[run("long", 20_000, true)]);
        let bars = page.matches("<rect class=\"bar\"").count();
        // At most 200 slices of 3 series (primary, standby, failed), retries and 2 ledger bars.
        assert!(bars <= 200 * 6, "{bars} bars");
        assert!(page.len() < 400_000, "{} bytes", page.len());
        assert!(page.contains("started per 1 s"));
    }
}
