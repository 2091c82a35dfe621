//! The chaos binary as CI runs it: a short run, and clear errors for bad flags.

use std::process::Command;

fn chaos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
}

#[test]
fn a_short_run_shows_the_naive_client_losing_and_the_suite_not() {
    let out = chaos()
        .args(["--short", "--naive", "--seed", "7"])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("protected: every valid payment recorded exactly once"),
        "{stdout}"
    );
    let row = |name: &str| -> Vec<u64> {
        let line = stdout.lines().find(|l| l.starts_with(name)).expect(name);
        line[name.len()..]
            .split_whitespace()
            .map(|c| c.parse().expect("a count"))
            .collect()
    };
    let (lost, duplicated) = (row("LOST"), row("DUPLICATED"));
    assert_eq!(lost[1], 0);
    assert_eq!(duplicated[1], 0);
    assert!(
        lost[0] + duplicated[0] > 0,
        "the naive run suffers: {stdout}"
    );
}

#[test]
fn bad_flags_are_rejected_with_a_clear_message() {
    let out = chaos().args(["--unavailable", "1.5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a share between 0 and 1"), "{stderr}");

    let out = chaos()
        .args(["--unavailable", "0.6", "--throttled", "0.6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add up to"));

    let out = chaos().args(["--requests", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The fault-share matrix CI runs: 0-40 % of writes faulted, with and without an outage of the
/// primary, and a total outage. The binary checks the targets itself (exit 1 and a "target
/// missed" line otherwise): no duplicate anywhere, no loss on the live path up to 30 %, never
/// more loss than the naive client, nothing lost after the re-drive, and at most 1.3 attempts
/// per payment during the total outage.
#[test]
fn the_short_fault_share_matrix_meets_every_target() {
    let out = chaos()
        .args(["--matrix", "--short", "--seed", "11"])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| faulted"))
        .collect();
    // 5 shares, each without and with the primary's outage, and the total outage.
    assert_eq!(rows.len(), 11, "{stdout}");
    assert!(rows.iter().any(|r| r.starts_with("| 40 % | primary |")));
    assert!(rows.last().unwrap().contains("| total |"), "{stdout}");
    assert!(!stdout.contains("target missed"), "{stdout}");
}

#[test]
fn profiles_are_named_and_a_wrong_name_is_a_clear_error() {
    let out = chaos().args(["--profile", "brutal"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a profile (one of: mild, moderate, harsh, blackout)"),
        "{stderr}"
    );
}
