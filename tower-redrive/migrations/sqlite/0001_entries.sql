-- tower-redrive queue, SQLite schema version 1.
CREATE TABLE redrive_entries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    ordering_key     TEXT,
    idempotency_key  TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    uri              TEXT    NOT NULL,
    headers          BLOB    NOT NULL,
    body             BLOB    NOT NULL,
    enqueued_at      INTEGER NOT NULL,
    available_at     INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER,
    finished_at      INTEGER,
    reason           TEXT,
    history          TEXT    NOT NULL DEFAULT '[]',
    lease_owner      TEXT,
    lease_token      INTEGER,
    lease_until      INTEGER
);
CREATE INDEX redrive_entries_due ON redrive_entries (state, available_at, id);
CREATE INDEX redrive_entries_order ON redrive_entries (ordering_key, id) WHERE state = 'pending';
CREATE INDEX redrive_entries_finished ON redrive_entries (state, finished_at);
