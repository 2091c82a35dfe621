//! A real Redis for tests: `REDIS_URL` if set, otherwise a `redis-server` started on a free
//! loopback port (no persistence), stopped on drop. And a local Redis Cluster.
//!
//! When Redis is *required* — `CI` or `REQUIRE_REDIS=1` is set, as the README's test command
//! does — a missing `redis-server` is a hard failure that says how to install it. Otherwise
//! [`RedisServer::start`] returns an error the test can print before skipping.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

use crate::process::{blocking, env_flag, find_binary, free_port, wait_for_port};

const INSTALL_HINT: &str = "redis-server was not found: install it with \
    `sudo apt-get install -y redis-server` (Debian/Ubuntu) or set REDIS_URL";

/// Whether the environment demands a real Redis (`CI` or `REQUIRE_REDIS=1`).
#[must_use]
pub fn required() -> bool {
    env_flag("CI") || env_flag("REQUIRE_REDIS")
}

fn binary(name: &str) -> Result<PathBuf, String> {
    match find_binary(
        name,
        &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")],
    ) {
        Some(path) => Ok(path),
        None if required() => {
            panic!("{INSTALL_HINT} (Redis is required: CI or REQUIRE_REDIS is set)")
        }
        None => Err(INSTALL_HINT.to_owned()),
    }
}

/// `--enable-debug-command local` where the server has that setting (Redis 7 and later refuse
/// `DEBUG`, which [`RedisServer::stall`] sends, unless it is enabled; older servers refuse the
/// unknown setting and always accept `DEBUG`).
fn debug_args(server: &std::path::Path) -> &'static [&'static str] {
    static ARGS: OnceLock<&'static [&'static str]> = OnceLock::new();
    ARGS.get_or_init(|| {
        let version = Command::new(server)
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        let major = version
            .split("v=")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        if major >= 7 {
            &["--enable-debug-command", "local"]
        } else {
            &[]
        }
    })
}

fn spawn_server(port: u16, extra: &[&str], dir: &std::path::Path) -> Result<Child, String> {
    let server = binary("redis-server")?;
    let mut cmd = Command::new(&server);
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(debug_args(&server))
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    if wait_for_port(port, Duration::from_secs(10)) {
        Ok(child)
    } else {
        let _ = child.kill();
        Err(format!(
            "redis-server did not start listening on port {port}"
        ))
    }
}

/// One Redis server.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    port: Option<u16>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// `REDIS_URL` if set, otherwise a fresh `redis-server` on a free port.
    ///
    /// # Errors
    /// When `redis-server` is missing (and Redis is not [`required`]) or will not start.
    ///
    /// # Panics
    /// When Redis is [`required`] and `redis-server` is missing.
    pub async fn start() -> Result<Self, String> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Ok(Self {
                url,
                port: None,
                child: None,
                dir: None,
            });
        }
        blocking(|| {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let port = free_port().map_err(|e| e.to_string())?;
            let child = spawn_server(port, &[], dir.path())?;
            Ok(Self {
                url: format!("redis://127.0.0.1:{port}/"),
                port: Some(port),
                child: Some(child),
                dir: Some(dir),
            })
        })
        .await
    }

    /// The connection URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server (an outage). Only for servers this fixture started.
    ///
    /// # Errors
    /// If the server came from `REDIS_URL`.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Err("cannot stop a Redis given by REDIS_URL".to_owned());
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Starts the server again on the same port (empty: there is no persistence).
    ///
    /// # Errors
    /// If the server came from `REDIS_URL` or will not start.
    pub fn restart(&mut self) -> Result<(), String> {
        let (Some(port), Some(dir)) = (self.port, self.dir.as_ref().map(|d| d.path().to_owned()))
        else {
            return Err("cannot restart a Redis given by REDIS_URL".to_owned());
        };
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = Some(spawn_server(port, &[], &dir)?);
        Ok(())
    }

    /// Stalls the server for `duration` with `DEBUG SLEEP`, as a slow script, a long fork or a
    /// swapping host would: it accepts connections and commands but answers none until it
    /// wakes, and then runs what it received in order. Returns once the server is stalled (a
    /// `PING` on another connection goes unanswered). Only for servers this fixture started.
    ///
    /// # Errors
    /// If the server came from `REDIS_URL`, refuses `DEBUG`, or cannot be reached.
    pub async fn stall(&self, duration: Duration) -> Result<Stall, String> {
        let Some(port) = self.port else {
            return Err("cannot stall a Redis given by REDIS_URL".to_owned());
        };
        let addr = ("127.0.0.1", port);
        let io = |e: std::io::Error| format!("stalling redis-server: {e}");
        let mut conn = TcpStream::connect(addr).await.map_err(io)?;
        let seconds = format!("{:.3}", duration.as_secs_f64());
        conn.write_all(&command(&["DEBUG", "SLEEP", &seconds]))
            .await
            .map_err(io)?;
        // The server reads the `DEBUG` at once (it is idle), but another connection's command
        // may be served first: wait until a probe goes unanswered.
        let mut reply = [0u8; 256];
        for _ in 0..50 {
            let mut probe = TcpStream::connect(addr).await.map_err(io)?;
            probe.write_all(&command(&["PING"])).await.map_err(io)?;
            let answered =
                tokio::time::timeout(Duration::from_millis(100), probe.read(&mut reply)).await;
            if answered.is_err() {
                return Ok(Stall {
                    reply: tokio::spawn(async move {
                        let mut reply = [0u8; 64];
                        let n = conn.read(&mut reply).await.map_err(io)?;
                        match &reply[..n] {
                            [b'+', ..] => Ok(()),
                            other => Err(String::from_utf8_lossy(other).into_owned()),
                        }
                    }),
                });
            }
            // Answered: the `DEBUG` has not run yet, or was refused.
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(10), conn.read(&mut reply)).await
            {
                return Err(format!(
                    "redis-server refused DEBUG SLEEP: {}",
                    String::from_utf8_lossy(&reply[..n]).trim_end()
                ));
            }
        }
        Err("redis-server never stalled".to_owned())
    }
}

/// A server stalled by [`RedisServer::stall`].
#[derive(Debug)]
pub struct Stall {
    reply: JoinHandle<Result<(), String>>,
}

impl Stall {
    /// Waits until the server has woken up (it answered the `DEBUG SLEEP`).
    ///
    /// # Errors
    /// If the server answered with an error or closed the connection.
    pub async fn recovered(self) -> Result<(), String> {
        self.reply.await.map_err(|e| e.to_string())?
    }
}

/// A command in the RESP protocol.
fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A local Redis Cluster of masters (no replicas), started with `--cluster-enabled yes` and
/// `redis-cli --cluster create`. Stopped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3) and joins them into a cluster.
    ///
    /// # Errors
    /// When the binaries are missing (and Redis is not [`required`]) or the cluster won't form.
    ///
    /// # Panics
    /// When Redis is [`required`] and the binaries are missing.
    pub async fn start(masters: usize) -> Result<Self, String> {
        blocking(move || Self::start_blocking(masters)).await
    }

    fn start_blocking(masters: usize) -> Result<Self, String> {
        if masters < 3 {
            return Err("a Redis Cluster needs at least 3 masters".to_owned());
        }
        let cli = binary("redis-cli")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            _dir: dir,
        };
        for _ in 0..masters {
            let port = free_port().map_err(|e| e.to_string())?;
            let node_dir = cluster._dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
            let child = spawn_server(
                port,
                &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                &node_dir,
            )?;
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let mut create = Command::new(&cli);
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        for port in &cluster.ports {
            cluster.wait_ok(&cli, *port)?;
        }
        Ok(cluster)
    }

    fn wait_ok(&self, cli: &std::path::Path, port: u16) -> Result<(), String> {
        for _ in 0..250 {
            let out = Command::new(cli)
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()
                .map_err(|e| e.to_string())?;
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        Err(format!(
            "cluster node {port} never reached cluster_state:ok"
        ))
    }

    /// One `redis://` URL per node.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(reason: &str) {
        eprintln!("skipping: {reason}");
    }

    #[tokio::test]
    async fn server_answers_and_stops_and_restarts() {
        let mut server = match RedisServer::start().await {
            Ok(s) => s,
            Err(e) if !required() => return skip(&e),
            Err(e) => panic!("{e}"),
        };
        let client = redis::Client::open(server.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
        if server.stop().is_ok() {
            assert!(client.get_multiplexed_async_connection().await.is_err());
            server.restart().unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
            assert_eq!(pong, "PONG");
        }
    }

    #[tokio::test]
    async fn a_stalled_server_answers_only_when_it_wakes() {
        let server = match RedisServer::start().await {
            Ok(s) => s,
            Err(e) if !required() => return skip(&e),
            Err(e) => panic!("{e}"),
        };
        if std::env::var("REDIS_URL").is_ok() {
            return skip("cannot stall a Redis given by REDIS_URL");
        }
        let client = redis::Client::open(server.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let stall = server.stall(Duration::from_millis(600)).await.unwrap();
        let start = std::time::Instant::now();
        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "answered during the stall ({:?})",
            start.elapsed()
        );
        stall.recovered().await.unwrap();
    }

    #[tokio::test]
    async fn cluster_forms() {
        let cluster = match RedisCluster::start(3).await {
            Ok(c) => c,
            Err(e) if !required() => return skip(&e),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cluster.urls().len(), 3);
        let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
        let mut con = client.get_async_connection().await.unwrap();
        for i in 0..20 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query_async(&mut con)
                .await
                .unwrap();
        }
        let v: i32 = redis::cmd("GET")
            .arg("k7")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, 7);
    }
}
