//! Measuring a call in criterion and keeping ns/call and allocations/call for a report.
//!
//! [`bench_calls`] runs a routine through criterion's `iter_custom`: inputs are built outside
//! the timed region (in chunks, so memory stays bounded at any iteration count), then the calls
//! are timed and the thread's allocations counted around exactly the same loop. Each sample is
//! kept here too, and [`finish`] prints one markdown table per group (ns/call, allocations/call,
//! overhead over the group's bare service, and the ratios asked for with [`compare`]) and writes it
//! to `target/bench-report/<bench>.md`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;

use crate::alloc::allocations;

/// The id every group uses for its bare `service_fn` baseline.
pub const BARE: &str = "bare";

/// Inputs built per chunk, outside the timed region.
const CHUNK: u64 = 4096;

#[derive(Debug, Default)]
struct Stats {
    /// (iterations, elapsed) per sample.
    samples: Vec<(u64, Duration)>,
    iters: u64,
    allocs: Option<u64>,
    note: Option<String>,
}

/// The rows of one group, in the order they were first measured.
#[derive(Debug, Default)]
struct Rows(Vec<(String, Stats)>);

impl Rows {
    fn get(&self, id: &str) -> Option<&Stats> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, s)| s)
    }

    fn entry(&mut self, id: &str) -> &mut Stats {
        let idx = if let Some(i) = self.0.iter().position(|(i, _)| i == id) {
            i
        } else {
            self.0.push((id.to_owned(), Stats::default()));
            self.0.len() - 1
        };
        &mut self.0[idx].1
    }
}

#[derive(Debug, Default)]
struct Book {
    /// group → id → stats, in insertion order of groups.
    groups: Vec<(String, Rows)>,
    /// group → (ours, peer) pairs to print as ratios.
    pairs: Vec<(String, String, String)>,
}

static BOOK: Mutex<Book> = Mutex::new(Book {
    groups: Vec::new(),
    pairs: Vec::new(),
});

fn with_stats(group: &str, id: &str, f: impl FnOnce(&mut Stats)) {
    let mut book = BOOK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let idx = if let Some(i) = book.groups.iter().position(|(g, _)| g == group) {
        i
    } else {
        book.groups.push((group.to_owned(), Rows::default()));
        book.groups.len() - 1
    };
    f(book.groups[idx].1.entry(id));
}

/// Records one externally timed sample (for benches that cannot use [`bench_calls`], such as
/// multi-threaded ones). `allocs` is `None` when it cannot be attributed to one thread.
pub fn record(group: &str, id: &str, iters: u64, elapsed: Duration, allocs: Option<u64>) {
    with_stats(group, id, |s| {
        s.samples.push((iters, elapsed));
        s.iters += iters;
        s.allocs = match (s.allocs, allocs) {
            (Some(a), Some(b)) => Some(a + b),
            (None, Some(b)) if s.samples.len() == 1 => Some(b),
            _ => None,
        };
    });
}

/// Attaches a free-text note to a row (printed in the table's last column).
pub fn note(group: &str, id: &str, text: impl Into<String>) {
    let text = text.into();
    with_stats(group, id, |s| s.note = Some(text));
}

/// Asks [`finish`] to print `ours / peer` (time and allocations) for this group.
pub fn compare(group: &str, ours: &str, peer: &str) {
    let mut book = BOOK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    book.pairs
        .push((group.to_owned(), ours.to_owned(), peer.to_owned()));
}

/// Benches `call(input())` as one criterion function `id` of `group`, and keeps its ns/call and
/// allocations/call for the report. `input` runs outside the timed region; the outputs are
/// dropped outside it too (a response's drop is the caller's business, not the layer's).
pub fn bench_calls<I, O>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    mut input: impl FnMut() -> I,
    mut call: impl FnMut(I) -> O,
) {
    let group_name = group_name(group);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut allocs = 0;
            let mut done = 0;
            let mut inputs = Vec::with_capacity(CHUNK.min(iters) as usize);
            let mut outputs = Vec::with_capacity(CHUNK.min(iters) as usize);
            while done < iters {
                let n = CHUNK.min(iters - done);
                inputs.extend((0..n).map(|_| input()));
                let a0 = allocations();
                let t0 = Instant::now();
                for i in inputs.drain(..) {
                    outputs.push(black_box(call(black_box(i))));
                }
                elapsed += t0.elapsed();
                allocs += allocations() - a0;
                outputs.clear();
                done += n;
            }
            record(&group_name, id, iters, elapsed, Some(allocs));
            elapsed
        });
    });
}

// criterion does not expose a group's name; each bench file registers it with `group()`.
thread_local! {
    static CURRENT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Opens a criterion group whose rows go to the report under the same name.
pub fn group<'a>(c: &'a mut criterion::Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    CURRENT.with(|cur| name.clone_into(&mut cur.borrow_mut()));
    c.benchmark_group(name)
}

fn group_name(_group: &BenchmarkGroup<'_, WallTime>) -> String {
    CURRENT.with(|cur| cur.borrow().clone())
}

/// The name of the group most recently opened with [`group`] (for [`record`] callers).
#[must_use]
pub fn current_group() -> String {
    CURRENT.with(|cur| cur.borrow().clone())
}

impl Stats {
    /// ns/call: the median over samples, ignoring the small warm-up samples (under a tenth of the
    /// largest sample's iterations), which are dominated by timer and cache effects.
    fn ns_per_call(&self) -> Option<f64> {
        let max = self.samples.iter().map(|s| s.0).max()?;
        let mut per: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.0 * 10 >= max)
            .map(|s| s.1.as_nanos() as f64 / s.0 as f64)
            .collect();
        per.sort_by(f64::total_cmp);
        per.get(per.len() / 2).copied()
    }

    fn allocs_per_call(&self) -> Option<f64> {
        let allocs = self.allocs?;
        (self.iters > 0).then(|| allocs as f64 / self.iters as f64)
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 100_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}

fn fmt_allocs(a: Option<f64>) -> String {
    match a {
        Some(a) if (a - a.round()).abs() < 0.05 => format!("{a:.0}"),
        Some(a) => format!("{a:.2}"),
        None => "n/a".to_owned(),
    }
}

/// Renders the report as markdown.
#[must_use]
pub fn render() -> String {
    let book = BOOK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = String::new();
    for (group, rows) in &book.groups {
        let bare = rows.get(BARE).and_then(Stats::ns_per_call);
        let _ = writeln!(out, "\n### {group}\n");
        let _ = writeln!(out, "| bench | ns/call | allocs/call | over bare | note |");
        let _ = writeln!(out, "|---|---:|---:|---:|---|");
        for (id, stats) in &rows.0 {
            let Some(ns) = stats.ns_per_call() else {
                continue;
            };
            let over = match bare {
                Some(b) if id != BARE => format!("{:+.1} ns", ns - b),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| {id} | {} | {} | {over} | {} |",
                fmt_ns(ns),
                fmt_allocs(stats.allocs_per_call()),
                stats.note.as_deref().unwrap_or(""),
            );
        }
        let pairs: Vec<_> = book.pairs.iter().filter(|p| &p.0 == group).collect();
        if !pairs.is_empty() {
            let _ = writeln!(out);
            for (_, ours, peer) in pairs {
                let (Some(a), Some(b)) = (rows.get(ours), rows.get(peer)) else {
                    continue;
                };
                let (Some(ta), Some(tb)) = (a.ns_per_call(), b.ns_per_call()) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "- `{ours}` / `{peer}`: time ×{:.2}, allocs {} vs {}",
                    ta / tb,
                    fmt_allocs(a.allocs_per_call()),
                    fmt_allocs(b.allocs_per_call()),
                );
            }
        }
    }
    out
}

/// The directory reports are written to: `<target>/bench-report`.
#[must_use]
pub fn report_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("bench-report");
    }
    // target/<profile>/deps/<bench>-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench-report")
}

/// Prints the report and writes it to `target/bench-report/<bench>.md`. Does nothing when no row
/// was measured (e.g. `cargo bench -- --list`, or a filter that matched nothing in this binary).
pub fn finish(bench: &str) {
    let text = render();
    if !text.contains("| bench |")
        || !text
            .lines()
            .any(|l| l.starts_with("| ") && !l.starts_with("| bench"))
    {
        return;
    }
    println!("\n## {bench}\n{text}");
    let dir = report_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let path = dir.join(format!("{bench}.md"));
        if let Err(e) = std::fs::write(&path, format!("## {bench}\n{text}")) {
            eprintln!("could not write {}: {e}", path.display());
        } else {
            println!("(written to {})", path.display());
        }
    }
}
