//! Finding server binaries and free ports, and waiting for a server to listen.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

/// Whether `var` is set to something other than empty, `0` or `false`.
pub(crate) fn env_flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The first executable called `name` in `PATH` or in `extra_dirs`.
pub(crate) fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A loopback port free at the time of the call.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `port`.
pub(crate) fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs a blocking fixture step off the runtime. A panic in it (the "required but missing"
/// hard failure) is resumed in the caller instead of being turned into an `Err` the test
/// would print and skip on.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(format!("fixture task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    #[should_panic(expected = "required and missing")]
    async fn a_panic_in_a_blocking_step_reaches_the_caller() {
        let _ = super::blocking(|| -> Result<(), String> { panic!("required and missing") }).await;
    }

    #[tokio::test]
    async fn blocking_results_pass_through() {
        assert_eq!(super::blocking(|| Ok(7)).await, Ok(7));
        assert_eq!(
            super::blocking(|| Err::<(), _>("no".to_owned())).await,
            Err("no".to_owned())
        );
    }
}
