//! Keyed breakers: one breaker per upstream authority, route or tenant, in a bounded map.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::Hash,
    marker::PhantomData,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, header::HOST, uri::Authority};
use tower_fault::{BoxError, Classify, HttpClassifier};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    Breaker, BreakerBuilder, State,
    breaker::Guarded,
    clock::{Timebase, nanos},
    error::ConfigError,
    future::{Admission, ResponseFuture},
    guard::FleetGuard,
    server::KeyedServerBreakerLayer,
    telemetry::{self, Series},
};

/// The default of [`KeyedBreakerBuilder::max_metric_keys`]: enough for every upstream host of a
/// typical client to have its own series, while a layer keyed by untrusted input (a server's
/// `Host` header, a tenant id) stays near 1 400 series (~14 per key: the state gauge, five call
/// counters and the transitions) and a few hundred KiB in the recorder.
pub const DEFAULT_MAX_METRIC_KEYS: usize = 100;

/// The largest [`KeyedBreakerBuilder::max_metric_keys`]: 10 000 keys are ~140 000 series, ~25 MiB
/// in a recorder, beyond what a Prometheus server should scrape from one layer.
pub const MAX_METRIC_KEYS: usize = 10_000;

/// The key part of the `name` label the keyed breakers past
/// [`max_metric_keys`](KeyedBreakerBuilder::max_metric_keys) share: `"{template name}/other"`.
pub const OTHER_KEYS: &str = "other";

/// Extracts the key of the breaker a request goes through.
pub trait MakeKey<Req>: Clone + Send + Sync + 'static {
    /// The key (its `Display` form names the key's breaker: `"{name}/{key}"`).
    type Key: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static;

    /// The key of `req`; `None` lets the request through unguarded.
    fn make_key(&self, req: &Req) -> Option<Self::Key>;
}

/// The default key: the request's authority (from its URI, else its `Host` header), without
/// any `user:password@` part — the key names the breaker, its metrics and its logs, which must
/// not carry credentials (and one upstream is one breaker whoever logs in to it).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByAuthority;

impl<B> MakeKey<Request<B>> for ByAuthority {
    type Key = Authority;

    fn make_key(&self, req: &Request<B>) -> Option<Authority> {
        let authority = req.uri().authority().cloned().or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        })?;
        match authority.as_str().rsplit_once('@') {
            // The host[:port] of a valid authority is a valid authority.
            Some((_, host)) => Authority::try_from(host).ok(),
            None => Some(authority),
        }
    }
}

/// A key made by a closure; see [`KeyedBreakerBuilder::key_fn`].
pub struct KeyFn<F, K> {
    f: F,
    _key: PhantomData<fn() -> K>,
}

impl<F: Clone, K> Clone for KeyFn<F, K> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _key: PhantomData,
        }
    }
}

impl<F, K> fmt::Debug for KeyFn<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn").finish_non_exhaustive()
    }
}

impl<Req, K, F> MakeKey<Req> for KeyFn<F, K>
where
    F: Fn(&Req) -> Option<K> + Clone + Send + Sync + 'static,
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    type Key = K;

    fn make_key(&self, req: &Req) -> Option<K> {
        (self.f)(req)
    }
}

struct Entry<C> {
    shared: Arc<Guarded<C>>,
    last_used: AtomicU64,
}

/// The bounded map of breakers shared by a keyed layer's services.
pub(crate) struct Registry<K, C> {
    template: BreakerBuilder,
    classifier: C,
    map: RwLock<HashMap<K, Entry<C>>>,
    max_keys: usize,
    /// The idle timeout in nanoseconds (converted once: the read path compares against it).
    idle_nanos: u64,
    guard: Option<Arc<FleetGuard>>,
    max_metric_keys: usize,
    /// The keys that have their own metric series: the first `max_metric_keys` distinct keys
    /// seen, for the layer's life (a recorder keeps a series once it exists, so handing a freed
    /// slot to a new key would grow it all the same). Locked only when a breaker is created.
    metric_keys: Mutex<HashSet<K>>,
    /// The template's clock: idle times are nanoseconds since its start.
    start: Timebase,
    last_sweep: AtomicU64,
}

impl<K, C> fmt::Debug for Registry<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.template.name_ref())
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &Duration::from_nanos(self.idle_nanos))
            .finish_non_exhaustive()
    }
}

impl<K, C> Registry<K, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    fn now(&self) -> u64 {
        self.start.now_nanos()
    }

    /// The key's breaker, created on first use.
    ///
    /// Per call this costs a shared read lock, one hash lookup and one `Arc` clone (the future
    /// keeps the breaker alive even if the key is evicted meanwhile). The read lock is
    /// uncontended except while a new key is inserted or a sweep runs, both rare; a lock-free
    /// map would add a dependency for a path that already hashes a key.
    pub(crate) fn get(&self, key: &K) -> Arc<Guarded<C>> {
        let now = self.now();
        let found = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|entry| {
                entry.last_used.store(now, Relaxed);
                Arc::clone(&entry.shared)
            });
        if let Some(shared) = found {
            // Also without new keys, idle breakers are swept once per idle timeout: an open one
            // of a key nobody calls would otherwise keep its `max_open_fraction` slot forever.
            if self.sweep_due(now) {
                let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
                if self.sweep_due(now) {
                    self.evict(&mut map, now);
                }
            }
            return shared;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get(key) {
            entry.last_used.store(now, Relaxed);
            return Arc::clone(&entry.shared);
        }
        if map.len() >= self.max_keys || self.sweep_due(now) {
            self.evict(&mut map, now);
        }
        let mut builder = self
            .template
            .clone()
            .name(format!("{}/{key}", self.template.name_ref()));
        builder.guard.clone_from(&self.guard);
        if !self.own_series(key) {
            builder.series = Series::Folded(format!("{}/{OTHER_KEYS}", self.template.name_ref()));
        }
        let breaker = builder
            .build()
            .expect("the template was validated by KeyedBreakerBuilder::build");
        let shared = Arc::new(Guarded {
            breaker,
            classifier: self.classifier.clone(),
        });
        map.insert(
            key.clone(),
            Entry {
                shared: Arc::clone(&shared),
                last_used: AtomicU64::new(now),
            },
        );
        if let Some(guard) = &self.guard {
            guard.set_keys(map.len());
        }
        shared
    }

    /// Whether `key`'s breaker reports to series of its own: the first `max_metric_keys`
    /// distinct keys do, whenever their breaker is created again; the others share one set.
    fn own_series(&self, key: &K) -> bool {
        if !telemetry::ENABLED {
            return true;
        }
        let mut keys = self
            .metric_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if keys.contains(key) {
            return true;
        }
        if keys.len() < self.max_metric_keys {
            keys.insert(key.clone());
            return true;
        }
        false
    }

    /// Whether the last sweep is older than the idle timeout.
    fn sweep_due(&self, now: u64) -> bool {
        now.saturating_sub(self.last_sweep.load(Relaxed)) >= self.idle_nanos
    }

    /// Drops idle breakers that are closed or whose open period is over; when still at
    /// capacity, the least recently used ones (closed first) down to 90% of `max_keys`.
    fn evict(&self, map: &mut HashMap<K, Entry<C>>, now: u64) {
        self.last_sweep.store(now, Relaxed);
        let idle = self.idle_nanos;
        let closed = |entry: &Entry<C>| entry.shared.breaker.state() == State::Closed;
        let droppable =
            |entry: &Entry<C>| closed(entry) || entry.shared.breaker.inner.open_period_over();
        map.retain(|_, entry| {
            !(now.saturating_sub(entry.last_used.load(Relaxed)) >= idle && droppable(entry))
        });
        if map.len() >= self.max_keys {
            let target = self.max_keys - (self.max_keys / 10).max(1);
            let mut order: Vec<(bool, u64, K)> = map
                .iter()
                .map(|(key, entry)| (!closed(entry), entry.last_used.load(Relaxed), key.clone()))
                .collect();
            order.sort_unstable_by_key(|(open, used, _)| (*open, *used));
            for (_, _, key) in order.into_iter().take(map.len() - target) {
                map.remove(&key);
            }
        }
        if let Some(guard) = &self.guard {
            guard.set_keys(map.len());
        }
    }
}

/// Builds a [`KeyedBreakerLayer`]; see [`KeyedBreakerLayer::builder`].
#[derive(Debug, Clone)]
pub struct KeyedBreakerBuilder<M = ByAuthority, K = Authority, C = HttpClassifier> {
    template: BreakerBuilder,
    make_key: M,
    classifier: C,
    max_keys: usize,
    idle_timeout: Duration,
    max_open_fraction: Option<f64>,
    max_metric_keys: usize,
    _key: PhantomData<fn() -> K>,
}

impl<M, K, C> KeyedBreakerBuilder<M, K, C> {
    /// How many keys get metric series of their own (default [`DEFAULT_MAX_METRIC_KEYS`], at
    /// most [`MAX_METRIC_KEYS`]; 0 puts every key in the shared series).
    ///
    /// The first `max` distinct keys the layer sees report as `name="{template}/{key}"` for the
    /// layer's life, also when their breaker is evicted and made again. The breakers of every
    /// later key report their calls and transitions together as `name="{template}/other"`
    /// ([`OTHER_KEYS`]), without a `breaker_state` gauge. A metrics recorder keeps every series
    /// it was ever given, so without this bound each new key (a `Host` header, a tenant id)
    /// would add ~14 series for good. When particular keys must have their own series, map the
    /// keys onto a known set in the key function.
    #[must_use]
    pub fn max_metric_keys(mut self, max: usize) -> Self {
        self.max_metric_keys = max;
        self
    }

    /// The most breakers kept at once (default 1024). When full, idle closed breakers go
    /// first, then the least recently used (closed ones before open ones).
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// A breaker unused this long is dropped (default 10 minutes) if it is closed, or open with
    /// its open period over (it would go half-open on its next call); idle breakers are swept
    /// once per idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Never let more than this fraction of the keys be open (or half-open) at once; a trip
    /// beyond it is refused and the breaker stays closed. At least one breaker may always open.
    #[must_use]
    pub fn max_open_fraction(mut self, fraction: f64) -> Self {
        self.max_open_fraction = Some(fraction);
        self
    }

    /// No open-fraction guard (the default): every key's breaker may open.
    #[must_use]
    pub fn no_max_open_fraction(mut self) -> Self {
        self.max_open_fraction = None;
        self
    }

    /// Uses another classifier.
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> KeyedBreakerBuilder<M, K, C2> {
        KeyedBreakerBuilder {
            template: self.template,
            make_key: self.make_key,
            classifier,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            max_open_fraction: self.max_open_fraction,
            max_metric_keys: self.max_metric_keys,
            _key: PhantomData,
        }
    }

    /// Keys requests with a closure (route, tenant…); `None` lets a request through unguarded.
    ///
    /// ```
    /// use tower_breaker::{Breaker, keyed::KeyedBreakerLayer};
    ///
    /// let layer = KeyedBreakerLayer::builder(Breaker::builder().name("routes"))
    ///     .key_fn(|req: &http::Request<()>| Some(req.uri().path().to_owned()))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn key_fn<Req, K2, F>(self, f: F) -> KeyedBreakerBuilder<KeyFn<F, K2>, K2, C>
    where
        F: Fn(&Req) -> Option<K2> + Clone + Send + Sync + 'static,
    {
        KeyedBreakerBuilder {
            template: self.template,
            make_key: KeyFn {
                f,
                _key: PhantomData,
            },
            classifier: self.classifier,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            max_open_fraction: self.max_open_fraction,
            max_metric_keys: self.max_metric_keys,
            _key: PhantomData,
        }
    }

    /// Validates the template and the map settings.
    ///
    /// # Errors
    ///
    /// The template's [`ConfigError`], a zero `max_keys` or `idle_timeout`, a
    /// `max_open_fraction` outside `(0, 1]`, or a `max_metric_keys` above [`MAX_METRIC_KEYS`].
    pub fn build(self) -> Result<KeyedBreakerLayer<M, K, C>, ConfigError> {
        self.template.check()?;
        if self.max_keys == 0 {
            return Err(crate::error::config_error("max_keys", "must be at least 1"));
        }
        if self.idle_timeout.is_zero() {
            return Err(crate::error::config_error(
                "idle_timeout",
                "must be greater than zero",
            ));
        }
        if let Some(f) = self.max_open_fraction
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(crate::error::config_error(
                "max_open_fraction",
                format!("must be between 0 and 1 (exclusive of 0), got {f}"),
            ));
        }
        if self.max_metric_keys > MAX_METRIC_KEYS {
            return Err(crate::error::config_error(
                "max_metric_keys",
                format!(
                    "must be at most {MAX_METRIC_KEYS} (each key adds ~14 series a recorder keeps for good), got {}",
                    self.max_metric_keys
                ),
            ));
        }
        crate::metrics::describe();
        let start = Timebase::start(self.template.clock_ref());
        Ok(KeyedBreakerLayer {
            make_key: self.make_key,
            registry: Arc::new(Registry {
                template: self.template,
                classifier: self.classifier,
                map: RwLock::new(HashMap::new()),
                max_keys: self.max_keys,
                idle_nanos: nanos(self.idle_timeout),
                guard: self.max_open_fraction.map(|f| Arc::new(FleetGuard::new(f))),
                max_metric_keys: self.max_metric_keys,
                metric_keys: Mutex::new(HashSet::new()),
                start,
                last_sweep: AtomicU64::new(0),
            }),
        })
    }
}

/// One breaker per key (by default the request's authority), created on first use from a
/// template [`BreakerBuilder`], in a bounded map that evicts idle breakers (closed ones, and
/// open ones whose open period is over).
///
/// Each key's breaker is named `"{template name}/{key}"` (its logs, events and — for the first
/// [`max_metric_keys`](KeyedBreakerBuilder::max_metric_keys) keys — its metrics' `name` label;
/// later keys share the series `"{template name}/other"`, so a recorder, which keeps every
/// series it was given, stays bounded when keys come from untrusted input such as a server's
/// `Host` header). At most `max_keys` breakers live at once; an evicted breaker's
/// `breaker_state` keeps its last value.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use tower::{Service, ServiceExt, service_fn};
/// use tower_breaker::{Breaker, State, keyed::KeyedBreakerLayer};
/// use tower_fault::BoxError;
/// use tower_layer::Layer;
///
/// let layer = KeyedBreakerLayer::builder(Breaker::builder().name("hosts").consecutive_failures(1))
///     .max_keys(100)
///     .max_open_fraction(0.5)
///     .build()
///     .unwrap();
/// let mut svc = layer.layer(service_fn(|req: http::Request<()>| async move {
///     let status = if req.uri().host() == Some("down.test") { 503 } else { 200 };
///     Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
/// }));
/// for uri in ["http://down.test/", "http://up.test/"] {
///     let _ = svc.ready().await.unwrap().call(http::Request::get(uri).body(()).unwrap()).await;
/// }
/// let down = layer.breaker(&"down.test".parse().unwrap()).unwrap();
/// assert_eq!(down.state(), State::Open);
/// assert_eq!(layer.breaker(&"up.test".parse().unwrap()).unwrap().state(), State::Closed);
/// # }
/// ```
pub struct KeyedBreakerLayer<M = ByAuthority, K = Authority, C = HttpClassifier> {
    make_key: M,
    registry: Arc<Registry<K, C>>,
}

impl<M, K, C> KeyedBreakerLayer<M, K, C> {
    /// The same keyed breakers in server mode: a request whose key's breaker rejects it is
    /// answered with `503 Service Unavailable`, `Retry-After` and a problem+json body, exactly
    /// as [`BreakerLayer::server_mode`](crate::BreakerLayer::server_mode) answers, and the inner
    /// service's error type is kept (so it drops into an axum `Router`). See
    /// [`KeyedServerBreakerLayer`].
    #[must_use]
    pub fn server_mode(self) -> KeyedServerBreakerLayer<M, K, C> {
        KeyedServerBreakerLayer::from_keyed(self)
    }
}

impl<M: Clone, K, C> Clone for KeyedBreakerLayer<M, K, C> {
    fn clone(&self) -> Self {
        Self {
            make_key: self.make_key.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<M, K, C> fmt::Debug for KeyedBreakerLayer<M, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerLayer")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl KeyedBreakerLayer {
    /// A builder keyed by authority, with `template` for each key's breaker.
    #[must_use]
    pub fn builder(template: BreakerBuilder) -> KeyedBreakerBuilder {
        KeyedBreakerBuilder {
            template,
            make_key: ByAuthority,
            classifier: HttpClassifier::default(),
            max_keys: 1024,
            idle_timeout: Duration::from_secs(600),
            max_open_fraction: None,
            max_metric_keys: DEFAULT_MAX_METRIC_KEYS,
            _key: PhantomData,
        }
    }
}

impl<M, K, C> KeyedBreakerLayer<M, K, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    /// The breaker of `key`, if it exists now.
    #[must_use]
    pub fn breaker(&self, key: &K) -> Option<Breaker> {
        let map = self
            .registry
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(key).map(|entry| entry.shared.breaker.clone())
    }

    /// How many breakers exist now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.registry
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no breaker exists yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many breakers are open or half-open.
    #[must_use]
    pub fn open_count(&self) -> usize {
        let map = self
            .registry
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.values()
            .filter(|entry| entry.shared.breaker.state().is_ejecting())
            .count()
    }

    /// Drops the breakers idle for longer than the idle timeout that are closed or open with
    /// their open period over, now (this also happens on a call once the last sweep is older
    /// than the idle timeout).
    pub fn evict_idle(&self) {
        let now = self.registry.now();
        let mut map = self
            .registry
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.registry.evict(&mut map, now);
    }
}

impl<S, M: Clone, K, C> Layer<S> for KeyedBreakerLayer<M, K, C> {
    type Service = KeyedCircuitBreaker<S, M, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            make_key: self.make_key.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

/// A service guarded by one breaker per key; see [`KeyedBreakerLayer`].
pub struct KeyedCircuitBreaker<S, M = ByAuthority, K = Authority, C = HttpClassifier> {
    pub(crate) inner: S,
    pub(crate) make_key: M,
    pub(crate) registry: Arc<Registry<K, C>>,
}

impl<S: Clone, M: Clone, K, C> Clone for KeyedCircuitBreaker<S, M, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            make_key: self.make_key.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S: fmt::Debug, M, K, C> fmt::Debug for KeyedCircuitBreaker<S, M, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<S, M, K, C, Req> Service<Req> for KeyedCircuitBreaker<S, M, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    M: MakeKey<Req, Key = K>,
    K: Hash + Eq + Clone + fmt::Display,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.guard(req)
    }
}

impl<S, M, K, C> KeyedCircuitBreaker<S, M, K, C> {
    /// Calls the inner service through the breaker of the request's key (unguarded without a
    /// key), making the response future `A` (client or server mode: they differ only in how a
    /// rejection is answered).
    pub(crate) fn guard<Req, A>(&mut self, req: Req) -> A
    where
        S: Service<Req>,
        M: MakeKey<Req, Key = K>,
        K: Hash + Eq + Clone + fmt::Display,
        C: Clone,
        A: Admission<S::Future, C>,
    {
        let Some(key) = self.make_key.make_key(&req) else {
            return A::called(self.inner.call(req), None);
        };
        self.registry.get(&key).admit(&mut self.inner, req)
    }
}
