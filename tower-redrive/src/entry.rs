//! What a queue stores: requests, entries, attempt history.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, request::Parts};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use tower_fault::IDEMPOTENCY_KEY;

use crate::clock::Timestamp;

/// The identifier of a queue entry (unique within one queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(pub i64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An HTTP request in the form a queue keeps it: method, URI, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// The request method.
    pub method: Method,
    /// The request URI (absolute for a client stack).
    pub uri: Uri,
    /// Every header, including the `Idempotency-Key` stamped before the first attempt.
    pub headers: HeaderMap,
    /// The whole request body.
    pub body: Bytes,
}

impl StoredRequest {
    /// A request with no headers and an empty body.
    #[must_use]
    pub fn new(method: Method, uri: Uri) -> Self {
        Self {
            method,
            uri,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Copies the parts of a request (extensions are not stored).
    #[must_use]
    pub fn from_parts(parts: &Parts, body: Bytes) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body,
        }
    }

    /// Rebuilds an `http::Request` with a replayable body.
    #[must_use]
    pub fn to_request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// The `Idempotency-Key` header's value, if it has one.
    #[must_use]
    pub fn idempotency_key(&self) -> Option<&HeaderValue> {
        self.headers.get(IDEMPOTENCY_KEY)
    }
}

/// The record of one delivery attempt, kept in an entry's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt (the one made by the caller's request).
    pub attempt: u32,
    /// When the attempt ended, in milliseconds since the UNIX epoch.
    pub at: i64,
    /// The class of the outcome (`success`, `transient`, `permanent`) or `corrupt`.
    pub class: String,
    /// What happened: a status line (`503 Service Unavailable`) or an error chain.
    pub outcome: String,
}

impl AttemptRecord {
    /// A record.
    #[must_use]
    pub fn new(attempt: u32, at: Timestamp, class: &str, outcome: impl Into<String>) -> Self {
        let mut outcome = outcome.into();
        truncate(&mut outcome, 1_024);
        Self {
            attempt,
            at: at.as_millis(),
            class: class.to_owned(),
            outcome,
        }
    }

    /// When the attempt ended.
    #[must_use]
    pub const fn at(&self) -> Timestamp {
        Timestamp::from_millis(self.at)
    }
}

pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

/// A request to be queued.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewEntry {
    /// The request.
    pub request: StoredRequest,
    /// The idempotency key every delivery carries.
    pub idempotency_key: String,
    /// Entries with the same ordering key are delivered in enqueue order.
    pub ordering_key: Option<String>,
    /// When the entry was queued (the schedule counts from here).
    pub enqueued_at: Timestamp,
    /// The earliest time of the next delivery.
    pub available_at: Timestamp,
    /// The attempt that failed before the entry was queued, if any.
    pub first_attempt: Option<AttemptRecord>,
}

impl NewEntry {
    /// An entry due at `now`.
    ///
    /// The idempotency key is taken from the request's `Idempotency-Key` header; a key is
    /// generated (UUID v7) and stamped on the request if it has none.
    #[must_use]
    pub fn new(mut request: StoredRequest, now: Timestamp) -> Self {
        let idempotency_key = stamp_key(&mut request.headers);
        Self {
            request,
            idempotency_key,
            ordering_key: None,
            enqueued_at: now,
            available_at: now,
            first_attempt: None,
        }
    }

    /// Sets the ordering key.
    #[must_use]
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Sets the time of the first re-delivery.
    #[must_use]
    pub const fn available_at(mut self, at: Timestamp) -> Self {
        self.available_at = at;
        self
    }

    /// Records the attempt that failed before queueing.
    #[must_use]
    pub fn first_attempt(mut self, attempt: AttemptRecord) -> Self {
        self.first_attempt = Some(attempt);
        self
    }
}

/// Returns the request's idempotency key, generating and inserting one if missing.
pub(crate) fn stamp_key(headers: &mut HeaderMap) -> String {
    if let Some(value) = headers.get(IDEMPOTENCY_KEY) {
        return match tower_fault::IdempotencyKey::parse(value) {
            Ok(key) => key.as_str().to_owned(),
            Err(_) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        };
    }
    let key = tower_fault::IdempotencyKey::generate();
    headers.insert(IDEMPOTENCY_KEY, key.to_header_value());
    key.as_str().to_owned()
}

/// An entry claimed by a worker: it holds a lease until it reports the outcome.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The entry.
    pub id: EntryId,
    /// The lease token; the outcome is accepted only with it (see [`QueueError::LeaseLost`](crate::QueueError::LeaseLost)).
    pub lease: LeaseToken,
    /// Attempts made so far (including the caller's).
    pub attempts: u32,
    /// When the entry was queued.
    pub enqueued_at: Timestamp,
    /// The ordering key.
    pub ordering_key: Option<String>,
    /// The idempotency key.
    pub idempotency_key: String,
    /// The request, or why it could not be read back.
    pub request: Result<StoredRequest, String>,
}

/// Proof that a worker holds an entry's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub i64);

/// The state of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// Waiting for delivery (possibly leased by a worker).
    Pending,
    /// Delivered; kept until the janitor's retention passes.
    Delivered,
    /// In the dead-letter queue.
    Dead,
}

impl EntryState {
    /// The stored name (`pending`, `delivered`, `dead`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Delivered => "delivered",
            EntryState::Dead => "dead",
        }
    }

    /// Parses a stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(EntryState::Pending),
            "delivered" => Some(EntryState::Delivered),
            "dead" => Some(EntryState::Dead),
            _ => None,
        }
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Everything a queue knows about an entry, for inspection (the dead-letter API, the admin CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// The entry.
    pub id: EntryId,
    /// Its state.
    pub state: EntryState,
    /// The ordering key.
    pub ordering_key: Option<String>,
    /// The idempotency key.
    pub idempotency_key: String,
    /// The request method, as stored.
    pub method: String,
    /// The request URI, as stored.
    pub uri: String,
    /// The body length in bytes.
    pub body_len: usize,
    /// Attempts made.
    pub attempts: u32,
    /// When the entry was queued (or last requeued).
    pub enqueued_at: Timestamp,
    /// The earliest time of the next delivery.
    pub available_at: Timestamp,
    /// The first attempt's time.
    pub first_attempt_at: Option<Timestamp>,
    /// The last attempt's time.
    pub last_attempt_at: Option<Timestamp>,
    /// When it was delivered or dead-lettered.
    pub finished_at: Option<Timestamp>,
    /// Why it was dead-lettered.
    pub reason: Option<String>,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptRecord>,
}

/// Counts and ages of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Entries waiting for delivery.
    pub pending: u64,
    /// Entries in the dead-letter queue.
    pub dead: u64,
    /// Delivered entries not yet removed by the janitor.
    pub delivered: u64,
    /// When the oldest pending entry was queued.
    pub oldest_pending: Option<Timestamp>,
    /// The earliest time a pending entry is due.
    pub next_due: Option<Timestamp>,
}

/// What the janitor removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeReport {
    /// Delivered entries removed.
    pub delivered: u64,
    /// Dead letters removed.
    pub dead: u64,
}
