//! A real PostgreSQL for tests: `DATABASE_URL` if set, otherwise a throwaway cluster (`initdb` +
//! `pg_ctl`) on a free loopback port, stopped and deleted on drop.
//!
//! When PostgreSQL is *required* — `CI` or `REQUIRE_POSTGRES=1` is set, as the README's test
//! command does — missing server binaries are a hard failure that says how to install them.
//! Otherwise [`PostgresServer::start`] returns an error the test can print before skipping.
//!
//! `initdb` refuses to run as root; as root the fixture runs the server tools as the `postgres`
//! user (`runuser -u postgres --`), with a data directory owned by that user — what CI does.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::process::{blocking, env_flag, find_binary, free_port, wait_for_port};

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl) were not found: install \
    them with `sudo apt-get install -y postgresql` (Debian/Ubuntu; they land in \
    /usr/lib/postgresql/<version>/bin) or set DATABASE_URL";

/// Whether the environment demands a real PostgreSQL (`CI` or `REQUIRE_POSTGRES=1`).
#[must_use]
pub fn required() -> bool {
    env_flag("CI") || env_flag("REQUIRE_POSTGRES")
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn versioned_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

fn bin_dir() -> Result<PathBuf, String> {
    let mut extra = versioned_bin_dirs();
    extra.push(PathBuf::from("/usr/local/pgsql/bin"));
    // Prefer a versioned directory: Debian's /usr/bin/pg_ctl is a wrapper without initdb.
    let found = extra
        .iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .cloned()
        .or_else(|| find_binary("initdb", &[]).and_then(|p| p.parent().map(Path::to_path_buf)));
    match found {
        Some(dir) => Ok(dir),
        None if required() => {
            panic!("{INSTALL_HINT} (PostgreSQL is required: CI or REQUIRE_POSTGRES is set)")
        }
        None => Err(INSTALL_HINT.to_owned()),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command that runs `program` as the cluster owner.
fn as_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn fail<T>(message: String) -> Result<T, String> {
    if required() {
        panic!("{message} (PostgreSQL is required: CI or REQUIRE_POSTGRES is set)");
    }
    Err(message)
}

/// One PostgreSQL server.
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    port: Option<u16>,
    cluster: Option<Cluster>,
}

#[derive(Debug, Clone)]
struct Cluster {
    bin: PathBuf,
    root: bool,
    data: PathBuf,
    /// The server options `pg_ctl start -o` is given (port, socket directory, settings).
    options: String,
    log: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl Cluster {
    /// `pg_ctl start`, waiting until the server accepts connections.
    fn start(&self, port: u16) -> Result<(), String> {
        let mut start = as_owner(&self.bin.join("pg_ctl"), self.root);
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-o")
            .arg(&self.options)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "30", "start"]);
        run(start, "pg_ctl start")?;
        if !wait_for_port(port, Duration::from_secs(15)) {
            return Err(format!("PostgreSQL did not start listening on port {port}"));
        }
        Ok(())
    }

    /// `pg_ctl stop -m <mode>`; waits until the server is gone. `fast` ends every session and
    /// writes what was committed out first (the cluster runs with `synchronous_commit=off`, so
    /// `immediate` may lose the last commits); `immediate` is for throwing the cluster away.
    fn stop(&self, mode: &str) -> Result<(), String> {
        let mut cmd = as_owner(&self.bin.join("pg_ctl"), self.root);
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "stop"]);
        run(cmd, "pg_ctl stop").map(drop)
    }
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl PostgresServer {
    /// `DATABASE_URL` if set, otherwise a fresh cluster on a free port.
    ///
    /// # Errors
    /// When the server binaries are missing (and PostgreSQL is not [`required`]) or the cluster
    /// will not start.
    ///
    /// # Panics
    /// When PostgreSQL is [`required`] and cannot be started.
    pub async fn start() -> Result<Self, String> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Self {
                url,
                port: None,
                cluster: None,
            });
        }
        blocking(Self::start_cluster).await
    }

    fn start_cluster() -> Result<Self, String> {
        let bin = bin_dir()?;
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("pg-fixture-")
            .tempdir()
            .map_err(|e| format!("cannot create a data directory: {e}"))?;
        if root {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(dir.path());
            if let Err(e) = run(chown, "chown of the data directory to postgres") {
                return fail(format!("{e}; is there a `postgres` user?"));
            }
        }
        let data = dir.path().join("data");
        let mut initdb = as_owner(&bin.join("initdb"), root);
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        if let Err(e) = run(initdb, "initdb") {
            return fail(e);
        }
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            dir.path().display()
        );
        let cluster = Cluster {
            bin,
            root,
            data,
            options,
            log: dir.path().join("server.log"),
            _dir: Arc::new(dir),
        };
        if let Err(e) = cluster.start(port) {
            let _ = cluster.stop("immediate");
            return fail(e);
        }
        Ok(Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port: Some(port),
            cluster: Some(cluster),
        })
    }

    /// The connection URL (`postgres://postgres@127.0.0.1:PORT/postgres` for a local cluster).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of a local cluster (`None` when `DATABASE_URL` was used).
    #[must_use]
    pub const fn port(&self) -> Option<u16> {
        self.port
    }

    /// Stops the server (`pg_ctl stop -m fast`: an outage — every session is ended and new
    /// connections are refused — that keeps what was committed). Only for a cluster this
    /// fixture started; [`restart`](Self::restart) brings it back with its data.
    ///
    /// # Errors
    /// If the server came from `DATABASE_URL`, or `pg_ctl stop` fails.
    pub async fn stop(&self) -> Result<(), String> {
        let cluster = self.local("stop")?;
        blocking(move || cluster.stop("fast")).await
    }

    /// Starts a stopped server again on the same port, with the same data.
    ///
    /// # Errors
    /// If the server came from `DATABASE_URL`, or it will not start.
    pub async fn restart(&self) -> Result<(), String> {
        let cluster = self.local("restart")?;
        let port = self.port.ok_or("no local port")?;
        blocking(move || cluster.start(port)).await
    }

    fn local(&self, what: &str) -> Result<Cluster, String> {
        self.cluster
            .clone()
            .ok_or_else(|| format!("cannot {what} a PostgreSQL given by DATABASE_URL"))
    }

    /// Creates an empty database with a unique name (for isolation between tests sharing a
    /// server) and returns its URL. Needs a local cluster, or `createdb` on `PATH` for
    /// `DATABASE_URL`.
    ///
    /// # Errors
    /// When `createdb` fails.
    pub async fn create_database(&self) -> Result<String, String> {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let program = match &self.cluster {
            Some(c) => c.bin.join("createdb"),
            None => find_binary("createdb", &versioned_bin_dirs())
                .ok_or_else(|| "createdb not found".to_owned())?,
        };
        let url = self.url.clone();
        let db = name.clone();
        blocking(move || {
            let mut cmd = Command::new(program);
            cmd.arg("--maintenance-db").arg(&url).arg(&db);
            run(cmd, "createdb")
        })
        .await?;
        let base = self
            .url
            .rsplit_once('/')
            .map_or(self.url.as_str(), |(b, _)| b);
        Ok(format!("{base}/{name}"))
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            // Already stopped by `stop`: nothing to do, and nothing to report from a drop.
            let _ = cluster.stop("immediate");
        }
    }
}
