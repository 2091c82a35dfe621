//! [`PostgresQueue`]: the distributed store — many workers on many machines.

use std::{
    error::Error,
    fmt, io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::RwLock;
use tokio_postgres::{Client, NoTls, Row, types::ToSql};

use super::{
    Claim, QueueFuture, RedriveQueue,
    row::{INSERT_COLUMNS, InsertValues, RawRow, attempt_json, new_lease_token},
};
use crate::{
    QueueError,
    clock::{Clock, SystemClock, Timestamp},
    entry::{
        AttemptRecord, Claimed, EntryId, EntryRecord, EntryState, LeaseToken, NewEntry,
        PurgeReport, QueueStats,
    },
};

/// The schema migrations this crate ships for PostgreSQL: `(version, SQL)`, applied in order
/// (under an advisory lock, so workers starting together do not race) by
/// [`PostgresQueue::connect`], [`PostgresQueue::connect_existing`] and
/// [`PostgresQueue::migrate`].
pub const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    include_str!("../../migrations/postgres/0001_entries.sql"),
)];

/// The advisory lock key migrations hold.
const MIGRATION_LOCK: i64 = 0x0072_6564_7269_7665; // "redrive"

const COLUMNS: &str = "id, state, ordering_key, idempotency_key, method, uri, headers, body, \
     enqueued_at, available_at, attempts, first_attempt_at, last_attempt_at, finished_at, \
     reason, history::text, lease_token";

/// A queue in a PostgreSQL table.
///
/// Workers claim due entries with one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`
/// statement, so any number of workers on any number of machines share the queue without
/// blocking each other and without two of them holding the same entry; FIFO per ordering key
/// holds across all of them. Leases are timestamps compared with the workers' clocks, so keep
/// the machines' clocks in sync (NTP) and the lease much longer than the expected skew.
///
/// One connection (tokio-postgres pipelines concurrent queries over it), without TLS; a
/// connection made by [`connect`](Self::connect) or [`connect_existing`](Self::connect_existing)
/// is re-established when it breaks.
///
/// Errors the server sent carry its own message (`FATAL: database "orders" does not exist`),
/// and connection errors their cause (`error connecting to server: Connection refused`).
/// To keep several queues in one database, give each its own schema through the connection
/// string's `options=-csearch_path=…`.
///
/// A database that stops answering is an error, not a hang: connecting (or reconnecting) gives
/// up after [`CONNECT_TIMEOUT`], and every operation after [`PostgresQueue::timeout`] (30 s by
/// default). An operation that times out may still complete in the database (a claim then
/// holds its entries until the lease expires; an enqueue reported as failed may be stored —
/// its `Idempotency-Key` makes a later duplicate harmless).
pub struct PostgresQueue {
    client: RwLock<Arc<Client>>,
    config: Option<String>,
    timeout: Duration,
    /// The address of a client an operation timed out on (0: none). Its connection is not
    /// trusted any more: a connection the network black-holed is not closed until the OS gives
    /// up (minutes), and one busy with a slow statement holds every operation queued behind it.
    /// The next operation connects afresh; operations still running on it finish on their own.
    suspect: AtomicUsize,
}

impl fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresQueue").finish_non_exhaustive()
    }
}

/// How long connecting to PostgreSQL (socket and startup) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one queue operation may take by default (see [`PostgresQueue::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn timed_out(what: &str, after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: no answer from PostgreSQL within {after:?}"),
    )
}

/// A tokio-postgres error displayed with what it keeps behind `source()`: the server's own
/// message for an error the server sent (tokio-postgres displays it as `db error`), the cause
/// of a connection that failed (displayed as `error connecting to server`).
#[derive(Debug)]
struct PostgresError(tokio_postgres::Error);

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            write!(f, "{}: {}", db.severity(), db.message())?;
            if let Some(detail) = db.detail() {
                write!(f, " ({detail})")?;
            }
            if let Some(hint) = db.hint() {
                write!(f, "; hint: {hint}")?;
            }
            return Ok(());
        }
        write!(f, "{}", self.0)?;
        match self.0.source() {
            Some(cause) => write!(f, ": {cause}"),
            None => Ok(()),
        }
    }
}

impl Error for PostgresError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// A backend error of `op` from a tokio-postgres error.
fn backend(op: &'static str, e: tokio_postgres::Error) -> QueueError {
    QueueError::backend(op, PostgresError(e))
}

async fn open(config: &str) -> Result<Client, QueueError> {
    let op = "connect to PostgreSQL";
    // tokio-postgres' own `connect_timeout` covers the socket only: a server that accepts and
    // never answers the startup would hang here.
    let (client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(config, NoTls))
            .await
            .map_err(|_| QueueError::backend(op, timed_out("connecting", CONNECT_TIMEOUT)))?
            .map_err(|e| backend(op, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "redrive PostgreSQL connection closed");
        }
    });
    Ok(client)
}

fn be(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> QueueError {
    move |e| backend(op, e)
}

impl PostgresQueue {
    /// Connects (a libpq-style connection string or URL) and applies pending migrations.
    ///
    /// # Errors
    /// If the connection fails, a migration fails, or the schema is newer than this crate.
    pub async fn connect(config: &str) -> Result<Self, QueueError> {
        let client = open(config).await?;
        migrate(&client).await?;
        Ok(Self::connected(client, config))
    }

    /// Connects to a database that already holds a queue (its tables were made by
    /// [`connect`](Self::connect) or [`migrate`](Self::migrate)) and applies pending
    /// migrations: what an admin tool does, so that a mistyped database name is an error
    /// instead of a new, empty queue.
    ///
    /// # Errors
    /// [`QueueError::NoQueue`] if the database holds no queue (no `redrive_schema` table on
    /// the search path); otherwise as [`connect`](Self::connect).
    pub async fn connect_existing(config: &str) -> Result<Self, QueueError> {
        let client = open(config).await?;
        let found: bool = client
            .query_one("SELECT to_regclass('redrive_schema') IS NOT NULL", &[])
            .await
            .map_err(be("look for the queue"))?
            .get(0);
        if !found {
            let database = config
                .parse::<tokio_postgres::Config>()
                .ok()
                .and_then(|c| c.get_dbname().map(str::to_owned));
            return Err(QueueError::NoQueue {
                location: match database {
                    Some(name) => format!("PostgreSQL database \"{name}\""),
                    None => "the PostgreSQL database".to_owned(),
                },
                reason: "it has no redrive_schema table",
            });
        }
        migrate(&client).await?;
        Ok(Self::connected(client, config))
    }

    fn connected(client: Client, config: &str) -> Self {
        Self {
            client: RwLock::new(Arc::new(client)),
            config: Some(config.to_owned()),
            timeout: DEFAULT_TIMEOUT,
            suspect: AtomicUsize::new(0),
        }
    }

    /// How long one operation (a claim, an enqueue, a record…) may take before it fails with
    /// a timed-out [`QueueError::Backend`] (default [`DEFAULT_TIMEOUT`]; a reconnect it needs
    /// counts too). `Duration::MAX` waits forever.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Wraps a connected client without migrating (call [`migrate`](Self::migrate) once) and
    /// without reconnecting.
    #[must_use]
    pub fn from_client(client: Client) -> Self {
        Self {
            client: RwLock::new(Arc::new(client)),
            config: None,
            timeout: DEFAULT_TIMEOUT,
            suspect: AtomicUsize::new(0),
        }
    }

    /// Applies pending migrations. Do not share the client with other work while this runs.
    ///
    /// # Errors
    /// If a migration fails or the schema is newer than this crate.
    pub async fn migrate(&self) -> Result<(), QueueError> {
        let client = self.client().await?;
        migrate(&client).await
    }

    fn is_suspect(&self, client: &Arc<Client>) -> bool {
        self.suspect.load(Ordering::Acquire) == Arc::as_ptr(client) as usize
    }

    async fn client(&self) -> Result<Arc<Client>, QueueError> {
        let current = Arc::clone(&*self.client.read().await);
        if !current.is_closed() && !self.is_suspect(&current) {
            return Ok(current);
        }
        let Some(config) = &self.config else {
            return Ok(current);
        };
        let mut slot = self.client.write().await;
        if slot.is_closed() || self.is_suspect(&slot) {
            tracing::info!("reconnecting the redrive PostgreSQL queue");
            *slot = Arc::new(open(config).await?);
            self.suspect.store(0, Ordering::Release);
        }
        Ok(Arc::clone(&slot))
    }

    fn query<'a, T, Fut>(
        &'a self,
        op: &'static str,
        f: impl FnOnce(Arc<Client>) -> Fut + Send + 'a,
    ) -> QueueFuture<'a, T>
    where
        T: Send + 'a,
        Fut: Future<Output = Result<T, Fail>> + Send + 'a,
    {
        Box::pin(async move {
            // The client the operation runs on, for the timeout branch (set once, read after).
            let used = std::sync::OnceLock::<Arc<Client>>::new();
            let run = async {
                let client = self.client().await?;
                let _ = used.set(Arc::clone(&client));
                f(client).await.map_err(|e| match e {
                    Fail::Sql(e) => backend(op, e),
                    Fail::Queue(e) => e,
                })
            };
            if self.timeout == Duration::MAX {
                return run.await;
            }
            match tokio::time::timeout(self.timeout, run).await {
                Ok(result) => result,
                Err(_) => {
                    if let Some(client) = used.get() {
                        self.suspect
                            .store(Arc::as_ptr(client) as usize, Ordering::Release);
                    }
                    Err(QueueError::backend(op, timed_out(op, self.timeout)))
                }
            }
        })
    }
}

enum Fail {
    Sql(tokio_postgres::Error),
    Queue(QueueError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Sql(e)
    }
}

async fn migrate(client: &Client) -> Result<(), QueueError> {
    let op = "migrate the schema";
    client.batch_execute("BEGIN").await.map_err(be(op))?;
    let result = migrate_in_transaction(client).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client.batch_execute(end).await.map_err(be(op));
    result.and(ended)
}

async fn migrate_in_transaction(client: &Client) -> Result<(), QueueError> {
    let op = "migrate the schema";
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(be(op))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS redrive_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(be(op))?;
    let current: i64 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM redrive_schema", &[])
        .await
        .map_err(be(op))?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(QueueError::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        client.batch_execute(sql).await.map_err(be(op))?;
        client
            .execute(
                "INSERT INTO redrive_schema (version, applied_at) VALUES ($1, $2)",
                &[version, &SystemClock.now().as_millis()],
            )
            .await
            .map_err(be(op))?;
    }
    Ok(())
}

/// SQL for `history` with the attempt `json` (a text parameter holding an attempt as JSON)
/// appended. A history that is not a JSON array (a corrupt row: `jsonb` keeps it valid JSON, but
/// not necessarily an array) is replaced by a fresh one whose first record (class `corrupt`, at
/// `at`) notes the corruption and the start of what the column held.
fn history_appended(json: &str, at: &str) -> String {
    format!(
        "(CASE WHEN jsonb_typeof(history) = 'array' THEN history
               ELSE jsonb_build_array(jsonb_build_object('attempt', 0, 'at', {at}::bigint, 'class', 'corrupt',
                 'outcome', 'attempt history was unreadable and was reset; it held: '
                   || left(history::text, 200)))
          END) || jsonb_build_array({json}::text::jsonb)"
    )
}

fn raw(row: &Row) -> Result<RawRow, tokio_postgres::Error> {
    Ok(RawRow {
        id: row.try_get(0)?,
        state: row.try_get(1)?,
        ordering_key: row.try_get(2)?,
        idempotency_key: row.try_get(3)?,
        method: row.try_get(4)?,
        uri: row.try_get(5)?,
        headers: row.try_get(6)?,
        body: row.try_get(7)?,
        enqueued_at: row.try_get(8)?,
        available_at: row.try_get(9)?,
        attempts: i64::from(row.try_get::<_, i32>(10)?),
        first_attempt_at: row.try_get(11)?,
        last_attempt_at: row.try_get(12)?,
        finished_at: row.try_get(13)?,
        reason: row.try_get(14)?,
        history: row.try_get(15)?,
        lease_token: row.try_get(16)?,
        corrupt: None,
    })
}

async fn insert(client: &Client, v: InsertValues) -> Result<EntryId, Fail> {
    let sql = format!(
        "INSERT INTO redrive_entries ({INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text::jsonb, $14, $15) RETURNING id"
    );
    let params: [&(dyn ToSql + Sync); 15] = [
        &v.state,
        &v.ordering_key,
        &v.idempotency_key,
        &v.method,
        &v.uri,
        &v.headers,
        &v.body,
        &v.enqueued_at,
        &v.available_at,
        &v.attempts,
        &v.first_attempt_at,
        &v.last_attempt_at,
        &v.history,
        &v.reason,
        &v.finished_at,
    ];
    let row = client.query_one(&sql, &params).await?;
    Ok(EntryId(row.try_get(0)?))
}

fn lease_checked(changed: u64, id: EntryId) -> Result<(), Fail> {
    if changed == 0 {
        Err(Fail::Queue(QueueError::LeaseLost { id }))
    } else {
        Ok(())
    }
}

fn i64_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl RedriveQueue for PostgresQueue {
    fn enqueue(&self, entry: NewEntry) -> QueueFuture<'_, EntryId> {
        let values = InsertValues::new(entry, None);
        self.query("enqueue", move |c| async move { insert(&c, values).await })
    }

    fn enqueue_dead(&self, entry: NewEntry, reason: String) -> QueueFuture<'_, EntryId> {
        let values = InsertValues::new(entry, Some(reason));
        self.query("record a dead letter", move |c| async move {
            insert(&c, values).await
        })
    }

    fn has_pending(&self, ordering_key: &str) -> QueueFuture<'_, bool> {
        let key = ordering_key.to_owned();
        self.query("look up pending entries", move |c| async move {
            let row = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM redrive_entries WHERE state = 'pending' AND ordering_key = $1)",
                    &[&key],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
    }

    fn claim(&self, claim: Claim<'_>) -> QueueFuture<'_, Vec<Claimed>> {
        let worker = claim.worker.to_owned();
        let now = claim.now.as_millis();
        let until = claim.now.plus(claim.lease).as_millis();
        let limit = i64_of(claim.limit);
        let token = new_lease_token();
        self.query("claim entries", move |c| async move {
            let sql = format!(
                "WITH due AS (
                   SELECT e.id AS due_id FROM redrive_entries e
                   WHERE e.state = 'pending' AND e.available_at <= $4
                     AND (e.lease_until IS NULL OR e.lease_until <= $4)
                     AND (e.ordering_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM redrive_entries o
                       WHERE o.state = 'pending' AND o.ordering_key = e.ordering_key AND o.id <> e.id
                         AND (o.id < e.id OR o.lease_until > $4)))
                   ORDER BY e.available_at, e.id
                   LIMIT $5
                   FOR UPDATE SKIP LOCKED)
                 UPDATE redrive_entries SET lease_owner = $1, lease_token = $2, lease_until = $3
                 FROM due WHERE id = due.due_id
                 RETURNING {COLUMNS}"
            );
            let rows = c.query(&sql, &[&worker, &token, &until, &now, &limit]).await?;
            let mut rows: Vec<RawRow> = rows.iter().map(raw).collect::<Result<_, _>>()?;
            rows.sort_by_key(|r| (r.available_at, r.id));
            Ok(rows.into_iter().map(RawRow::into_claimed).collect())
        })
    }

    fn renew_lease(&self, id: EntryId, lease: LeaseToken, until: Timestamp) -> QueueFuture<'_, ()> {
        self.query("renew a lease", move |c| async move {
            let changed = c
                .execute(
                    "UPDATE redrive_entries SET lease_until = GREATEST(lease_until, $3)
                     WHERE id = $1 AND state = 'pending' AND lease_token = $2",
                    &[&id.0, &lease.0, &until.as_millis()],
                )
                .await?;
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
        self.query("record a delivery", move |c| async move {
            let changed = c
                .execute(
                    &format!(
                        "UPDATE redrive_entries SET state = 'delivered', attempts = attempts + 1,
                       first_attempt_at = COALESCE(first_attempt_at, $3), last_attempt_at = $3,
                       finished_at = $3, history = {},
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'pending' AND lease_token = $2",
                        history_appended("$4", "$3")
                    ),
                    &[&id.0, &lease.0, &attempt.at, &json],
                )
                .await?;
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
        self.query("reschedule an entry", move |c| async move {
            let changed = c
                .execute(
                    &format!(
                        "UPDATE redrive_entries SET attempts = attempts + 1, available_at = $5,
                       first_attempt_at = COALESCE(first_attempt_at, $3), last_attempt_at = $3,
                       history = {},
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'pending' AND lease_token = $2",
                        history_appended("$4", "$3")
                    ),
                    &[&id.0, &lease.0, &attempt.at, &json, &next.as_millis()],
                )
                .await?;
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
        self.query("dead-letter an entry", move |c| async move {
            let changed = c
                .execute(
                    &format!(
                        "UPDATE redrive_entries SET state = 'dead', reason = $3, finished_at = $4,
                       attempts = attempts + (CASE WHEN $5::text IS NULL THEN 0 ELSE 1 END),
                       first_attempt_at = COALESCE(first_attempt_at, $6),
                       last_attempt_at = COALESCE($6, last_attempt_at),
                       history = CASE WHEN $5::text IS NULL THEN history ELSE {} END,
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'pending' AND lease_token = $2",
                        history_appended("$5", "$6")
                    ),
                    &[&id.0, &lease.0, &reason, &now.as_millis(), &json, &at],
                )
                .await?;
            lease_checked(changed, id)
        })
    }

    fn get(&self, id: EntryId) -> QueueFuture<'_, Option<EntryRecord>> {
        self.query("read an entry", move |c| async move {
            let sql = format!("SELECT {COLUMNS} FROM redrive_entries WHERE id = $1");
            let row = c.query_opt(&sql, &[&id.0]).await?;
            Ok(row.map(|r| raw(&r)).transpose()?.map(RawRow::into_record))
        })
    }

    fn list(
        &self,
        state: EntryState,
        after: Option<EntryId>,
        limit: usize,
    ) -> QueueFuture<'_, Vec<EntryRecord>> {
        let limit = i64_of(limit);
        self.query("list entries", move |c| async move {
            let sql = format!(
                "SELECT {COLUMNS} FROM redrive_entries WHERE state = $1 AND id > $2 ORDER BY id LIMIT $3"
            );
            let rows = c
                .query(&sql, &[&state.as_str(), &after.map_or(0, |a| a.0), &limit])
                .await?;
            Ok(rows
                .iter()
                .map(|r| raw(r).map(RawRow::into_record))
                .collect::<Result<_, _>>()?)
        })
    }

    fn requeue(&self, id: EntryId, now: Timestamp) -> QueueFuture<'_, bool> {
        self.query("requeue a dead letter", move |c| async move {
            let changed = c
                .execute(
                    "UPDATE redrive_entries SET state = 'pending', enqueued_at = $2, available_at = $2,
                       finished_at = NULL, reason = NULL,
                       lease_owner = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'dead'",
                    &[&id.0, &now.as_millis()],
                )
                .await?;
            Ok(changed == 1)
        })
    }

    fn purge(&self, id: EntryId) -> QueueFuture<'_, bool> {
        self.query("purge a dead letter", move |c| async move {
            let changed = c
                .execute(
                    "DELETE FROM redrive_entries WHERE id = $1 AND state = 'dead'",
                    &[&id.0],
                )
                .await?;
            Ok(changed == 1)
        })
    }

    fn purge_finished(
        &self,
        delivered_before: Timestamp,
        dead_before: Timestamp,
    ) -> QueueFuture<'_, PurgeReport> {
        self.query("purge finished entries", move |c| async move {
            let delivered = c
                .execute(
                    "DELETE FROM redrive_entries WHERE state = 'delivered' AND finished_at < $1",
                    &[&delivered_before.as_millis()],
                )
                .await?;
            let dead = c
                .execute(
                    "DELETE FROM redrive_entries WHERE state = 'dead' AND finished_at < $1",
                    &[&dead_before.as_millis()],
                )
                .await?;
            Ok(PurgeReport { delivered, dead })
        })
    }

    fn stats(&self) -> QueueFuture<'_, QueueStats> {
        self.query("read queue statistics", move |c| async move {
            let row = c
                .query_one(
                    "SELECT
                       COUNT(*) FILTER (WHERE state = 'pending'),
                       COUNT(*) FILTER (WHERE state = 'dead'),
                       COUNT(*) FILTER (WHERE state = 'delivered'),
                       MIN(enqueued_at) FILTER (WHERE state = 'pending'),
                       MIN(GREATEST(available_at, COALESCE(lease_until, 0))) FILTER (WHERE state = 'pending')
                     FROM redrive_entries",
                    &[],
                )
                .await?;
            let count = |i: usize| -> Result<u64, tokio_postgres::Error> {
                Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
            };
            Ok(QueueStats {
                pending: count(0)?,
                dead: count(1)?,
                delivered: count(2)?,
                oldest_pending: row.try_get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
                next_due: row.try_get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
            })
        })
    }
}
