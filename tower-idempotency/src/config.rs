//! The layer's configuration and its validating builder.

use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderName, Method, header, request::Parts};
use tower_fault::{HttpClassifier, IDEMPOTENCY_KEY};

use crate::{
    error::ConfigError,
    key::Scope,
    layer::IdempotencyLayer,
    store::{IdempotencyStore, MemoryStore},
    telemetry::Keys,
    waiters::Waiters,
};

/// The default retention of completed records: 24 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The default lease of a claim: 60 seconds, renewed every third of it while the handler runs.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// The default limit of request and response bodies: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// The default time the layer reads a response body after the handler answered: 60 seconds.
///
/// The layer holds the response back until it has read the body (to store it), and once the
/// handler has answered it finishes that read even for a client that went away; a body that
/// never ends would otherwise hold its key, and a background task, forever. A minute is far
/// beyond what a buffered body of at most `max_response_bytes` takes, and about as long as
/// clients wait for a response's head.
pub const DEFAULT_RESPONSE_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a duplicate of a request still in flight gets.
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

type PrincipalFn = dyn Fn(&Parts) -> Option<Scope> + Send + Sync;

/// The default [`credential_headers`](Builder::credential_headers): the ways HTTP identifies a
/// caller — `Authorization`, `Proxy-Authorization` and `Cookie`.
pub const DEFAULT_CREDENTIAL_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// The validated configuration shared by a layer and its services.
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) metrics: Keys,
    pub(crate) header: HeaderName,
    pub(crate) methods: Vec<Method>,
    pub(crate) require_key: bool,
    /// The app's principal; `None`: records are unscoped and bound to the credentials.
    pub(crate) principal: Option<Arc<PrincipalFn>>,
    pub(crate) require_principal: bool,
    pub(crate) credential_headers: Vec<HeaderName>,
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

impl Config {
    /// Without an app principal, whether the request carries a credential header: what
    /// identifies a caller then (for `require_principal`). With one, only it identifies.
    pub(crate) fn identified_by_credentials(&self, parts: &Parts) -> bool {
        self.principal.is_none()
            && self
                .credential_headers
                .iter()
                .any(|name| parts.headers.contains_key(name))
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
        let c = &self.config;
        f.debug_struct("Idempotency")
            .field("name", &c.name)
            .field("header", &c.header)
            .field("methods", &c.methods)
            .field("require_key", &c.require_key)
            .field("require_principal", &c.require_principal)
            .field("max_request_bytes", &c.max_request_bytes)
            .field("max_response_bytes", &c.max_response_bytes)
            .field("response_body_timeout", &c.response_body_timeout)
            .field("lease", &c.lease)
            .field("ttl", &c.ttl)
            .field("concurrency", &c.concurrency)
            .field("outage", &c.outage)
            .finish_non_exhaustive()
    }
}

/// Builds an [`IdempotencyLayer`]; [`build`](Builder::build) validates the configuration.
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use tower_idempotency::{Concurrency, IdempotencyLayer, MemoryStore, OutagePolicy, Scope};
///
/// let layer = IdempotencyLayer::builder()
///     .name("payments")
///     .store(MemoryStore::new(50_000))
///     .methods([Method::POST])
///     .require_key()
///     // The caller is whoever the auth middleware in front of us put in the extensions.
///     .principal(|parts| parts.extensions.get::<String>().map(Scope::new))
///     .require_principal()
///     .ttl(Duration::from_secs(72 * 3600))
///     .concurrency(Concurrency::Wait { max: Duration::from_secs(5) })
///     .on_store_outage(OutagePolicy::FailClosed { retry_after: Duration::from_secs(2) })
///     .build()?;
/// # let _ = layer;
///
/// let err = IdempotencyLayer::builder().ttl(Duration::ZERO).build().unwrap_err();
/// assert!(err.to_string().contains("ttl"));
/// # Ok::<_, tower_idempotency::error::ConfigError>(())
/// ```
#[must_use]
pub struct Builder<St = MemoryStore> {
    store: St,
    name: String,
    header: HeaderName,
    methods: Vec<Method>,
    require_key: bool,
    principal: Option<Arc<PrincipalFn>>,
    require_principal: bool,
    credential_headers: Vec<HeaderName>,
    fingerprint_headers: Vec<HeaderName>,
    max_request_bytes: usize,
    max_response_bytes: usize,
    response_body_timeout: Duration,
    lease: Duration,
    ttl: Duration,
    concurrency: Concurrency,
    outage: OutagePolicy,
    classifier: HttpClassifier,
    never_replay: Vec<HeaderName>,
}

impl<St: fmt::Debug> fmt::Debug for Builder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("store", &self.store)
            .field("name", &self.name)
            .field("methods", &self.methods)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for Builder<MemoryStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder<MemoryStore> {
    /// The defaults: memory store, `Idempotency-Key`, POST and PATCH, optional key, no app
    /// principal (records bound to the `Authorization`, `Proxy-Authorization` and `Cookie`
    /// credentials), fingerprint over `Content-Type`, 1 MiB bodies read for at most 60 s, 60 s
    /// lease, 24 h TTL, 409 on in-flight duplicates, fail closed.
    pub fn new() -> Self {
        Self {
            store: MemoryStore::default(),
            name: "default".to_owned(),
            header: IDEMPOTENCY_KEY,
            methods: vec![Method::POST, Method::PATCH],
            require_key: false,
            principal: None,
            require_principal: false,
            credential_headers: DEFAULT_CREDENTIAL_HEADERS.to_vec(),
            fingerprint_headers: vec![header::CONTENT_TYPE],
            max_request_bytes: DEFAULT_MAX_BYTES,
            max_response_bytes: DEFAULT_MAX_BYTES,
            response_body_timeout: DEFAULT_RESPONSE_BODY_TIMEOUT,
            lease: DEFAULT_LEASE,
            ttl: DEFAULT_TTL,
            concurrency: Concurrency::Reject {
                retry_after: Duration::from_secs(1),
            },
            outage: OutagePolicy::FailClosed {
                retry_after: Duration::from_secs(1),
            },
            classifier: HttpClassifier::default(),
            never_replay: Vec::new(),
        }
    }
}

impl<St> Builder<St> {
    /// Uses another store (for instance a shared [`RedisStore`](crate::RedisStore)).
    pub fn store<T: IdempotencyStore>(self, store: T) -> Builder<T> {
        Builder {
            store,
            name: self.name,
            header: self.header,
            methods: self.methods,
            require_key: self.require_key,
            principal: self.principal,
            require_principal: self.require_principal,
            credential_headers: self.credential_headers,
            fingerprint_headers: self.fingerprint_headers,
            max_request_bytes: self.max_request_bytes,
            max_response_bytes: self.max_response_bytes,
            response_body_timeout: self.response_body_timeout,
            lease: self.lease,
            ttl: self.ttl,
            concurrency: self.concurrency,
            outage: self.outage,
            classifier: self.classifier,
            never_replay: self.never_replay,
        }
    }

    /// The instance name, the `name` label of the metrics (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The request header carrying the key (default `Idempotency-Key`).
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// The methods deduplicated (default POST and PATCH); others pass through.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Answers 400 to a request without a key. By default such requests pass through without
    /// deduplication (counted as `missing_key`).
    pub fn require_key(mut self) -> Self {
        self.require_key = true;
        self
    }

    /// The app's own principal, which scopes records: they are keyed by (principal, key), so two
    /// principals never see each other's records nor share a key, and a principal's requests
    /// match whatever credentials they carry (a refreshed token, a changed cookie jar). Take it
    /// from what your authentication layer found — a user id it put in the request's
    /// extensions — and put this layer inside that one. `None` means no principal: the request
    /// is unscoped and bound to its credentials (see
    /// [`credential_headers`](Builder::credential_headers)), or gets 401 with
    /// [`require_principal`](Builder::require_principal).
    ///
    /// ```
    /// use axum::{Router, extract::Request, middleware::{self, Next}, response::Response, routing::post};
    /// use tower_idempotency::{IdempotencyLayer, Scope};
    ///
    /// /// The user the authentication middleware found.
    /// #[derive(Clone)]
    /// struct UserId(u64);
    ///
    /// async fn authenticate(mut req: Request, next: Next) -> Response {
    ///     // Look the session cookie up; here every request is user 42.
    ///     req.extensions_mut().insert(UserId(42));
    ///     next.run(req).await
    /// }
    ///
    /// let idempotency = IdempotencyLayer::builder()
    ///     .principal(|parts| {
    ///         let user = parts.extensions.get::<UserId>()?;
    ///         Some(Scope::new(user.0.to_be_bytes()))
    ///     })
    ///     .require_principal()
    ///     .build()?;
    /// let app: Router = Router::new()
    ///     .route("/orders", post(|| async { "created" }))
    ///     // Layers added later run first: authentication, then idempotency.
    ///     .layer(idempotency)
    ///     .layer(middleware::from_fn(authenticate));
    /// # let _ = app;
    /// # Ok::<_, tower_idempotency::error::ConfigError>(())
    /// ```
    ///
    /// [`authorization_principal`](crate::authorization_principal) scopes by the raw
    /// `Authorization` header, for APIs where it is a stable per-caller credential.
    pub fn principal<F>(mut self, extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<Scope> + Send + Sync + 'static,
    {
        self.principal = Some(Arc::new(extract));
        self
    }

    /// Answers 401 to a keyed request without a principal: without
    /// [`principal`](Builder::principal), one that carries none of the
    /// [`credential_headers`](Builder::credential_headers); with it, one it finds no principal
    /// for.
    pub fn require_principal(mut self) -> Self {
        self.require_principal = true;
        self
    }

    /// The request headers that identify a caller when there is no app principal (default
    /// [`DEFAULT_CREDENTIAL_HEADERS`]: `Authorization`, `Proxy-Authorization`, `Cookie`; add,
    /// say, `X-Api-Key` if your callers use it).
    ///
    /// A request without a principal is bound to these: they are part of its fingerprint, so a
    /// duplicate carrying other credentials is refused with 422
    /// ([`KEY_REUSED`](crate::problems::KEY_REUSED)) — never replayed another caller's
    /// response, and never run again. An honest retry whose credentials changed (a refreshed
    /// token, a cookie set meanwhile) is refused the same way; a principal from
    /// [`principal`](Builder::principal) gives it its replay.
    pub fn credential_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.credential_headers = names.into_iter().collect();
        self
    }

    /// The request headers that are part of the fingerprint besides method, path, query and
    /// body (default `Content-Type`).
    pub fn fingerprint_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.fingerprint_headers = names.into_iter().collect();
        self
    }

    /// The largest request body of a keyed request (default 1 MiB); larger ones get 413 and the
    /// handler does not run.
    pub fn max_request_bytes(mut self, limit: usize) -> Self {
        self.max_request_bytes = limit;
        self
    }

    /// The largest response body kept for replay (default 1 MiB). A larger response streams
    /// to the client untouched and leaves a record that answers replays with the
    /// [`NOT_REPLAYABLE`](crate::problems::NOT_REPLAYABLE) problem: never a second execution.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// How long the layer reads a response body once the handler has answered (default
    /// [`DEFAULT_RESPONSE_BODY_TIMEOUT`], 60 s). A body that has not ended by then streams on
    /// to the client and leaves a record whose replays get the
    /// [`NOT_REPLAYABLE`](crate::problems::NOT_REPLAYABLE) problem: never a second execution.
    pub fn response_body_timeout(mut self, timeout: Duration) -> Self {
        self.response_body_timeout = timeout;
        self
    }

    /// The lease of a claim (default 60 s), renewed every third of it while the handler runs.
    /// If the process dies, the next request with the key executes once the lease expires.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long completed records are kept (default 24 h).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// What in-flight duplicates get (default [`Concurrency::Reject`] with 1 s).
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// What happens when the store is unreachable (default [`OutagePolicy::FailClosed`], 1 s).
    pub fn on_store_outage(mut self, policy: OutagePolicy) -> Self {
        self.outage = policy;
        self
    }

    /// The classifier deciding what is kept: responses it calls `Transient` (5xx, 408, 429 by
    /// default) release the key so a retry executes again; all others are stored.
    pub fn classifier(mut self, classifier: HttpClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// A response header never replayed, besides `Set-Cookie`, authentication and hop-by-hop
    /// headers (which never are).
    pub fn never_replay(mut self, name: HeaderName) -> Self {
        self.never_replay.push(name);
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the nonsensical setting.
    pub fn build(self) -> Result<IdempotencyLayer<St>, ConfigError>
    where
        St: IdempotencyStore,
    {
        if self.name.is_empty() {
            return Err(crate::error::config_error("name must not be empty"));
        }
        if self.methods.is_empty() {
            return Err(crate::error::config_error(
                "methods must name at least one method",
            ));
        }
        if self.ttl.is_zero() {
            return Err(crate::error::config_error("ttl must be greater than zero"));
        }
        if self.lease < Duration::from_millis(10) {
            return Err(crate::error::config_error(format!(
                "lease must be at least 10ms (got {:?}); it is renewed every third of it",
                self.lease
            )));
        }
        if self.max_request_bytes == 0 {
            return Err(crate::error::config_error(
                "max_request_bytes must be greater than zero",
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(crate::error::config_error(
                "max_response_bytes must be greater than zero",
            ));
        }
        if self.response_body_timeout.is_zero() {
            return Err(crate::error::config_error(
                "response_body_timeout must be greater than zero",
            ));
        }
        let retry_afters = [
            match self.concurrency {
                Concurrency::Reject { retry_after } => Some(("Concurrency::Reject", retry_after)),
                Concurrency::Wait { .. } => None,
            },
            match self.outage {
                OutagePolicy::FailClosed { retry_after } => {
                    Some(("OutagePolicy::FailClosed", retry_after))
                }
                OutagePolicy::FailOpen => None,
            },
        ];
        for (what, retry_after) in retry_afters.into_iter().flatten() {
            if retry_after > tower_fault::retry_after::CAP {
                return Err(crate::error::config_error(format!(
                    "{what} retry_after must be at most {:?} (got {retry_after:?})",
                    tower_fault::retry_after::CAP
                )));
            }
        }
        if let Concurrency::Wait { max } = self.concurrency
            && max.is_zero()
        {
            return Err(crate::error::config_error(
                "Concurrency::Wait needs a max greater than zero (use Concurrency::Reject to answer 409 at once)",
            ));
        }
        if self.credential_headers.contains(&self.header) {
            return Err(crate::error::config_error(
                "the idempotency key header cannot be a credential header",
            ));
        }
        if self.fingerprint_headers.contains(&self.header) {
            return Err(crate::error::config_error(
                "the idempotency key header cannot be part of the fingerprint",
            ));
        }
        let name: Arc<str> = self.name.into();
        Ok(IdempotencyLayer::from_shared(Shared {
            config: Config {
                metrics: Keys::new(&name),
                name,
                header: self.header,
                methods: self.methods,
                require_key: self.require_key,
                principal: self.principal,
                require_principal: self.require_principal,
                credential_headers: self.credential_headers,
                fingerprint_headers: self.fingerprint_headers,
                max_request_bytes: self.max_request_bytes,
                max_response_bytes: self.max_response_bytes,
                response_body_timeout: self.response_body_timeout,
                lease: self.lease,
                ttl: self.ttl,
                concurrency: self.concurrency,
                outage: self.outage,
                classifier: self.classifier,
                never_replay: self.never_replay,
            },
            store: self.store,
            waiters: Waiters::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonsense_is_refused_with_a_clear_message() {
        let cases: Vec<(Builder, &str)> = vec![
            (Builder::new().name(""), "name"),
            (Builder::new().methods([]), "methods"),
            (Builder::new().ttl(Duration::ZERO), "ttl"),
            (Builder::new().lease(Duration::from_millis(1)), "lease"),
            (Builder::new().max_request_bytes(0), "max_request_bytes"),
            (Builder::new().max_response_bytes(0), "max_response_bytes"),
            (
                Builder::new().response_body_timeout(Duration::ZERO),
                "response_body_timeout",
            ),
            (
                Builder::new().concurrency(Concurrency::Wait {
                    max: Duration::ZERO,
                }),
                "Wait",
            ),
            (
                Builder::new().fingerprint_headers([IDEMPOTENCY_KEY]),
                "fingerprint",
            ),
            (
                Builder::new().credential_headers([IDEMPOTENCY_KEY]),
                "credential",
            ),
        ];
        for (builder, word) in cases {
            let err = builder.build().unwrap_err();
            assert!(err.message().contains(word), "{err}");
        }
        assert!(Builder::new().build().is_ok());
    }
}
