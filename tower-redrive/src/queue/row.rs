//! The row shape both SQL stores read back, and its conversion into the public types.

use bytes::Bytes;
use http::{Method, Uri};

use crate::{
    clock::Timestamp,
    codec::{decode_headers, encode_headers},
    entry::{
        AttemptRecord, Claimed, EntryId, EntryRecord, EntryState, LeaseToken, NewEntry,
        StoredRequest,
    },
};

/// Columns in the order [`RawRow`] expects (`history` must be text; SQLite form).
#[cfg(feature = "sqlite")]
pub(crate) const COLUMNS: &str = "id, state, ordering_key, idempotency_key, method, uri, headers, \
     body, enqueued_at, available_at, attempts, first_attempt_at, last_attempt_at, finished_at, \
     reason, history, lease_token";

pub(crate) struct RawRow {
    pub(crate) id: i64,
    pub(crate) state: String,
    pub(crate) ordering_key: Option<String>,
    pub(crate) idempotency_key: String,
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) enqueued_at: i64,
    pub(crate) available_at: i64,
    pub(crate) attempts: i64,
    pub(crate) first_attempt_at: Option<i64>,
    pub(crate) last_attempt_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) reason: Option<String>,
    pub(crate) history: String,
    pub(crate) lease_token: Option<i64>,
    /// Why the row cannot be delivered, when a column held a value of the wrong type (SQLite
    /// does not enforce column types; PostgreSQL does, and never sets it).
    pub(crate) corrupt: Option<String>,
}

fn decode_request(row: &RawRow) -> Result<StoredRequest, String> {
    if let Some(corrupt) = &row.corrupt {
        return Err(corrupt.clone());
    }
    let method = Method::from_bytes(row.method.as_bytes())
        .map_err(|e| format!("stored method {:?} is invalid: {e}", row.method))?;
    let uri: Uri = row
        .uri
        .parse()
        .map_err(|e| format!("stored uri {:?} is invalid: {e}", row.uri))?;
    let headers = decode_headers(&row.headers)?;
    Ok(StoredRequest {
        method,
        uri,
        headers,
        body: Bytes::copy_from_slice(&row.body),
    })
}

fn attempts(row: &RawRow) -> u32 {
    u32::try_from(row.attempts).unwrap_or(0)
}

impl RawRow {
    pub(crate) fn into_claimed(self) -> Claimed {
        let request = decode_request(&self);
        Claimed {
            id: EntryId(self.id),
            lease: LeaseToken(self.lease_token.unwrap_or_default()),
            attempts: attempts(&self),
            enqueued_at: Timestamp::from_millis(self.enqueued_at),
            ordering_key: self.ordering_key,
            idempotency_key: self.idempotency_key,
            request,
        }
    }

    pub(crate) fn into_record(self) -> EntryRecord {
        let history = read_history(
            &self.history,
            self.last_attempt_at.unwrap_or(self.enqueued_at),
        );
        EntryRecord {
            id: EntryId(self.id),
            state: EntryState::parse(&self.state).unwrap_or(EntryState::Dead),
            ordering_key: self.ordering_key,
            idempotency_key: self.idempotency_key,
            body_len: self.body.len(),
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            enqueued_at: Timestamp::from_millis(self.enqueued_at),
            available_at: Timestamp::from_millis(self.available_at),
            first_attempt_at: self.first_attempt_at.map(Timestamp::from_millis),
            last_attempt_at: self.last_attempt_at.map(Timestamp::from_millis),
            finished_at: self.finished_at.map(Timestamp::from_millis),
            reason: self.reason,
            method: self.method,
            uri: self.uri,
            history,
        }
    }
}

/// An entry's attempt history, as far as it can be read: a history that is not a JSON array
/// reads as one `corrupt` record saying why; an element that is not an attempt record reads as a
/// `corrupt` record in its place (the others are kept).
fn read_history(text: &str, at: i64) -> Vec<AttemptRecord> {
    let corrupt = |outcome: String| AttemptRecord {
        attempt: 0,
        at,
        class: "corrupt".to_owned(),
        outcome,
    };
    match serde_json::from_str::<Vec<serde_json::Value>>(text) {
        Ok(items) => items
            .into_iter()
            .map(|item| {
                serde_json::from_value(item)
                    .unwrap_or_else(|e| corrupt(format!("attempt record is unreadable: {e}")))
            })
            .collect(),
        Err(e) => vec![corrupt(format!("attempt history is unreadable: {e}"))],
    }
}

/// The values an insert writes, in the order of [`INSERT_COLUMNS`].
pub(crate) struct InsertValues {
    pub(crate) state: &'static str,
    pub(crate) ordering_key: Option<String>,
    pub(crate) idempotency_key: String,
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) enqueued_at: i64,
    pub(crate) available_at: i64,
    pub(crate) attempts: i32,
    pub(crate) first_attempt_at: Option<i64>,
    pub(crate) last_attempt_at: Option<i64>,
    pub(crate) history: String,
    pub(crate) reason: Option<String>,
    pub(crate) finished_at: Option<i64>,
}

pub(crate) const INSERT_COLUMNS: &str = "state, ordering_key, idempotency_key, method, uri, \
     headers, body, enqueued_at, available_at, attempts, first_attempt_at, last_attempt_at, \
     history, reason, finished_at";

impl InsertValues {
    pub(crate) fn new(entry: NewEntry, dead_reason: Option<String>) -> Self {
        let at = entry.first_attempt.as_ref().map(|a| a.at);
        let history: Vec<AttemptRecord> = entry.first_attempt.into_iter().collect();
        let dead = dead_reason.is_some();
        Self {
            state: if dead { "dead" } else { "pending" },
            ordering_key: entry.ordering_key,
            idempotency_key: entry.idempotency_key,
            method: entry.request.method.as_str().to_owned(),
            uri: entry.request.uri.to_string(),
            headers: encode_headers(&entry.request.headers),
            body: entry.request.body.to_vec(),
            enqueued_at: entry.enqueued_at.as_millis(),
            available_at: entry.available_at.as_millis(),
            attempts: i32::try_from(history.len()).unwrap_or(i32::MAX),
            first_attempt_at: at,
            last_attempt_at: at,
            history: serde_json::to_string(&history).unwrap_or_else(|_| "[]".to_owned()),
            finished_at: dead.then(|| at.unwrap_or(entry.enqueued_at.as_millis())),
            reason: dead_reason,
        }
    }
}

pub(crate) fn attempt_json(attempt: &AttemptRecord) -> String {
    serde_json::to_string(attempt).unwrap_or_else(|_| "{}".to_owned())
}

/// A lease token: random, so a stale worker cannot guess its successor's.
pub(crate) fn new_lease_token() -> i64 {
    i64::from_ne_bytes(
        tower_fault::SeededRng::from_entropy()
            .next_u64()
            .to_ne_bytes(),
    )
}
