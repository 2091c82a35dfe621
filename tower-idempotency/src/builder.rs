//! [`IdempotencyLayerBuilder`]: every setting, its default, and the checks `build` makes.

use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderName, Method, header, request::Parts};
use tower_fault::{HttpClassifier, IDEMPOTENCY_KEY};

use crate::{
    config::{
        Concurrency, Config, DEFAULT_CREDENTIAL_HEADERS, DEFAULT_LEASE, DEFAULT_MAX_REQUEST_BYTES,
        DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_RESPONSE_BODY_TIMEOUT, DEFAULT_TTL, OutagePolicy,
        Settings, Shared,
    },
    error::{ConfigError, config_error},
    key::Scope,
    layer::IdempotencyLayer,
    store::{IdempotencyStore, MemoryStore},
    waiters::Waiters,
};

/// Builds an [`IdempotencyLayer`]; [`build`](Self::build) validates the
/// configuration. From [`IdempotencyLayer::builder`].
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
pub struct IdempotencyLayerBuilder<St = MemoryStore> {
    store: St,
    settings: Settings,
}

/// The shortest lease `build()` accepts: it is renewed every third of it, and a renewal is a
/// store round trip, so a shorter one would spend the handler's time renewing.
const MIN_LEASE: Duration = Duration::from_millis(10);

impl<St: fmt::Debug> fmt::Debug for IdempotencyLayerBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("store", &self.store)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Default for IdempotencyLayerBuilder<MemoryStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl IdempotencyLayerBuilder<MemoryStore> {
    /// The defaults, and why:
    ///
    /// * a [`MemoryStore`] with its default bounds: one server needs nothing else;
    /// * the `Idempotency-Key` header on POST and PATCH: the IETF draft's header and methods
    ///   (GET, PUT and DELETE are idempotent by their definition);
    /// * a request without a key passes through (counted as `missing_key`): clients that send
    ///   none keep working; [`require_key`](Self::require_key) refuses them;
    /// * no app principal, records bound to [`DEFAULT_CREDENTIAL_HEADERS`]: no response
    ///   crosses callers before anything is configured;
    /// * the fingerprint covers `Content-Type` besides method, target and body: the same bytes
    ///   sent as another type are another request;
    /// * [`DEFAULT_MAX_REQUEST_BYTES`], [`DEFAULT_MAX_RESPONSE_BYTES`],
    ///   [`DEFAULT_RESPONSE_BODY_TIMEOUT`], [`DEFAULT_LEASE`], [`DEFAULT_TTL`],
    ///   [`Concurrency`] (409 with 1 s) and [`OutagePolicy`] (fail closed, 1 s): each says why;
    /// * [`HttpClassifier::default`], the suite's one table of what is transient.
    pub fn new() -> Self {
        let settings = Settings {
            name: "default".into(),
            header: IDEMPOTENCY_KEY,
            methods: vec![Method::POST, Method::PATCH],
            require_key: false,
            principal: None,
            require_principal: false,
            credential_headers: Some(DEFAULT_CREDENTIAL_HEADERS.to_vec()),
            fingerprint_headers: vec![header::CONTENT_TYPE],
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
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
        };
        Self {
            store: MemoryStore::default(),
            settings,
        }
    }
}

impl<St> IdempotencyLayerBuilder<St> {
    /// Uses another store (for instance a shared `RedisStore`, feature `redis`).
    pub fn store<T: IdempotencyStore>(self, store: T) -> IdempotencyLayerBuilder<T> {
        IdempotencyLayerBuilder {
            store,
            settings: self.settings,
        }
    }

    /// The instance name (default `"default"`): the `name` label of its metrics and a field of
    /// its log lines. An empty name is a `build()` error.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// The request header carrying the key (default `Idempotency-Key`).
    pub fn header(mut self, name: HeaderName) -> Self {
        self.settings.header = name;
        self
    }

    /// The methods deduplicated (default POST and PATCH); others pass through.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.settings.methods = methods.into_iter().collect();
        self
    }

    /// Answers 400 to a request without a key. By default such requests pass through without
    /// deduplication (counted as `missing_key`).
    pub fn require_key(mut self) -> Self {
        self.settings.require_key = true;
        self
    }

    /// The app's own principal, which scopes records: they are keyed by (principal, key), so two
    /// principals never see each other's records nor share a key, and a principal's requests
    /// match whatever credentials they carry (a refreshed token, a changed cookie jar). Take it
    /// from what your authentication layer found — a user id it put in the request's
    /// extensions — and put this layer inside that one. `None` means no principal: the request
    /// is unscoped and bound to its credentials (see
    /// [`credential_headers`](Self::credential_headers)), or gets 401 with
    /// [`require_principal`](Self::require_principal).
    ///
    /// The [crate documentation](crate#your-own-principal) shows one taken from an axum
    /// authentication middleware.
    ///
    /// [`authorization_principal`](crate::authorization_principal) scopes by the raw
    /// `Authorization` header, for APIs where it is a stable per-caller credential.
    pub fn principal<F>(mut self, extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<Scope> + Send + Sync + 'static,
    {
        self.settings.principal = Some(Arc::new(extract));
        self
    }

    /// Answers 401 to a keyed request without a principal: without
    /// [`principal`](Self::principal), one that carries none of the
    /// [`credential_headers`](Self::credential_headers); with it, one it finds no principal for.
    pub fn require_principal(mut self) -> Self {
        self.settings.require_principal = true;
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
    /// [`principal`](Self::principal) gives it its replay.
    ///
    /// An empty list is a `build()` error: turning the binding off is
    /// [`no_credential_headers`](Self::no_credential_headers).
    pub fn credential_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings.credential_headers = Some(names.into_iter().collect());
        self
    }

    /// Binds records to no credentials: without an app principal, a duplicate is replayed the
    /// recorded response whoever sends it. Only for APIs whose callers are not told apart
    /// (no authentication, or one shared credential); anyone who learns a key can read its
    /// response.
    pub fn no_credential_headers(mut self) -> Self {
        self.settings.credential_headers = None;
        self
    }

    /// The request headers that are part of the fingerprint besides method, path, query and
    /// body (default `Content-Type`).
    pub fn fingerprint_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings.fingerprint_headers = names.into_iter().collect();
        self
    }

    /// The largest request body of a keyed request (default 1 MiB); larger ones get 413 and the
    /// handler does not run.
    pub fn max_request_bytes(mut self, limit: usize) -> Self {
        self.settings.max_request_bytes = limit;
        self
    }

    /// The largest response body kept for replay (default 1 MiB). A larger response streams
    /// to the client untouched and leaves a record that answers replays with the
    /// [`NOT_REPLAYABLE`](crate::problems::NOT_REPLAYABLE) problem: never a second execution.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.settings.max_response_bytes = limit;
        self
    }

    /// How long the layer reads a response body once the handler has answered (default
    /// [`DEFAULT_RESPONSE_BODY_TIMEOUT`], 60 s). A body that has not ended by then streams on
    /// to the client and leaves a record whose replays get the
    /// [`NOT_REPLAYABLE`](crate::problems::NOT_REPLAYABLE) problem: never a second execution.
    pub fn response_body_timeout(mut self, timeout: Duration) -> Self {
        self.settings.response_body_timeout = timeout;
        self
    }

    /// The lease of a claim (default 60 s), renewed every third of it while the handler runs.
    /// If the process dies, the next request with the key executes once the lease expires.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// How long completed records are kept (default 24 h).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.settings.ttl = ttl;
        self
    }

    /// What in-flight duplicates get (default [`Concurrency::Reject`] with 1 s).
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.settings.concurrency = concurrency;
        self
    }

    /// What happens when the store is unreachable (default [`OutagePolicy::FailClosed`], 1 s).
    pub fn on_store_outage(mut self, policy: OutagePolicy) -> Self {
        self.settings.outage = policy;
        self
    }

    /// The classifier deciding what is kept: responses it calls `Transient` (5xx, 408, 429 by
    /// default) release the key so a retry executes again; all others are stored.
    pub fn classifier(mut self, classifier: HttpClassifier) -> Self {
        self.settings.classifier = classifier;
        self
    }

    /// A response header never replayed, besides `Set-Cookie`, authentication and hop-by-hop
    /// headers (which never are).
    pub fn never_replay(mut self, name: HeaderName) -> Self {
        self.settings.never_replay.push(name);
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
        self.validate()?;
        Ok(IdempotencyLayer::from_shared(Shared {
            config: Config::new(self.settings),
            store: self.store,
            waiters: Waiters::new(),
        }))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        let must = [
            (!s.name.is_empty(), "name must not be empty"),
            (
                !s.methods.is_empty(),
                "methods must name at least one method",
            ),
            (!s.ttl.is_zero(), "ttl must be greater than zero"),
            (
                s.max_request_bytes > 0,
                "max_request_bytes must be greater than zero",
            ),
            (
                s.max_response_bytes > 0,
                "max_response_bytes must be greater than zero",
            ),
            (
                !s.response_body_timeout.is_zero(),
                "response_body_timeout must be greater than zero",
            ),
            (
                !matches!(s.concurrency, Concurrency::Wait { max } if max.is_zero()),
                "Concurrency::Wait needs a max greater than zero (use Concurrency::Reject to answer 409 at once)",
            ),
            (
                s.credential_headers
                    .as_ref()
                    .is_none_or(|names| !names.is_empty()),
                "credential_headers must name at least one header (no_credential_headers() binds records to no credentials)",
            ),
            (
                s.credential_headers
                    .as_ref()
                    .is_none_or(|names| !names.contains(&s.header)),
                "the idempotency key header cannot be a credential header",
            ),
            (
                !(s.require_principal && s.principal.is_none() && s.credential_headers.is_none()),
                "require_principal() needs principal() or credential headers to identify a caller (no_credential_headers() leaves none)",
            ),
            (
                !s.fingerprint_headers.contains(&s.header),
                "the idempotency key header cannot be part of the fingerprint",
            ),
        ];
        if let Some((_, message)) = must.into_iter().find(|(holds, _)| !holds) {
            return Err(config_error(message));
        }
        if s.lease < MIN_LEASE {
            return Err(config_error(format!(
                "lease must be at least {MIN_LEASE:?} (got {:?}); it is renewed every third of it",
                s.lease
            )));
        }
        self.check_retry_afters()
    }

    /// A `Retry-After` the layer answers with must fit the header (see
    /// [`tower_fault::retry_after::CAP`]).
    fn check_retry_afters(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        let retry_afters = [
            match s.concurrency {
                Concurrency::Reject { retry_after } => Some(("Concurrency::Reject", retry_after)),
                Concurrency::Wait { .. } => None,
            },
            match s.outage {
                OutagePolicy::FailClosed { retry_after } => {
                    Some(("OutagePolicy::FailClosed", retry_after))
                }
                OutagePolicy::FailOpen => None,
            },
        ];
        let cap = tower_fault::retry_after::CAP;
        match retry_afters
            .into_iter()
            .flatten()
            .find(|(_, retry_after)| *retry_after > cap)
        {
            Some((what, retry_after)) => Err(config_error(format!(
                "{what} retry_after must be at most {cap:?} (got {retry_after:?})"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonsense_is_refused_with_a_clear_message() {
        let day_and_more = Duration::from_secs(24 * 3600 + 1);
        let cases: Vec<(IdempotencyLayerBuilder, &str)> = vec![
            (IdempotencyLayerBuilder::new().name(""), "name"),
            (IdempotencyLayerBuilder::new().methods([]), "methods"),
            (IdempotencyLayerBuilder::new().ttl(Duration::ZERO), "ttl"),
            (
                IdempotencyLayerBuilder::new().lease(Duration::from_millis(1)),
                "lease",
            ),
            (
                IdempotencyLayerBuilder::new().max_request_bytes(0),
                "max_request_bytes",
            ),
            (
                IdempotencyLayerBuilder::new().max_response_bytes(0),
                "max_response_bytes",
            ),
            (
                IdempotencyLayerBuilder::new().response_body_timeout(Duration::ZERO),
                "response_body_timeout",
            ),
            (
                IdempotencyLayerBuilder::new().concurrency(Concurrency::Wait {
                    max: Duration::ZERO,
                }),
                "Wait",
            ),
            (
                IdempotencyLayerBuilder::new().fingerprint_headers([IDEMPOTENCY_KEY]),
                "fingerprint",
            ),
            (
                IdempotencyLayerBuilder::new().credential_headers([IDEMPOTENCY_KEY]),
                "credential",
            ),
            (
                IdempotencyLayerBuilder::new().credential_headers([]),
                "no_credential_headers()",
            ),
            (
                IdempotencyLayerBuilder::new()
                    .no_credential_headers()
                    .require_principal(),
                "require_principal",
            ),
            (
                IdempotencyLayerBuilder::new().concurrency(Concurrency::Reject {
                    retry_after: day_and_more,
                }),
                "Concurrency::Reject retry_after",
            ),
            (
                IdempotencyLayerBuilder::new().on_store_outage(OutagePolicy::FailClosed {
                    retry_after: day_and_more,
                }),
                "OutagePolicy::FailClosed retry_after",
            ),
        ];
        for (builder, word) in cases {
            let err = builder.build().unwrap_err();
            assert!(err.message().contains(word), "{err}");
        }
    }

    #[test]
    fn sensible_settings_build() {
        let forever = Duration::MAX;
        let builders = [
            IdempotencyLayerBuilder::new(),
            IdempotencyLayerBuilder::new().no_credential_headers(),
            IdempotencyLayerBuilder::new()
                .no_credential_headers()
                .principal(crate::authorization_principal)
                .require_principal(),
            IdempotencyLayerBuilder::new()
                .ttl(forever)
                .lease(forever)
                .response_body_timeout(forever)
                .concurrency(Concurrency::Wait { max: forever }),
        ];
        for builder in builders {
            builder.build().unwrap();
        }
    }
}
