//! `redrive-admin` run as a process, as an operator runs it.
//!
//! The binary is the example cargo builds for `cargo test -p tower-redrive --all-features`
//! (`target/<profile>/examples/redrive-admin`); running this file alone with `--test` does not
//! rebuild it.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tower_redrive::{NewEntry, RedriveQueue, SqliteQueue, StoredRequest, Timestamp};

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/admin_cli-… → target/<profile>/examples/redrive-admin
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples")
        .join(format!("redrive-admin{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test -p tower-redrive --all-features`, which builds the examples",
        bin.display()
    );
    bin
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn admin(args: &[&str]) -> Run {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sqlite(path: &Path, args: &[&str]) -> Run {
    let path = path.to_str().expect("a UTF-8 temp path");
    admin(&[&["--sqlite", path], args].concat())
}

/// Fails with exit status 1 and exactly `message` on stderr (one sentence, no `Debug` dump).
#[track_caller]
fn assert_fails(run: &Run, message: &str) {
    assert_eq!(
        (run.code, run.stderr.trim_end(), run.stdout.as_str()),
        (Some(1), format!("redrive-admin: {message}").as_str(), ""),
    );
}

#[test]
fn a_path_that_does_not_exist_or_an_empty_file_is_an_error_unless_asked_to_create() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mistyped.db");
    let shown = path.display();
    assert_fails(
        &sqlite(&path, &["list"]),
        &format!("no redrive queue at {shown}: the file does not exist (--create makes one)"),
    );
    assert!(!path.exists(), "no queue was made");

    std::fs::write(&path, b"").unwrap();
    assert_fails(
        &sqlite(&path, &["stats"]),
        &format!("no redrive queue at {shown}: the file is empty (--create makes one)"),
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");

    let made = sqlite(&path, &["--create", "stats"]);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    assert_eq!(made.stdout.trim_end(), "pending 0  dead 0  delivered 0");
    let opened = sqlite(&path, &["list"]);
    assert_eq!((opened.code, opened.stderr.as_str()), (Some(0), ""));
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_in_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are notes, not a queue\n".repeat(300)).unwrap();
    assert_fails(
        &sqlite(&path, &["stats"]),
        "redrive queue failed to prepare the database: file is not a database",
    );
}

#[tokio::test]
async fn a_missing_id_says_no_entry_and_only_dead_letters_are_requeued_or_purged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let queue = SqliteQueue::open_or_create(&path).await.unwrap();
    let entry = || {
        let req = StoredRequest::new(http::Method::POST, "http://u/orders".parse().unwrap());
        NewEntry::new(req, Timestamp::from_millis(1_750_000_000_000))
    };
    let pending = queue.enqueue(entry()).await.unwrap();
    let dead = queue
        .enqueue_dead(entry(), "permanent failure: 400 Bad Request".into())
        .await
        .unwrap();

    for command in ["show", "requeue", "purge"] {
        assert_fails(&sqlite(&path, &[command, "42"]), "no entry 42");
    }
    let pending = pending.to_string();
    for command in ["requeue", "purge"] {
        assert_fails(
            &sqlite(&path, &[command, &pending]),
            &format!("entry {pending} is pending, not a dead letter"),
        );
    }
    let dead = dead.to_string();
    let listed = sqlite(&path, &["list"]);
    assert_eq!(listed.code, Some(0));
    assert!(
        listed.stdout.contains("permanent failure: 400 Bad Request"),
        "{}",
        listed.stdout
    );
    let requeued = sqlite(&path, &["requeue", &dead]);
    assert_eq!(
        (requeued.code, requeued.stdout.trim_end()),
        (Some(0), format!("requeued entry {dead}").as_str())
    );
    assert_eq!(queue.stats().await.unwrap().pending, 2);

    let bad = sqlite(&path, &["list", "--state", "bogus"]);
    assert_eq!(bad.code, Some(2), "a usage error");
    assert!(
        bad.stderr
            .contains("`bogus` is not a state: use pending, delivered or dead"),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn postgres_errors_carry_the_servers_message_and_no_queue_is_made() {
    let Some((_server, url)) = common::database().await else {
        return;
    };
    let (base, db) = url.rsplit_once('/').unwrap();
    assert_fails(
        &admin(&["--postgres", &format!("{base}/no_such_db"), "stats"]),
        "redrive queue failed to connect to PostgreSQL: FATAL: database \"no_such_db\" does not exist",
    );
    for _ in 0..2 {
        assert_fails(
            &admin(&["--postgres", &url, "list"]),
            &format!(
                "no redrive queue at PostgreSQL database \"{db}\": it has no redrive_schema table (--create makes one)"
            ),
        );
    }
    let made = admin(&["--postgres", &url, "--create", "stats"]);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    assert_eq!(made.stdout.trim_end(), "pending 0  dead 0  delivered 0");
    assert_fails(&admin(&["--postgres", &url, "show", "7"]), "no entry 7");
}
