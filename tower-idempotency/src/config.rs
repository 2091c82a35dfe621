//! The validated configuration a layer and its services share, its policies and its defaults.

use std::{fmt, ops::Deref, sync::Arc, time::Duration};

use http::{HeaderName, Method, header, request::Parts};
use tower_fault::HttpClassifier;

use crate::{key::Scope, telemetry::Keys, waiters::Waiters};

/// The default retention of completed records: 24 hours.
///
/// A record must outlive every retry of its request, including a client's retries after a
/// long outage or a batch job run again the next day; a day is also what payment APIs
/// commonly keep their keys for. Longer costs store memory (new keys per second × TTL
/// records).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The default lease of a claim: 60 seconds, renewed every third of it while the handler runs
/// and while its response body is read.
///
/// The lease only matters when the server holding it dies: its key is then refused (409) for
/// up to a lease before a retry may run. A minute frees it soon after a crash, and renewal
/// every 20 s keeps a live handler's claim however long it runs, through store or runtime
/// stalls of up to 40 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The default [`max_request_bytes`](crate::IdempotencyLayerBuilder::max_request_bytes): 1 MiB.
///
/// The layer holds a keyed request's body in memory to fingerprint it, so the cap bounds the
/// memory of every keyed request in flight. The commands idempotency keys protect (payments,
/// orders) are small JSON documents; uploads belong under another route or method.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The default [`max_response_bytes`](crate::IdempotencyLayerBuilder::max_response_bytes):
/// 1 MiB.
///
/// A kept response stays in the store for the TTL, so the cap bounds each record. It keeps the
/// responses of the commands this layer is for (small JSON documents), and the default
/// [`MemoryStore`](crate::MemoryStore) (256 MiB) holds about 250 records of the largest.
/// A larger response still reaches its client; its replays get 409, never a second execution.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The default time the layer reads a response body after the handler answered: 60 seconds.
///
/// The layer holds the response back until it has read the body (to store it), and once the
/// handler has answered it finishes that read even for a client that went away; a body that
/// never ends would otherwise hold its key, and a background task, forever. A minute is far
/// beyond what a buffered body of at most `max_response_bytes` takes, and about as long as
/// clients wait for a response's head.
pub const DEFAULT_RESPONSE_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a duplicate of a request still in flight gets.
///
/// The default is `Reject` with a 1 s `Retry-After`: the IETF draft's answer, it holds nothing
/// on the server for a duplicate, and most handlers have finished by the time the client comes
/// back. `Wait` holds a connection and a task per waiting duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Concurrency {
    /// 409 with this `Retry-After` (the IETF draft's answer; the default, 1 s).
    Reject {
        /// The `Retry-After` of the 409.
        retry_after: Duration,
    },
    /// Wait up to `max` for the first request to finish and replay its response (or execute,
    /// if it released the key); 409 after that. Waiters on the same server are woken when the
    /// owner finishes; across servers they poll the store with backoff (25 ms doubling to 1 s).
    Wait {
        /// The longest wait.
        max: Duration,
    },
}

/// What happens when the store cannot be reached.
///
/// The default is `FailClosed` with a 1 s `Retry-After`: failing open runs every duplicate
/// that arrives while the store is down, the very double execution the layer exists to
/// prevent, while a 503 is a refusal clients already retry.
///
/// A store that answers with a record it cannot decode (corrupt, or written by a newer version
/// during a rolling deploy) is not an outage: the request may have run already, so under either
/// policy it is answered 409 (`not-replayable` problem) and not executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutagePolicy {
    /// Answer 503 with this `Retry-After` and do not execute (the default, 1 s).
    FailClosed {
        /// The `Retry-After` of the 503.
        retry_after: Duration,
    },
    /// Execute without deduplication (logged at WARN and counted as `store_error`).
    FailOpen,
}

pub(crate) type PrincipalFn = dyn Fn(&Parts) -> Option<Scope> + Send + Sync;

/// The default [`credential_headers`](crate::IdempotencyLayerBuilder::credential_headers): the
/// ways HTTP identifies a caller — `Authorization`, `Proxy-Authorization` and `Cookie` — so that
/// without an app principal no response is replayed to another caller.
pub const DEFAULT_CREDENTIAL_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// Every setting of a layer, as its builder collects them and its services read them.
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) header: HeaderName,
    pub(crate) methods: Vec<Method>,
    pub(crate) require_key: bool,
    /// The app's principal; `None`: records are unscoped and bound to the credentials.
    pub(crate) principal: Option<Arc<PrincipalFn>>,
    pub(crate) require_principal: bool,
    /// `None`: records are bound to no credentials (`no_credential_headers`).
    pub(crate) credential_headers: Option<Vec<HeaderName>>,
    pub(crate) fingerprint_headers: Vec<HeaderName>,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
    pub(crate) response_body_timeout: Duration,
    pub(crate) lease: Duration,
    pub(crate) ttl: Duration,
    pub(crate) concurrency: Concurrency,
    pub(crate) outage: OutagePolicy,
    pub(crate) classifier: HttpClassifier,
    pub(crate) never_replay: Vec<HeaderName>,
}

impl Settings {
    /// The headers a request without a principal is bound to.
    pub(crate) fn credential_headers(&self) -> &[HeaderName] {
        self.credential_headers.as_deref().unwrap_or_default()
    }

    /// Without an app principal, whether the request carries a credential header: what
    /// identifies a caller then (for `require_principal`). With one, only it identifies.
    pub(crate) fn identified_by_credentials(&self, parts: &Parts) -> bool {
        self.principal.is_none()
            && self
                .credential_headers()
                .iter()
                .any(|name| parts.headers.contains_key(name))
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("header", &self.header)
            .field("methods", &self.methods)
            .field("require_key", &self.require_key)
            .field("principal", &self.principal.is_some())
            .field("require_principal", &self.require_principal)
            .field("credential_headers", &self.credential_headers)
            .field("fingerprint_headers", &self.fingerprint_headers)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("response_body_timeout", &self.response_body_timeout)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("concurrency", &self.concurrency)
            .field("outage", &self.outage)
            .field("never_replay", &self.never_replay)
            .finish_non_exhaustive()
    }
}

/// The validated settings and what `build` derives from them (the metric keys), shared by
/// a layer and its services.
///
/// It dereferences to its [`Settings`], so the request path reads `config.ttl`.
pub(crate) struct Config {
    settings: Settings,
    pub(crate) metrics: Keys,
}

impl Config {
    /// The configuration of validated `settings`.
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            metrics: Keys::new(&settings.name),
            settings,
        }
    }
}

impl Deref for Config {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// Everything a layer's services share: configuration, store, local waiters.
pub(crate) struct Shared<St> {
    pub(crate) config: Config,
    pub(crate) store: St,
    pub(crate) waiters: Waiters,
}

impl<St> fmt::Debug for Shared<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.config.settings, f)
    }
}
