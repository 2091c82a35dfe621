//! The chaos binary as CI runs it: a short run, and clear errors for bad flags.

mod common;

use common::{chaos, stdout_of_success};

#[test]
fn a_short_run_shows_the_naive_client_losing_and_the_suite_not() {
    let stdout = stdout_of_success(chaos().args(["--short", "--naive", "--seed", "7"]));
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
