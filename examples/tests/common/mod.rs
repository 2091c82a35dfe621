//! What the chaos binary's tests share: the command, and a run that must succeed.

use std::process::Command;

/// The `chaos` binary this test run built.
pub fn chaos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
}

/// Runs `command`, fails the test with its output unless it exits 0, and returns its stdout.
pub fn stdout_of_success(command: &mut Command) -> String {
    let out = command.output().expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
