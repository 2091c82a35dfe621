-- tower-redrive queue, PostgreSQL schema version 1.
CREATE TABLE redrive_entries (
    id               BIGSERIAL PRIMARY KEY,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    ordering_key     TEXT,
    idempotency_key  TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    uri              TEXT    NOT NULL,
    headers          BYTEA   NOT NULL,
    body             BYTEA   NOT NULL,
    enqueued_at      BIGINT  NOT NULL,
    available_at     BIGINT  NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at BIGINT,
    last_attempt_at  BIGINT,
    finished_at      BIGINT,
    reason           TEXT,
    history          JSONB   NOT NULL DEFAULT '[]'::jsonb,
    lease_owner      TEXT,
    lease_token      BIGINT,
    lease_until      BIGINT
);
CREATE INDEX redrive_entries_due ON redrive_entries (available_at, id) WHERE state = 'pending';
CREATE INDEX redrive_entries_order ON redrive_entries (ordering_key, id) WHERE state = 'pending';
CREATE INDEX redrive_entries_finished ON redrive_entries (state, finished_at);
