//! The alert rules in `alerts/` and the metric names they use.
//!
//! * Every metric each layer crate exports (its `metrics` module) follows the naming
//!   conventions, and its `describe()` gives it help text and the right unit.
//! * Prometheus's `promtool` accepts every rule file and passes every unit test in
//!   `alerts/tests/` (series in, alerts out); every alert has a test in which it fires.
//! * Every metric name and label value in the rules and in the tests' input series is one the
//!   crates export — so a metric renamed in a crate, or a typo in a rule (which would never
//!   fire), fails here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Mutex,
};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    with_local_recorder,
};
use test_support::prometheus::{Promtool, required};
use yaml_rust2::{Yaml, YamlLoader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: its name, kind and labels (`None`: any value, such as an instance name).
#[derive(Debug)]
struct Metric {
    name: &'static str,
    kind: Kind,
    labels: Vec<(&'static str, Option<&'static [&'static str]>)>,
}

fn metric(
    name: &'static str,
    kind: Kind,
    labels: &[(&'static str, Option<&'static [&'static str]>)],
) -> Metric {
    Metric {
        name,
        kind,
        labels: labels.to_vec(),
    }
}

/// The layer crates' `metrics` modules: (the crate's metric prefix, its rules file's stem,
/// every metric it exports).
fn catalogue() -> Vec<(&'static str, &'static str, Vec<Metric>)> {
    use Kind::{Counter, Gauge, Histogram};
    use tower_breaker::metrics as breaker;
    use tower_failover::metrics as failover;
    use tower_idempotency::metrics as idempotency;
    use tower_redrive::metrics as redrive;
    use tower_retry_plus::metrics as retry;
    const NAME: (&str, Option<&[&str]>) = ("name", None);
    const ENDPOINT: (&str, Option<&[&str]>) = ("endpoint", None);
    vec![
        (
            "retry_",
            "retry",
            vec![
                metric(
                    retry::REQUESTS_TOTAL,
                    Counter,
                    &[NAME, ("outcome", Some(&retry::OUTCOMES))],
                ),
                metric(retry::ATTEMPTS_TOTAL, Counter, &[NAME]),
                metric(retry::BACKOFF_SECONDS, Histogram, &[NAME]),
            ],
        ),
        (
            "breaker_",
            "breaker",
            vec![
                metric(breaker::STATE, Gauge, &[NAME]),
                metric(
                    breaker::TRANSITIONS_TOTAL,
                    Counter,
                    &[
                        NAME,
                        ("from", Some(&breaker::STATES)),
                        ("to", Some(&breaker::STATES)),
                    ],
                ),
                metric(
                    breaker::CALLS_TOTAL,
                    Counter,
                    &[NAME, ("result", Some(&breaker::CALL_RESULTS))],
                ),
            ],
        ),
        (
            "failover_",
            "failover",
            vec![
                metric(failover::REQUESTS_TOTAL, Counter, &[NAME, ENDPOINT]),
                metric(failover::ENDPOINT_HEALTHY, Gauge, &[NAME, ENDPOINT]),
                metric(
                    failover::EJECTIONS_TOTAL,
                    Counter,
                    &[NAME, ENDPOINT, ("cause", Some(&failover::EJECTION_CAUSES))],
                ),
                metric(
                    failover::EJECTIONS_REFUSED_TOTAL,
                    Counter,
                    &[NAME, ENDPOINT],
                ),
                metric(failover::ACTIVE_TIER, Gauge, &[NAME]),
            ],
        ),
        (
            "idempotency_",
            "idempotency",
            vec![
                metric(
                    idempotency::REQUESTS_TOTAL,
                    Counter,
                    &[NAME, ("result", Some(&idempotency::RESULTS))],
                ),
                metric(
                    idempotency::STORE_SECONDS,
                    Histogram,
                    &[NAME, ("op", Some(&idempotency::STORE_OPERATIONS))],
                ),
                // No `name`: one memory store may serve several layers.
                metric(idempotency::MEMORY_EVICTIONS_TOTAL, Counter, &[]),
            ],
        ),
        (
            "redrive_",
            "redrive",
            vec![
                metric(redrive::QUEUE_DEPTH, Gauge, &[NAME]),
                metric(redrive::DEAD_LETTERS, Gauge, &[NAME]),
                metric(redrive::OLDEST_AGE_SECONDS, Gauge, &[NAME]),
                metric(
                    redrive::DELIVERIES_TOTAL,
                    Counter,
                    &[NAME, ("result", Some(&redrive::RESULTS))],
                ),
                metric(
                    redrive::STORE_ERRORS_TOTAL,
                    Counter,
                    &[NAME, ("operation", Some(&redrive::OPERATIONS))],
                ),
            ],
        ),
    ]
}

#[test]
fn exported_metric_names_follow_the_conventions() {
    let mut seen = BTreeSet::new();
    for (prefix, _, metrics) in catalogue() {
        for m in metrics {
            assert!(seen.insert(m.name), "{} exported twice", m.name);
            assert!(m.name.starts_with(prefix), "{} lacks {prefix}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{} is not snake_case",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                m.name
            );
            if m.name.contains("second") {
                assert!(
                    m.name.ends_with("_seconds") || m.name.ends_with("_seconds_total"),
                    "{}: a time in base units ends in _seconds",
                    m.name
                );
            }
            let has_name = m.labels.iter().any(|(label, _)| *label == "name");
            assert!(
                has_name || m.name == tower_idempotency::metrics::MEMORY_EVICTIONS_TOTAL,
                "{}: every series is labelled by the instance name",
                m.name
            );
            for (label, values) in &m.labels {
                for v in values.iter().flat_map(|v| v.iter()) {
                    assert!(
                        !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                        "{}{{{label}={v:?}}}: label values are snake_case",
                        m.name
                    );
                }
            }
        }
    }
}

/// What `describe` registered for one metric: its kind, unit and help text.
type Description = (Kind, Option<Unit>, String);

/// Records what `describe` registers.
#[derive(Debug, Default)]
struct Descriptions(Mutex<BTreeMap<String, Description>>);

impl Descriptions {
    fn describe(&self, kind: Kind, key: KeyName, unit: Option<Unit>, help: SharedString) {
        let previous = self
            .0
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), (kind, unit, help.into_owned()));
        assert!(previous.is_none(), "{} described twice", key.as_str());
    }
}

impl Recorder for Descriptions {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(Kind::Counter, key, unit, help);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(Kind::Gauge, key, unit, help);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(Kind::Histogram, key, unit, help);
    }
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn describe_gives_every_metric_help_text_and_its_unit() {
    let recorder = Descriptions::default();
    with_local_recorder(&recorder, || {
        tower_retry_plus::metrics::describe();
        tower_breaker::metrics::describe();
        tower_failover::metrics::describe();
        tower_idempotency::metrics::describe();
        tower_redrive::metrics::describe();
    });
    let described = recorder.0.into_inner().unwrap();
    let exported: BTreeSet<&str> = catalogue()
        .into_iter()
        .flat_map(|(_, _, metrics)| metrics.into_iter().map(|m| m.name))
        .collect();
    assert_eq!(
        described
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        exported,
        "every exported metric is described, and only those"
    );
    for (_, _, metrics) in catalogue() {
        for m in metrics {
            let (kind, unit, help) = &described[m.name];
            assert_eq!(*kind, m.kind, "{} described as a {kind:?}", m.name);
            assert!(
                help.len() > 10 && help.ends_with('.'),
                "{}: {help:?}",
                m.name
            );
            if m.name.ends_with("_seconds") {
                assert_eq!(*unit, Some(Unit::Seconds), "{}", m.name);
            } else {
                assert!(
                    matches!(unit, None | Some(Unit::Count)),
                    "{}: {unit:?}",
                    m.name
                );
            }
        }
    }
}

fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerts")
}

/// The files in `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap();
    let mut docs =
        YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

fn str_of<'a>(yaml: &'a Yaml, what: &str) -> &'a str {
    yaml.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {yaml:?}"))
}

fn list<'a>(yaml: &'a Yaml, what: &str) -> &'a [Yaml] {
    yaml.as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {yaml:?}"))
}

/// One alerting rule.
#[derive(Debug)]
struct Rule {
    file: String,
    alert: String,
    expr: String,
    severity: String,
    annotations: BTreeMap<String, String>,
}

/// Every rule of every `*.rules.yml`, with the file's stem.
fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for path in files(&alerts_dir(), ".rules.yml") {
        let file = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".rules.yml")
            .to_owned();
        let doc = load(&path);
        for group in list(&doc["groups"], "groups") {
            for rule in list(&group["rules"], "rules") {
                let alert = str_of(&rule["alert"], "alert (only alerting rules)").to_owned();
                let annotations = rule["annotations"]
                    .as_hash()
                    .unwrap_or_else(|| panic!("{alert}: no annotations"))
                    .iter()
                    .map(|(k, v)| (str_of(k, &alert).to_owned(), str_of(v, &alert).to_owned()))
                    .collect();
                rules.push(Rule {
                    file: file.clone(),
                    expr: str_of(&rule["expr"], &alert).to_owned(),
                    severity: str_of(&rule["labels"]["severity"], &alert).to_owned(),
                    alert,
                    annotations,
                });
            }
        }
    }
    rules
}

/// A metric selector in PromQL: the metric's name and its label matchers `(label, op, value)`.
#[derive(Debug, PartialEq, Eq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Words that are PromQL syntax, not metric names.
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
/// Words followed by a list of label names in parentheses.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric selectors of a PromQL expression (or of a promtool input series): every name
/// that is not a function, an aggregation, a keyword or a label in a grouping list, with the
/// matchers in braces after it.
fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let string = |i: usize| -> Result<(String, usize), String> {
        let quote = chars[i];
        let mut out = String::new();
        let mut j = i + 1;
        while j < chars.len() && chars[j] != quote {
            if chars[j] == '\\' && quote != '`' {
                j += 1;
            }
            out.extend(chars.get(j));
            j += 1;
        }
        if j >= chars.len() {
            return Err(format!("unterminated string in {expr:?}"));
        }
        Ok((out, j + 1))
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = string(i)?.1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`0.05`, `1e3`, `5m`).
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            return Err(format!("a selector without a metric name in {expr:?}"));
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            if LABEL_LISTS.contains(&word.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = next;
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                }
            } else if KEYWORDS.contains(&word.as_str())
                || chars.get(next) == Some(&'(')
                || ["by", "without"].iter().any(|g| {
                    let end = next + g.len();
                    chars
                        .get(next..end)
                        .is_some_and(|w| w.iter().copied().eq(g.chars()))
                        && !chars.get(end).copied().is_some_and(ident)
                })
            {
                // Syntax, a function, or an aggregation (`sum by (name) (…)`).
            } else {
                let mut matchers = Vec::new();
                if chars.get(next) == Some(&'{') {
                    i = next + 1;
                    loop {
                        i = skip_ws(i);
                        match chars.get(i) {
                            Some('}') => {
                                i += 1;
                                break;
                            }
                            Some(',') => i += 1,
                            Some(_) => {
                                let label_start = i;
                                while i < chars.len() && ident(chars[i]) {
                                    i += 1;
                                }
                                let label: String = chars[label_start..i].iter().collect();
                                i = skip_ws(i);
                                let op_start = i;
                                while i < chars.len() && "=!~".contains(chars[i]) {
                                    i += 1;
                                }
                                let op: String = chars[op_start..i].iter().collect();
                                i = skip_ws(i);
                                if label.is_empty()
                                    || !["=", "!=", "=~", "!~"].contains(&op.as_str())
                                    || !matches!(chars.get(i), Some('"' | '\'' | '`'))
                                {
                                    return Err(format!("a bad label matcher in {expr:?}"));
                                }
                                let (value, end) = string(i)?;
                                i = end;
                                matchers.push((label, op, value));
                            }
                            None => return Err(format!("unclosed braces in {expr:?}")),
                        }
                    }
                }
                out.push(Selector {
                    name: word,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

#[test]
fn the_promql_scanner_finds_metric_names_and_matchers() {
    let found = selectors(
        "sum by (name) (increase(x_total{result=~\"a|b\", op!=\"c\"}[5m])) / on(name) \
         group_left y > 4 * 86400 and z unless sum(rate(w[1h])) by (le) # not_a_metric",
    )
    .unwrap();
    let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["x_total", "y", "z", "w"]);
    assert_eq!(
        found[0].matchers,
        [
            ("result".into(), "=~".into(), "a|b".into()),
            ("op".into(), "!=".into(), "c".into())
        ]
    );
    assert!(selectors("{name=\"a\"}").is_err());
    assert!(selectors("x{name=\"a}").is_err());
}

/// Where a selector's name is found: the metric (for a histogram's `_sum`, `_count` or
/// `_bucket` series, the histogram) and the extra labels that series has.
fn lookup<'a>(
    catalogue: &'a BTreeMap<&'static str, (&'static str, Metric)>,
    name: &str,
) -> Option<(&'a str, &'a Metric, &'static [&'static str])> {
    if let Some((file, m)) = catalogue.get(name) {
        // metrics-exporter-prometheus renders histograms as summaries unless given buckets.
        let extra: &[&str] = if m.kind == Kind::Histogram {
            &["quantile"]
        } else {
            &[]
        };
        return Some((file, m, extra));
    }
    ["_sum", "_count", "_bucket"].iter().find_map(|suffix| {
        let (file, m) = catalogue.get(name.strip_suffix(suffix)?)?;
        let extra: &[&str] = if *suffix == "_bucket" { &["le"] } else { &[] };
        (m.kind == Kind::Histogram).then_some((*file, m, extra))
    })
}

/// Checks one selector against the exported metrics; `file` is the rules file (stem) it is
/// used for. Returns what is wrong.
fn check_selector(
    catalogue: &BTreeMap<&'static str, (&'static str, Metric)>,
    file: &str,
    selector: &Selector,
) -> Result<(), String> {
    let Some((owner, metric, extra)) = lookup(catalogue, &selector.name) else {
        return Err(format!("{} is not an exported metric", selector.name));
    };
    if owner != file {
        return Err(format!("{} belongs in {owner}.rules.yml", selector.name));
    }
    for (label, op, value) in &selector.matchers {
        let allowed = match metric.labels.iter().find(|(l, _)| l == label) {
            Some((_, allowed)) => *allowed,
            None if extra.contains(&label.as_str()) => None,
            None => return Err(format!("{} has no label {label}", selector.name)),
        };
        let Some(allowed) = allowed else { continue };
        let values: Vec<&str> = if op.ends_with('~') {
            value.split('|').collect()
        } else {
            vec![value.as_str()]
        };
        for v in values {
            if !allowed.contains(&v) {
                return Err(format!(
                    "{}{{{label}{op}{value:?}}}: {v:?} is not one of {allowed:?}",
                    selector.name
                ));
            }
        }
    }
    Ok(())
}

fn indexed_catalogue() -> BTreeMap<&'static str, (&'static str, Metric)> {
    catalogue()
        .into_iter()
        .flat_map(|(_, file, metrics)| metrics.into_iter().map(move |m| (m.name, (file, m))))
        .collect()
}

#[test]
fn selector_checks_catch_renamed_metrics_and_labels() {
    let catalogue = indexed_catalogue();
    let check = |file: &str, expr: &str| {
        selectors(expr)
            .unwrap()
            .iter()
            .try_for_each(|s| check_selector(&catalogue, file, s))
    };
    check(
        "retry",
        "rate(retry_requests_total{outcome=~\"exhausted|budget_exhausted\"}[5m])",
    )
    .unwrap();
    check(
        "idempotency",
        "idempotency_store_seconds_count{op=\"claim\"}",
    )
    .unwrap();
    check("retry", "rate(retry_request_total[5m])").unwrap_err();
    check("retry", "retry_requests_total{outcome=\"budget_denied\"}").unwrap_err();
    check("retry", "retry_requests_total{result=\"exhausted\"}").unwrap_err();
    check("breaker", "retry_attempts_total").unwrap_err();
    check("breaker", "breaker_state_count").unwrap_err();
}

#[test]
fn rules_and_their_tests_use_only_exported_metric_names_and_label_values() {
    let catalogue = indexed_catalogue();
    let rules = rules();
    assert!(rules.len() >= 20, "{} rules", rules.len());
    let mut problems = Vec::new();
    for rule in &rules {
        for selector in selectors(&rule.expr).unwrap() {
            if let Err(e) = check_selector(&catalogue, &rule.file, &selector) {
                problems.push(format!("{}.rules.yml {}: {e}", rule.file, rule.alert));
            }
        }
    }
    for path in files(&alerts_dir().join("tests"), ".test.yml") {
        let file = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".test.yml")
            .to_owned();
        let doc = load(&path);
        for group in list(&doc["tests"], "tests") {
            for series in list(&group["input_series"], "input_series") {
                let text = str_of(&series["series"], "series");
                let found = selectors(text).unwrap();
                let [selector] = found.as_slice() else {
                    panic!("{text}: one series");
                };
                let problem = check_selector(&catalogue, &file, selector).and_then(|()| {
                    // A series the crates would emit has every label of its metric, set.
                    let (_, metric, _) = lookup(&catalogue, &selector.name).unwrap();
                    let given: BTreeSet<&str> =
                        selector.matchers.iter().map(|(l, ..)| l.as_str()).collect();
                    let expected: BTreeSet<&str> = metric.labels.iter().map(|(l, _)| *l).collect();
                    if selector.matchers.iter().any(|(_, op, _)| op != "=") || given != expected {
                        Err(format!("labels {given:?}, expected {expected:?}"))
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = problem {
                    problems.push(format!("tests/{file}.test.yml {text}: {e}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_alert_has_a_severity_a_runbook_and_a_test_where_it_fires() {
    let rules = rules();
    let mut firing = BTreeSet::new();
    let mut tested_files = BTreeSet::new();
    for path in files(&alerts_dir().join("tests"), ".test.yml") {
        let doc = load(&path);
        let stem = path.file_name().unwrap().to_str().unwrap();
        let rule_files: Vec<&str> = list(&doc["rule_files"], "rule_files")
            .iter()
            .map(|f| str_of(f, "rule_files"))
            .collect();
        assert_eq!(
            rule_files,
            [format!("../{}", stem.replace(".test.yml", ".rules.yml"))],
            "{stem} tests its own rules file"
        );
        tested_files.insert(stem.trim_end_matches(".test.yml").to_owned());
        for group in list(&doc["tests"], "tests") {
            for case in list(&group["alert_rule_test"], "alert_rule_test") {
                if !list(&case["exp_alerts"], "exp_alerts").is_empty() {
                    firing.insert(str_of(&case["alertname"], "alertname").to_owned());
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    for rule in &rules {
        assert!(names.insert(&rule.alert), "{} defined twice", rule.alert);
        assert!(
            ["info", "warning", "critical"].contains(&rule.severity.as_str()),
            "{}: severity {}",
            rule.alert,
            rule.severity
        );
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                rule.annotations
                    .get(annotation)
                    .is_some_and(|a| a.len() > 20),
                "{}: no {annotation}",
                rule.alert
            );
        }
        assert!(
            firing.contains(&rule.alert),
            "{}: no promtool test in which it fires",
            rule.alert
        );
        assert!(tested_files.contains(&rule.file), "{}.rules.yml", rule.file);
    }
    for severity in ["info", "warning", "critical"] {
        assert!(
            rules.iter().any(|r| r.severity == severity),
            "no {severity} rule"
        );
    }
    let layers: BTreeSet<&str> = rules.iter().map(|r| r.file.as_str()).collect();
    let expected: BTreeSet<&str> = catalogue().iter().map(|(_, file, _)| *file).collect();
    assert_eq!(layers, expected, "rules for every layer");
}

/// `promtool check rules` and `promtool test rules`: Prometheus's own parser and evaluator.
#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    let promtool = match Promtool::find() {
        Ok(p) => p,
        Err(e) if !required() => return eprintln!("skipping: {e}"),
        Err(e) => panic!("{e}"),
    };
    let dir = alerts_dir();
    let rule_files = files(&dir, ".rules.yml");
    let test_files = files(&dir.join("tests"), ".test.yml");
    assert_eq!(rule_files.len(), 5, "{rule_files:?}");
    assert_eq!(test_files.len(), rule_files.len(), "{test_files:?}");
    let checked = promtool
        .check_rules(&rule_files)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        checked.matches("SUCCESS").count(),
        rule_files.len(),
        "{checked}"
    );
    let tested = promtool
        .test_rules(&test_files)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tested.matches("SUCCESS").count(),
        test_files.len(),
        "{tested}"
    );
}
