//! The fault-share matrix as CI runs it, alone in its test binary: its rows time real
//! deadlines and backoffs, so nothing else runs beside it.

mod common;

use common::{chaos, stdout_of_success};

/// The fault-share matrix CI runs: 0-40 % of writes faulted, with and without an outage of the
/// primary, and a total outage. The binary checks the targets itself (exit 1 and a "target
/// missed" line otherwise): no duplicate anywhere, no loss on the live path up to 30 %, never
/// more loss than the naive client, nothing lost after the re-drive, and at most 1.3 attempts
/// per payment during the total outage.
#[test]
fn the_short_fault_share_matrix_meets_every_target() {
    let stdout = stdout_of_success(chaos().args(["--matrix", "--short", "--seed", "11"]));
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
