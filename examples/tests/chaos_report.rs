//! `chaos --report FILE.html`: the page is written, well formed and self-contained, its numbers
//! agree with the text table, and it renders in headless Chromium.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use common::{chaos, stdout_of_success};
use roxmltree::{Document, Node, ParsingOptions};
use test_support::chromium::{self, Chromium, parse_color};

/// One short run of both clients with `--report`, shared by the tests of this file.
struct Report {
    path: PathBuf,
    html: String,
    stdout: String,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-report")
}

fn report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let dir = dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.html");
        let _ = std::fs::remove_file(&path);
        let stdout = stdout_of_success(
            chaos()
                .args(["--short", "--naive", "--seed", "7", "--report"])
                .arg(&path),
        );
        assert!(
            stdout.contains(&format!("report: {}", path.display())),
            "{stdout}"
        );
        let html = std::fs::read_to_string(&path).expect("the report was written");
        Report { path, html, stdout }
    })
}

fn parse(html: &str) -> Document<'_> {
    Document::parse_with_options(
        html,
        ParsingOptions {
            allow_dtd: true,
            ..ParsingOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("the report is not well formed: {e}"))
}

/// The text table's rows: name (indentation kept) → cells.
fn text_rows(stdout: &str) -> Vec<(String, Vec<String>)> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("---"));
    lines.next();
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|line| {
            // Cells are right-aligned after two spaces; a name never contains two spaces in a row
            // after its indentation.
            let indent = line.len() - line.trim_start().len();
            let mut parts: Vec<&str> = line[indent..]
                .split("  ")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            let name = format!("{}{}", &line[..indent], parts.remove(0));
            (name, parts.into_iter().map(str::to_owned).collect())
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    &rows
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no row {name}"))
        .1
}

fn number(cell: &str) -> u64 {
    cell.parse()
        .unwrap_or_else(|_| panic!("`{cell}` is a count"))
}

fn svg<'a, 'i>(doc: &'a Document<'i>, run: &str) -> Node<'a, 'i> {
    let runs: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("svg") && n.attribute("data-run") == Some(run))
        .collect();
    assert_eq!(runs.len(), 1, "one timeline of the {run} run");
    runs[0]
}

/// The sum of `data-count` of the bars of `panel` whose series starts with `series`.
fn bars(svg: Node<'_, '_>, panel: &str, series: &str) -> u64 {
    svg.descendants()
        .filter(|n| n.attribute("data-panel") == Some(panel))
        .flat_map(|g| g.descendants())
        .filter(|n| {
            n.attribute("data-series")
                .is_some_and(|s| s.starts_with(series))
        })
        .map(|n| number(n.attribute("data-count").expect("a bar has a count")))
        .sum()
}

/// The states drawn on the lane named `lane`.
fn states(svg: Node<'_, '_>, lane: &str) -> Vec<String> {
    svg.descendants()
        .filter(|n| n.attribute("data-lane") == Some(lane))
        .flat_map(|g| g.children())
        .filter_map(|n| n.attribute("data-state").map(str::to_owned))
        .collect()
}

#[test]
fn the_report_is_well_formed_self_contained_and_agrees_with_the_table() {
    let report = report();
    let doc = parse(&report.html);
    assert_eq!(doc.root_element().tag_name().name(), "html");

    // Self-contained: nothing to fetch, nothing to run.
    for node in doc.descendants().filter(Node::is_element) {
        let tag = node.tag_name().name();
        assert!(
            ![
                "script", "link", "img", "iframe", "object", "embed", "image", "use"
            ]
            .contains(&tag),
            "<{tag}> in the report"
        );
        for attr in node.attributes() {
            assert!(
                !["src", "href"].contains(&attr.name()) && !attr.value().contains("://"),
                "<{tag} {}=\"{}\">",
                attr.name(),
                attr.value()
            );
        }
    }
    let style: String = doc
        .descendants()
        .filter(|n| n.has_tag_name("style"))
        .filter_map(|n| n.text())
        .collect();
    assert!(!style.is_empty());
    assert!(!style.contains("url(") && !style.contains("@import"));

    // The summary table is the text table.
    let rows = text_rows(&report.stdout);
    assert!(rows.len() > 20, "{}", report.stdout);
    let table: Vec<(String, Vec<String>)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("tbody"))
        .flat_map(|b| b.children().filter(|n| n.has_tag_name("tr")))
        .map(|tr| {
            let cells: Vec<String> = tr
                .children()
                .filter(|n| n.has_tag_name("td"))
                .map(|td| td.text().unwrap_or("").to_owned())
                .collect();
            let indent = if tr.attribute("class") == Some("sub") {
                "  "
            } else {
                ""
            };
            (format!("{indent}{}", cells[0]), cells[1..].to_vec())
        })
        .collect();
    assert_eq!(table, rows);

    // Each run's bars add up to the table's numbers.
    let sent = number(&row(&rows, "payments sent")[0]);
    let (naive, protected) = (svg(&doc, "naive"), svg(&doc, "protected"));
    for (i, run) in [naive, protected].into_iter().enumerate() {
        assert_eq!(bars(run, "payments", ""), sent);
        assert_eq!(
            bars(run, "payments", "succeeded:"),
            number(&row(&rows, "succeeded")[i])
        );
        assert_eq!(
            bars(run, "payments", "failed")
                + bars(run, "payments", "rejected")
                + bars(run, "payments", "deferred"),
            number(&row(&rows, "failed (by reason)")[i])
        );
    }
    // The naive loop counts its own attempts, so its retries are the table's; the ledger is
    // read at the end of the run (after the re-drive, for the protected client).
    assert_eq!(
        bars(naive, "retries", ""),
        number(&row(&rows, "retries")[0])
    );
    assert_eq!(
        bars(naive, "ledger", "lost"),
        number(&row(&rows, "LOST")[0])
    );
    assert_eq!(
        bars(naive, "ledger", "charged-twice"),
        number(&row(&rows, "DUPLICATED")[0])
    );
    assert!(
        bars(naive, "ledger", "") > 0,
        "the naive run loses or double-charges"
    );
    assert_eq!(
        bars(protected, "ledger", "lost"),
        number(&row(&rows, "LOST after re-drive")[1])
    );
    assert_eq!(bars(protected, "ledger", "charged-twice"), 0);

    // Which endpoint served: the naive loop knows only the primary; the protected client
    // fails over to the standby during the outage.
    assert_eq!(bars(naive, "payments", "succeeded:standby"), 0);
    assert!(bars(naive, "payments", "succeeded:primary") > 0);
    assert!(bars(protected, "payments", "succeeded:standby") > 0);

    // The outage (0.2 s for 0.4 s with --short) on both; the breaker and the endpoints on the
    // protected run only, and the primary was judged down during the outage.
    for run in [naive, protected] {
        assert_eq!(states(run, "outage"), ["down"]);
        let title = run
            .descendants()
            .find(|n| n.attribute("data-lane") == Some("outage"))
            .and_then(|g| g.descendants().find(|n| n.has_tag_name("title")))
            .and_then(|t| t.text())
            .unwrap();
        assert_eq!(title, "primary down 0.2–0.6 s");
    }
    assert!(states(naive, "endpoint primary").is_empty());
    let breaker = states(protected, "breaker chaos-upstream");
    assert_eq!(breaker.first().map(String::as_str), Some("closed"));
    let primary = states(protected, "endpoint primary");
    assert_eq!(primary.first().map(String::as_str), Some("healthy"));
    assert!(
        primary.iter().any(|s| s == "ejected" || s == "unhealthy"),
        "{primary:?}"
    );
    assert_eq!(
        states(protected, "endpoint standby")
            .first()
            .map(String::as_str),
        Some("healthy")
    );
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let chromium = match Chromium::find() {
        Ok(c) => c,
        Err(e) if !chromium::required() => return eprintln!("skipping: {e}"),
        Err(e) => panic!("{e}"),
    };
    let report = report();
    let png = chromium
        .screenshot_png(&report.path, 1280, 1600)
        .unwrap_or_else(|e| panic!("{e}"));
    // Kept for a person to look at.
    let kept = dir().join("report.png");
    std::fs::write(&kept, &png).unwrap();
    let shot = chromium::Screenshot::decode(&png).unwrap();

    // What the page paints, by color: the area of every bar, lane span and frame line. The
    // SVG is drawn at 1:1 (fixed pixel sizes, device scale 1) with crisp integer rectangles, so
    // each covers exactly its area in its exact color.
    let doc = parse(&report.html);
    let mut painted: BTreeMap<String, u64> = BTreeMap::new();
    let mut frames = 0;
    for rect in doc.descendants().filter(|n| n.has_tag_name("rect")) {
        let class = rect.attribute("class").unwrap_or("");
        let in_frame = rect
            .parent()
            .is_some_and(|p| p.attribute("class") == Some("frame"));
        if class != "bar" && class != "span" && !in_frame {
            continue;
        }
        let size = |name: &str| number(rect.attribute(name).unwrap());
        let area = size("width") * size("height");
        *painted
            .entry(rect.attribute("fill").unwrap().to_owned())
            .or_default() += area;
        frames += u64::from(in_frame && size("height") == 1);
    }
    let bar_area: u64 = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("bar"))
        .map(|n| number(n.attribute("width").unwrap()) * number(n.attribute("height").unwrap()))
        .sum();
    // Not blank by construction: two runs' worth of bars (200 payments each).
    assert!(bar_area > 20_000, "{bar_area} px of bars");
    assert_eq!(frames, 12, "2 runs × 3 panels × top and bottom lines");

    // The chart area is not blank: every color covers (at least) the area the page gives it.
    for (color, area) in &painted {
        let rgb = parse_color(color).unwrap_or_else(|| panic!("{color} is #rrggbb"));
        let seen = shot.count(rgb, 2) as u64;
        assert!(
            seen * 10 >= area * 9,
            "{color}: {seen} px on screen, {area} px painted (screenshot: {})",
            kept.display()
        );
    }
    // The frames' horizontal lines lie where the layout puts them, one 1-pixel row each.
    let frame = parse_color(
        doc.descendants()
            .find(|n| n.attribute("class") == Some("frame"))
            .and_then(|g| g.first_element_child())
            .and_then(|r| r.attribute("fill"))
            .unwrap(),
    )
    .unwrap();
    let lines = shot.rows_with(frame, 2, 700);
    assert_eq!(
        lines.len(),
        12,
        "{lines:?} (screenshot: {})",
        kept.display()
    );
}
