//! The fault-share matrix as CI runs it, alone in its test binary: its rows time real
//! deadlines and backoffs, so nothing else runs beside it.

use std::process::Command;

fn chaos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
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
