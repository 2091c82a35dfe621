//! Prometheus's own tools for tests: `promtool` (checks and unit tests of alert rules) and a
//! real `prometheus` server on a free loopback port, scraping what the test points it at.
//!
//! The binaries are `PROMTOOL` / `PROMETHEUS` if set, otherwise `promtool` / `prometheus` on
//! `PATH` (Debian's `prometheus` package installs both in `/usr/bin`). When Prometheus is
//! *required* — `CI` or `REQUIRE_PROMETHEUS=1` is set, as the README's test command does — a
//! missing binary is a hard failure that says how to install it. Otherwise [`Promtool::find`] and
//! [`PrometheusServer::start`] return an error the test can print before skipping.
//!
//! ```no_run
//! use std::time::Duration;
//! use test_support::prometheus::{PrometheusServer, ScrapeConfig};
//!
//! let server = PrometheusServer::start(&ScrapeConfig {
//!     targets: vec!["127.0.0.1:3000".into()],
//!     interval: Duration::from_millis(200),
//!     rule_files: vec![],
//! })
//! .expect("prometheus");
//! println!("query it at {}/api/v1/query", server.url());
//! ```

use std::{
    ffi::OsStr,
    fmt::Write as _,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::process::{env_flag, find_binary, free_port, wait_for_port};

const INSTALL_HINT: &str = "Prometheus was not found: install it with \
    `sudo apt-get install -y prometheus` (Debian/Ubuntu) or set PROMTOOL and PROMETHEUS to the \
    binaries' paths";

/// How long the server may take to listen. A cold start opens its data directory and replays
/// an (empty) write-ahead log: a second or two on a loaded 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the environment demands Prometheus (`CI` or `REQUIRE_PROMETHEUS=1`).
#[must_use]
pub fn required() -> bool {
    env_flag("CI") || env_flag("REQUIRE_PROMETHEUS")
}

/// `var` if set, otherwise `name` on `PATH` (or in `/usr/bin`).
fn binary(var: &str, name: &str) -> Result<PathBuf, String> {
    let found = match std::env::var_os(var) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!("{var}={} is not a file", path.display()));
            }
            Some(path)
        }
        None => find_binary(name, &[PathBuf::from("/usr/bin")]),
    };
    match found {
        Some(path) => Ok(path),
        None if required() => {
            panic!("{INSTALL_HINT} (Prometheus is required: CI or REQUIRE_PROMETHEUS is set)")
        }
        None => Err(INSTALL_HINT.to_owned()),
    }
}

/// Prometheus's command-line tool.
#[derive(Debug, Clone)]
pub struct Promtool {
    binary: PathBuf,
}

impl Promtool {
    /// `PROMTOOL` if set, otherwise the first `promtool` on `PATH` (or in `/usr/bin`).
    ///
    /// # Errors
    /// When promtool is missing (and Prometheus is not [`required`]), or `PROMTOOL` names no
    /// file.
    ///
    /// # Panics
    /// When Prometheus is [`required`] and promtool is missing.
    pub fn find() -> Result<Self, String> {
        Ok(Self {
            binary: binary("PROMTOOL", "promtool")?,
        })
    }

    /// Runs `promtool args…` and returns what it printed (stdout, then stderr).
    ///
    /// # Errors
    /// When promtool cannot start or exits unsuccessfully; the error holds what it printed.
    pub fn run<I, S>(&self, args: I) -> Result<String, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(printed)
        } else {
            Err(format!("promtool ({}):\n{printed}", out.status))
        }
    }

    /// `promtool check rules files…`: the files parse and every expression is valid PromQL.
    ///
    /// # Errors
    /// As [`Promtool::run`].
    pub fn check_rules(&self, files: &[PathBuf]) -> Result<String, String> {
        self.run(
            [OsStr::new("check"), OsStr::new("rules")]
                .into_iter()
                .chain(files.iter().map(|f| f.as_os_str())),
        )
    }

    /// `promtool test rules files…`: the unit tests (series in, alerts out) pass.
    ///
    /// # Errors
    /// As [`Promtool::run`].
    pub fn test_rules(&self, files: &[PathBuf]) -> Result<String, String> {
        self.run(
            [OsStr::new("test"), OsStr::new("rules")]
                .into_iter()
                .chain(files.iter().map(|f| f.as_os_str())),
        )
    }
}

/// What a [`PrometheusServer`] scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// `host:port` of each target, scraped at `/metrics` (job `test`).
    pub targets: Vec<String>,
    /// The scrape interval, which is also the scrape timeout and the rule evaluation interval.
    pub interval: Duration,
    /// Rule files to load.
    pub rule_files: Vec<PathBuf>,
}

impl ScrapeConfig {
    /// The configuration file's text.
    fn render(&self) -> String {
        let interval = format!("{}ms", self.interval.as_millis().max(1));
        let mut config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
             evaluation_interval: {interval}\nrule_files:\n"
        );
        for file in &self.rule_files {
            let _ = writeln!(config, "  - {:?}", file.display().to_string());
        }
        config.push_str(
            "scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets:\n",
        );
        for target in &self.targets {
            let _ = writeln!(config, "          - {target:?}");
        }
        config
    }
}

/// A `prometheus` server with a throwaway data directory, stopped on drop.
#[derive(Debug)]
pub struct PrometheusServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts `PROMETHEUS` (or `prometheus` on `PATH`) on a free loopback port with `config`,
    /// and waits until it is ready to answer queries.
    ///
    /// # Errors
    /// When the binary is missing (and Prometheus is not [`required`]), the configuration is
    /// refused, or the server does not listen within [`START_TIMEOUT`]; the error holds its log.
    ///
    /// # Panics
    /// When Prometheus is [`required`] and missing.
    pub fn start(config: &ScrapeConfig) -> Result<Self, String> {
        let binary = binary("PROMETHEUS", "prometheus")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config.render()).map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        // Into a file, not a pipe: a server blocked on a full pipe nobody reads would hang.
        let log =
            std::fs::File::create(dir.path().join("prometheus.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(&binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        if wait_for_port(port, START_TIMEOUT) && wait_ready(port, START_TIMEOUT) {
            return Ok(Self { child, port, dir });
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "prometheus was not ready on port {port} within {START_TIMEOUT:?}:\n{}",
            read_log(dir.path())
        ))
    }

    /// The server's base URL (`http://127.0.0.1:{port}`).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server has logged so far (for a failing test's message).
    #[must_use]
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET /-/ready` answers 200: the server listens before its storage is open, and
/// answers its API with 503 until then.
fn wait_ready(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready(port).unwrap_or(false) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn ready(port: u16) -> std::io::Result<bool> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut status = [0u8; 12];
    conn.read_exact(&mut status)?;
    // "HTTP/1.x 200"
    Ok(&status[8..] == b" 200")
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_targets_rules_and_intervals() {
        let config = ScrapeConfig {
            targets: vec!["127.0.0.1:3000".into()],
            interval: Duration::from_millis(200),
            rule_files: vec![PathBuf::from("/tmp/a b/x.rules.yml")],
        }
        .render();
        assert_eq!(
            config,
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n  evaluation_interval: 200ms\n\
             rule_files:\n  - \"/tmp/a b/x.rules.yml\"\n\
             scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets:\n          - \"127.0.0.1:3000\"\n"
        );
    }

    /// promtool tells a valid rule file from an invalid one.
    #[test]
    fn promtool_checks_rules() {
        let promtool = match Promtool::find() {
            Ok(p) => p,
            Err(e) if !required() => return eprintln!("skipping: {e}"),
            Err(e) => panic!("{e}"),
        };
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yml");
        std::fs::write(
            &good,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n",
        )
        .unwrap();
        let bad = dir.path().join("bad.yml");
        std::fs::write(
            &bad,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n",
        )
        .unwrap();
        promtool.check_rules(&[good]).unwrap();
        let err = promtool.check_rules(&[bad]).unwrap_err();
        assert!(err.contains("bad.yml"), "{err}");
    }

    /// A server starts on a free port, is ready when `start` returns, and stops on drop.
    #[test]
    fn a_server_starts_ready_and_stops() {
        let server = match PrometheusServer::start(&ScrapeConfig {
            targets: vec![],
            interval: Duration::from_millis(200),
            rule_files: vec![],
        }) {
            Ok(s) => s,
            Err(e) if !required() => return eprintln!("skipping: {e}"),
            Err(e) => panic!("{e}"),
        };
        let port = server.port;
        assert!(ready(port).unwrap(), "ready");
        drop(server);
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "stopped on drop"
        );
    }
}
