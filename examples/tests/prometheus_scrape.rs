//! A real scrape: the `axum_server` example with its fraud check pointed at a dead downstream,
//! a real Prometheus scraping its `/metrics` every 200 ms with the rules of `alerts/` loaded,
//! and Prometheus's HTTP API asked what it saw: the layers' series, rules that evaluate without
//! error, and the breaker's alert going pending, then firing.
//!
//! The rules are loaded as shipped except for their `for:` durations, cut to 1 s: the shipped
//! ones (minutes) suit production, and `alerts/tests/` checks them on promtool's synthetic
//! time. Everything a scrape can get wrong — names, labels, values, the expressions over real
//! series — is as shipped.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use test_support::prometheus::{PrometheusServer, ScrapeConfig, required};
use tower_breaker::metrics as breaker;
use tower_idempotency::metrics as idempotency;

/// How long Prometheus may take to show what the test waits for: a few scrape and evaluation
/// intervals, with room for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// The `for:` the test's copy of the rules uses.
const SHORT_FOR: &str = "1s";

/// A child process, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies of `alerts/*.rules.yml` into `dir`, every `for:` cut to [`SHORT_FOR`].
fn rules_with_short_for(dir: &Path) -> Vec<PathBuf> {
    let alerts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerts");
    let mut copies = Vec::new();
    for entry in std::fs::read_dir(alerts).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".rules.yml") {
            continue;
        }
        let text: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| match line.trim_start().strip_prefix("for:") {
                Some(_) => {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    format!("{indent}for: {SHORT_FOR}\n")
                }
                None => format!("{line}\n"),
            })
            .collect();
        let copy = dir.join(name);
        std::fs::write(&copy, text).unwrap();
        copies.push(copy);
    }
    copies.sort();
    copies
}

/// `GET {base}{path}` from Prometheus's API: the `data` of a successful answer.
async fn api(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let res = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "success", "{path}: {body}");
    body["data"].clone()
}

/// The value of an instant query's only series, if it has one.
async fn query(client: &reqwest::Client, base: &str, promql: &str) -> Option<f64> {
    let data = api(
        client,
        base,
        &format!("/api/v1/query?query={}", urlencode(promql)),
    )
    .await;
    let result = data["result"].as_array().unwrap();
    assert!(result.len() <= 1, "{promql}: {data}");
    result
        .first()
        .map(|series| series["value"][1].as_str().unwrap().parse().unwrap())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, log: impl Fn() -> String, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}\nprometheus log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_server_and_the_breaker_alert_fires() {
    // The fraud check's downstream: a port nothing listens on (connections refused).
    let dead = free_port();
    let port = free_port();
    let _server = Process(
        Command::new(env!("CARGO_BIN_EXE_axum_server"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--downstream", &format!("http://127.0.0.1:{dead}")])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the axum_server example starts"),
    );
    tokio::task::spawn_blocking(move || wait_for_port(port))
        .await
        .unwrap();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prometheus-scrape");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = ScrapeConfig {
        targets: vec![format!("127.0.0.1:{port}")],
        interval: Duration::from_millis(200),
        rule_files: rules_with_short_for(&dir),
    };
    assert_eq!(config.rule_files.len(), 5, "{:?}", config.rule_files);
    let prometheus = match tokio::task::spawn_blocking(move || PrometheusServer::start(&config))
        .await
        .unwrap()
    {
        Ok(p) => p,
        Err(e) if !required() => return eprintln!("skipping: {e}"),
        Err(e) => panic!("{e}"),
    };
    let base = prometheus.url();
    let log = || prometheus.log();
    let client = reqwest::Client::new();

    // Payments whose fraud check cannot connect: 502 until the breaker opens, then 503 with
    // Retry-After, without calling the dead downstream.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let res = client
            .post(format!("http://127.0.0.1:{port}/payments"))
            .header("idempotency-key", format!("\"scrape-{i}\""))
            .json(&serde_json::json!({ "id": format!("p-{i}"), "amount": 100 }))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses[0], 502, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");

    // The series, as Prometheus stored them from its scrapes.
    let state = eventually("breaker_state 2 (open)", log, || async {
        query(
            &client,
            &base,
            &format!("{}{{name=\"fraud-check\"}}", breaker::STATE),
        )
        .await
        .filter(|v| *v == 2.0)
    })
    .await;
    assert_eq!(state, 2.0);
    let calls = |result: &str| {
        format!(
            "{}{{name=\"fraud-check\",result=\"{result}\"}}",
            breaker::CALLS_TOTAL
        )
    };
    assert!(query(&client, &base, &calls("failure")).await >= Some(5.0));
    assert!(query(&client, &base, &calls("rejected")).await >= Some(1.0));
    let names = api(&client, &base, "/api/v1/label/__name__/values").await;
    let names: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // metrics-exporter-prometheus renders a histogram as a summary: `_sum` and `_count` beside
    // the quantiles.
    let store_seconds_count = format!("{}_count", idempotency::STORE_SECONDS);
    for name in [
        breaker::STATE,
        breaker::CALLS_TOTAL,
        breaker::TRANSITIONS_TOTAL,
        idempotency::REQUESTS_TOTAL,
        idempotency::STORE_SECONDS,
        &store_seconds_count,
    ] {
        assert!(names.contains(&name), "{name} not scraped: {names:?}");
    }

    // Every rule of every file loaded and evaluated without error against the real series.
    let rules = eventually("every rule evaluated", log, || async {
        let data = api(&client, &base, "/api/v1/rules").await;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        rules
            .iter()
            .all(|r| r["health"] != "unknown")
            .then_some(rules)
    })
    .await;
    assert_eq!(rules.len(), 26, "every rule of alerts/ is loaded");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // The breaker's alert: pending as soon as the open state is scraped, firing after `for`.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + WAIT;
    let firing = loop {
        let data = api(&client, &base, "/api/v1/alerts").await;
        let alert = data["alerts"].as_array().unwrap().iter().find(|a| {
            a["labels"]["alertname"] == "BreakerOpen" && a["labels"]["name"] == "fraud-check"
        });
        if let Some(alert) = alert {
            let state = alert["state"].as_str().unwrap();
            if seen.last().map(String::as_str) != Some(state) {
                seen.push(state.to_owned());
            }
            if state == "firing" {
                break alert.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "BreakerOpen not firing within {WAIT:?} (states seen: {seen:?}): {data}\nprometheus log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(firing["labels"]["severity"], "warning", "{firing}");
    assert!(
        firing["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("fraud-check"),
        "{firing}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("firing"), "{seen:?}");
    assert!(
        seen.iter().all(|s| s == "pending" || s == "firing"),
        "{seen:?}"
    );
}
