//! [`SqliteQueue`]: the embedded store — one file, WAL, no server.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params, types::ValueRef};

use super::{
    Claim, QueueFuture, RedriveQueue,
    row::{COLUMNS, INSERT_COLUMNS, InsertValues, RawRow, attempt_json, new_lease_token},
};
use crate::{
    QueueError,
    clock::Timestamp,
    entry::{
        AttemptRecord, Claimed, EntryId, EntryRecord, EntryState, LeaseToken, NewEntry,
        PurgeReport, QueueStats,
    },
};

/// The schema migrations this crate ships for SQLite: `(version, SQL)`, applied in order by
/// [`SqliteQueue::open`] and [`SqliteQueue::open_or_create`].
pub const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("../../migrations/sqlite/0001_entries.sql"))];

/// A queue in a SQLite file.
///
/// The file is opened in WAL mode with `synchronous = FULL`, so an entry whose
/// [`enqueue`](RedriveQueue::enqueue) returned is on disk and survives a crash or a restart.
/// Every call runs on tokio's blocking pool. Several processes may open the same file (SQLite
/// serialises writers; a 5 s busy timeout absorbs contention), but for many workers on many
/// machines use [`PostgresQueue`](crate::PostgresQueue).
///
/// [`open`](Self::open) opens an existing queue only: a path that does not exist, or an empty
/// file, is [`QueueError::NoQueue`] — a mistyped path is an error, not a new, empty queue
/// beside the real one. [`open_or_create`](Self::open_or_create) creates the file when it is
/// missing (or empty): what a service starting for the first time does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_redrive::{NewEntry, QueueError, RedriveQueue, SqliteQueue, StoredRequest, Timestamp};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("redrive.db");
/// assert!(matches!(SqliteQueue::open(&path).await, Err(QueueError::NoQueue { .. })));
/// let queue = SqliteQueue::open_or_create(&path).await?;
/// let request = StoredRequest::new(http::Method::POST, "http://upstream/payments".parse()?);
/// let id = queue.enqueue(NewEntry::new(request, Timestamp::from_millis(0))).await?;
/// assert_eq!(queue.stats().await?.pending, 1);
/// # let _ = id; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteQueue {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

enum Fail {
    Sql(rusqlite::Error),
    Queue(QueueError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl SqliteQueue {
    /// Opens the queue in an existing file and applies pending migrations.
    ///
    /// # Errors
    /// [`QueueError::NoQueue`] if the file does not exist or is empty (see
    /// [`open_or_create`](Self::open_or_create)); a backend error if it cannot be opened or is
    /// not a database; [`QueueError::SchemaTooNew`] if its schema is newer than this crate.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|e| QueueError::backend("open the database", e))?
    }

    /// Opens the queue file, creating it if it does not exist (or is empty), and applies
    /// pending migrations.
    ///
    /// # Errors
    /// If the file cannot be created or opened or is not a database, or its schema is newer
    /// than this crate.
    pub async fn open_or_create(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || Self::open_or_create_blocking(path))
            .await
            .map_err(|e| QueueError::backend("open the database", e))?
    }

    /// [`open`](Self::open), on the current thread.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_blocking(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let path = path.as_ref();
        existing_queue(path)?;
        // Without `SQLITE_OPEN_CREATE`: a file removed since the check is not created either.
        let flags = OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| QueueError::backend("open the database", e))?;
        Self::setup(conn, Some(path.to_owned()))
    }

    /// [`open_or_create`](Self::open_or_create), on the current thread.
    ///
    /// # Errors
    /// As [`open_or_create`](Self::open_or_create).
    pub fn open_or_create_blocking(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let path = path.as_ref().to_owned();
        let conn =
            Connection::open(&path).map_err(|e| QueueError::backend("open the database", e))?;
        Self::setup(conn, Some(path))
    }

    /// A queue in memory (lost when dropped) — for tests and examples.
    ///
    /// # Errors
    /// If SQLite cannot allocate the database.
    pub fn open_in_memory() -> Result<Self, QueueError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| QueueError::backend("open the database", e))?;
        Self::setup(conn, None)
    }

    fn setup(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, QueueError> {
        let op = "prepare the database";
        if path.is_some() {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(|e| QueueError::backend(op, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(QueueError::backend(
                    op,
                    format!("journal_mode is {mode}, not WAL"),
                ));
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| QueueError::backend(op, e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| QueueError::backend(op, e))?;
        migrate(&mut conn).map_err(|f| fail("migrate the schema", f))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The file, unless in memory.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    ) -> QueueFuture<'_, T> {
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                f(&mut conn).map_err(|f| fail(op, f))
            })
            .await
            .map_err(|e| QueueError::backend(op, e))?
        })
    }
}

/// Whether `path` holds a queue to open: a file that exists and is not empty. SQLite reads an
/// empty file as an empty database, so opening one would make a new queue where a lost one was
/// (a truncated copy, a mistyped path someone `touch`ed). A file still empty while its
/// write-ahead log holds data (a queue created just before a crash) is a queue.
fn existing_queue(path: &Path) -> Result<(), QueueError> {
    let no_queue = |reason| QueueError::NoQueue {
        location: path.display().to_string(),
        reason,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(no_queue("the file does not exist"))
        }
        Err(e) => Err(QueueError::backend("open the database", e)),
        Ok(meta) if meta.is_dir() => Err(no_queue("it is a directory")),
        Ok(meta) if meta.len() == 0 => {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            match std::fs::metadata(wal) {
                Ok(wal) if wal.len() > 0 => Ok(()),
                _ => Err(no_queue("the file is empty")),
            }
        }
        Ok(_) => Ok(()),
    }
}

fn fail(op: &'static str, f: Fail) -> QueueError {
    match f {
        Fail::Sql(e) => QueueError::backend(op, e),
        Fail::Queue(e) => e,
    }
}

fn migrate(conn: &mut Connection) -> Result<(), Fail> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS redrive_schema (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM redrive_schema",
        [],
        |r| r.get(0),
    )?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(Fail::Queue(QueueError::SchemaTooNew {
            found: current,
            supported: latest,
        }));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO redrive_schema (version, applied_at) VALUES (?1, ?2)",
            params![
                version,
                crate::clock::Clock::now(&crate::clock::SystemClock).as_millis()
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Reads a row whatever its columns hold. SQLite does not enforce column types, and one row
/// with a value of the wrong type (a hand edit, a bad restore) must not fail the read of the
/// row — a claim would fail for the whole batch, over and over, and `get`/`list` could not show
/// the row. A column a delivery needs (state, keys, method, URI, headers, body) holding the
/// wrong type marks the row corrupt, and the worker dead-letters it with the reason; a wrong
/// timestamp, count or reason reads as absent (0 for a count).
fn raw(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    let mut lenient = Lenient { row, corrupt: None };
    Ok(RawRow {
        id: row.get(0)?,
        state: lenient.text(1, "state")?,
        ordering_key: lenient.optional_text(2, "ordering_key")?,
        idempotency_key: lenient.text(3, "idempotency_key")?,
        method: lenient.text(4, "method")?,
        uri: lenient.text(5, "uri")?,
        headers: lenient.bytes(6, "headers")?,
        body: lenient.bytes(7, "body")?,
        enqueued_at: lenient.integer(8)?.unwrap_or(0),
        available_at: lenient.integer(9)?.unwrap_or(0),
        attempts: lenient.integer(10)?.unwrap_or(0),
        first_attempt_at: lenient.integer(11)?,
        last_attempt_at: lenient.integer(12)?,
        finished_at: lenient.integer(13)?,
        reason: match row.get_ref(14)? {
            ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        },
        history: history_text(row.get_ref(15)?),
        lease_token: lenient.integer(16)?,
        corrupt: lenient.corrupt,
    })
}

/// Column readers that take any value; see [`raw`].
struct Lenient<'r, 'a> {
    row: &'r Row<'a>,
    /// Why the row cannot be delivered (the first column found of the wrong type).
    corrupt: Option<String>,
}

impl Lenient<'_, '_> {
    fn wrong(&mut self, column: &str, value: ValueRef<'_>) {
        self.corrupt.get_or_insert_with(|| {
            format!(
                "column {column} holds {:?}, not the expected type",
                value.data_type()
            )
        });
    }

    fn optional_text(&mut self, i: usize, column: &str) -> rusqlite::Result<Option<String>> {
        Ok(match self.row.get_ref(i)? {
            ValueRef::Null => None,
            ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            other => {
                self.wrong(column, other);
                None
            }
        })
    }

    fn text(&mut self, i: usize, column: &str) -> rusqlite::Result<String> {
        let value = self.row.get_ref(i)?;
        if value == ValueRef::Null {
            self.wrong(column, value);
        }
        Ok(self.optional_text(i, column)?.unwrap_or_default())
    }

    fn bytes(&mut self, i: usize, column: &str) -> rusqlite::Result<Vec<u8>> {
        Ok(match self.row.get_ref(i)? {
            ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
            other => {
                self.wrong(column, other);
                Vec::new()
            }
        })
    }

    fn integer(&mut self, i: usize) -> rusqlite::Result<Option<i64>> {
        Ok(match self.row.get_ref(i)? {
            ValueRef::Integer(n) => Some(n),
            _ => None,
        })
    }
}

/// The `history` column as text, whatever a corrupt row holds there (a blob, a number, a null):
/// one unreadable column must not fail the read of the row, nor a claim of a whole batch.
fn history_text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Null => String::new(),
    }
}

/// SQL for `history` with the attempt `json` (a parameter holding an attempt as JSON text)
/// appended. A history that is not a JSON array (a corrupt row) is replaced by a fresh one
/// whose first record (class `corrupt`, at `at`) notes the corruption and the start of what the
/// column held — so recording an outcome never fails on it, and the entry is not re-delivered
/// forever.
fn history_appended(json: &str, at: &str) -> String {
    format!(
        "CASE WHEN typeof(history) = 'text' AND json_valid(history)
                   AND json_type(CASE WHEN json_valid(history) THEN history ELSE 'null' END) = 'array'
              THEN json_insert(history, '$[#]', json({json}))
              ELSE json_array(
                json_object('attempt', 0, 'at', {at}, 'class', 'corrupt',
                  'outcome', 'attempt history was unreadable and was reset; it held: '
                    || substr(CAST(history AS TEXT), 1, {NOTE_CHARS})),
                json({json}))
         END"
    )
}

/// How much of a corrupt history the note keeps.
const NOTE_CHARS: usize = 200;

fn insert(conn: &Connection, v: &InsertValues) -> rusqlite::Result<EntryId> {
    let sql = format!(
        "INSERT INTO redrive_entries ({INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) RETURNING id"
    );
    conn.prepare_cached(&sql)?
        .query_row(
            params![
                v.state,
                v.ordering_key,
                v.idempotency_key,
                v.method,
                v.uri,
                v.headers,
                v.body,
                v.enqueued_at,
                v.available_at,
                v.attempts,
                v.first_attempt_at,
                v.last_attempt_at,
                v.history,
                v.reason,
                v.finished_at,
            ],
            |r| r.get(0),
        )
        .map(EntryId)
}

fn lease_checked(changed: usize, id: EntryId) -> Result<(), Fail> {
    if changed == 0 {
        Err(Fail::Queue(QueueError::LeaseLost { id }))
    } else {
        Ok(())
    }
}

impl RedriveQueue for SqliteQueue {
    fn enqueue(&self, entry: NewEntry) -> QueueFuture<'_, EntryId> {
        let values = InsertValues::new(entry, None);
        self.run("enqueue", move |c| Ok(insert(c, &values)?))
    }

    fn enqueue_dead(&self, entry: NewEntry, reason: String) -> QueueFuture<'_, EntryId> {
        let values = InsertValues::new(entry, Some(reason));
        self.run("record a dead letter", move |c| Ok(insert(c, &values)?))
    }

    fn has_pending(&self, ordering_key: &str) -> QueueFuture<'_, bool> {
        let key = ordering_key.to_owned();
        self.run("look up pending entries", move |c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM redrive_entries WHERE state = 'pending' AND ordering_key = ?1)",
            )?
            .query_row([key], |r| r.get(0))?)
        })
    }

    fn claim(&self, claim: Claim<'_>) -> QueueFuture<'_, Vec<Claimed>> {
        let worker = claim.worker.to_owned();
        let now = claim.now.as_millis();
        let until = claim.now.plus(claim.lease).as_millis();
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        let token = new_lease_token();
        self.run("claim entries", move |c| {
            let sql = format!(
                "UPDATE redrive_entries SET lease_owner = ?1, lease_token = ?2, lease_until = ?3
                 WHERE id IN (
                   SELECT e.id FROM redrive_entries e
                   WHERE e.state = 'pending' AND e.available_at <= ?4
                     AND (e.lease_until IS NULL OR e.lease_until <= ?4)
                     AND (e.ordering_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM redrive_entries o
                       WHERE o.state = 'pending' AND o.ordering_key = e.ordering_key AND o.id <> e.id
                         AND (o.id < e.id OR o.lease_until > ?4)))
                   ORDER BY e.available_at, e.id LIMIT ?5)
                 RETURNING {COLUMNS}"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows: Vec<RawRow> = stmt
                .query_map(params![worker, token, until, now, limit], raw)?
                .collect::<Result<_, _>>()?;
            rows.sort_by_key(|r| (r.available_at, r.id));
            Ok(rows.into_iter().map(RawRow::into_claimed).collect())
        })
    }

    fn renew_lease(&self, id: EntryId, lease: LeaseToken, until: Timestamp) -> QueueFuture<'_, ()> {
        self.run("renew a lease", move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE redrive_entries SET lease_until = MAX(COALESCE(lease_until, ?3), ?3)
                     WHERE id = ?1 AND state = 'pending' AND lease_token = ?2",
                )?
                .execute(params![id.0, lease.0, until.as_millis()])?;
            lease_checked(changed, id)
        })
    }

    fn complete(
        &self,
        id: EntryId,
        lease: LeaseToken,
        attempt: AttemptRecord,
    ) -> QueueFuture<'_, ()> {
        let json = attempt_json(&attempt);
        self.run("record a delivery", move |c| {
            let changed = c
                .prepare_cached(&format!(
                    "UPDATE redrive_entries SET state = 'delivered', attempts = attempts + 1,
                       first_attempt_at = COALESCE(first_attempt_at, ?3), last_attempt_at = ?3,
                       finished_at = ?3, history = {},
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = ?1 AND state = 'pending' AND lease_token = ?2",
                    history_appended("?4", "?3")
                ))?
                .execute(params![id.0, lease.0, attempt.at, json])?;
            lease_checked(changed, id)
        })
    }

    fn reschedule(
        &self,
        id: EntryId,
        lease: LeaseToken,
        attempt: AttemptRecord,
        next: Timestamp,
    ) -> QueueFuture<'_, ()> {
        let json = attempt_json(&attempt);
        self.run("reschedule an entry", move |c| {
            let changed = c
                .prepare_cached(&format!(
                    "UPDATE redrive_entries SET attempts = attempts + 1, available_at = ?5,
                       first_attempt_at = COALESCE(first_attempt_at, ?3), last_attempt_at = ?3,
                       history = {},
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = ?1 AND state = 'pending' AND lease_token = ?2",
                    history_appended("?4", "?3")
                ))?
                .execute(params![id.0, lease.0, attempt.at, json, next.as_millis()])?;
            lease_checked(changed, id)
        })
    }

    fn dead_letter(
        &self,
        id: EntryId,
        lease: LeaseToken,
        attempt: Option<AttemptRecord>,
        reason: String,
        now: Timestamp,
    ) -> QueueFuture<'_, ()> {
        let json = attempt.as_ref().map(attempt_json);
        let at = attempt.as_ref().map(|a| a.at);
        self.run("dead-letter an entry", move |c| {
            let changed = c
                .prepare_cached(&format!(
                    "UPDATE redrive_entries SET state = 'dead', reason = ?3, finished_at = ?4,
                       attempts = attempts + (?5 IS NOT NULL),
                       first_attempt_at = COALESCE(first_attempt_at, ?6),
                       last_attempt_at = COALESCE(?6, last_attempt_at),
                       history = CASE WHEN ?5 IS NULL THEN history ELSE {} END,
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = ?1 AND state = 'pending' AND lease_token = ?2",
                    history_appended("?5", "?6")
                ))?
                .execute(params![id.0, lease.0, reason, now.as_millis(), json, at])?;
            lease_checked(changed, id)
        })
    }

    fn get(&self, id: EntryId) -> QueueFuture<'_, Option<EntryRecord>> {
        self.run("read an entry", move |c| {
            let sql = format!("SELECT {COLUMNS} FROM redrive_entries WHERE id = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([id.0], raw)
                .optional()?
                .map(RawRow::into_record))
        })
    }

    fn list(
        &self,
        state: EntryState,
        after: Option<EntryId>,
        limit: usize,
    ) -> QueueFuture<'_, Vec<EntryRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("list entries", move |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM redrive_entries WHERE state = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            );
            let rows = c
                .prepare_cached(&sql)?
                .query_map(params![state.as_str(), after.map_or(0, |a| a.0), limit], raw)?
                .map(|r| r.map(RawRow::into_record))
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    fn requeue(&self, id: EntryId, now: Timestamp) -> QueueFuture<'_, bool> {
        self.run("requeue a dead letter", move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE redrive_entries SET state = 'pending', enqueued_at = ?2, available_at = ?2,
                       finished_at = NULL, reason = NULL,
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = ?1 AND state = 'dead'",
                )?
                .execute(params![id.0, now.as_millis()])?;
            Ok(changed == 1)
        })
    }

    fn purge(&self, id: EntryId) -> QueueFuture<'_, bool> {
        self.run("purge a dead letter", move |c| {
            let changed = c
                .prepare_cached("DELETE FROM redrive_entries WHERE id = ?1 AND state = 'dead'")?
                .execute([id.0])?;
            Ok(changed == 1)
        })
    }

    fn purge_finished(
        &self,
        delivered_before: Timestamp,
        dead_before: Timestamp,
    ) -> QueueFuture<'_, PurgeReport> {
        self.run("purge finished entries", move |c| {
            let tx = c.transaction()?;
            let delivered = tx.execute(
                "DELETE FROM redrive_entries WHERE state = 'delivered' AND finished_at < ?1",
                [delivered_before.as_millis()],
            )?;
            let dead = tx.execute(
                "DELETE FROM redrive_entries WHERE state = 'dead' AND finished_at < ?1",
                [dead_before.as_millis()],
            )?;
            tx.commit()?;
            Ok(PurgeReport {
                delivered: delivered as u64,
                dead: dead as u64,
            })
        })
    }

    fn stats(&self) -> QueueFuture<'_, QueueStats> {
        self.run("read queue statistics", |c| {
            Ok(c.prepare_cached(
                "SELECT
                   (SELECT COUNT(*) FROM redrive_entries WHERE state = 'pending'),
                   (SELECT COUNT(*) FROM redrive_entries WHERE state = 'dead'),
                   (SELECT COUNT(*) FROM redrive_entries WHERE state = 'delivered'),
                   (SELECT MIN(enqueued_at) FROM redrive_entries WHERE state = 'pending'),
                   (SELECT MIN(MAX(available_at, COALESCE(lease_until, 0))) FROM redrive_entries WHERE state = 'pending')",
            )?
            .query_row([], |r| {
                Ok(QueueStats {
                    pending: r.get::<_, i64>(0)? as u64,
                    dead: r.get::<_, i64>(1)? as u64,
                    delivered: r.get::<_, i64>(2)? as u64,
                    oldest_pending: r.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
                    next_due: r.get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
                })
            })?)
        })
    }
}
