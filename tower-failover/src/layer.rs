//! [`FailoverLayer`]: failover as a tower `Layer` over one client that every endpoint shares.

use std::{fmt, sync::Arc};

use http::Uri;
use tokio::runtime::Handle;
use tower_fault::HttpClassifier;
use tower_layer::Layer;

use crate::{
    Failover,
    builder::FailoverBuilder,
    endpoint::{Checked, Endpoint},
    error::ConfigError,
    server::ServerMode,
    settings::{Settings, check_tiers},
};

/// An endpoint of a [`FailoverLayer`]: a name and a base URI. Its requests go through the client
/// the layer wraps, rewritten to this base URI (see [`Endpoint`] for the rewrite).
///
/// Made by [`FailoverLayerBuilder::tier`](FailoverBuilder::tier) from `(name, base URI)` pairs.
#[derive(Debug, Clone)]
pub struct Upstream(Endpoint<()>);

/// Builds a [`FailoverLayer`]: a [`FailoverBuilder`] whose tiers hold [`Upstream`]s (name and
/// base URI). Every setting is the [`FailoverBuilder`]'s.
pub type FailoverLayerBuilder<C = HttpClassifier> = FailoverBuilder<Upstream, C>;

impl<C> FailoverBuilder<Upstream, C> {
    /// Adds the next priority tier of `(name, base URI)` pairs: the first call declares the
    /// primaries, later calls standbys. An unparsable base URI is reported by `build()`.
    #[must_use]
    pub fn tier<N, U>(mut self, endpoints: impl IntoIterator<Item = (N, U)>) -> Self
    where
        N: Into<Arc<str>>,
        U: TryInto<Uri>,
        U::Error: fmt::Display,
    {
        self.tiers.push(
            endpoints
                .into_iter()
                .map(|(name, base)| Upstream(Endpoint::new(name, base, ())))
                .collect(),
        );
        self
    }

    /// Validates the configuration and returns the layer.
    ///
    /// With a probe configured it must be called from inside a tokio runtime, which the probe
    /// task of each set the layer starts is spawned on (unless [`layer`](Layer::layer) runs
    /// inside a runtime of its own: then there).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`], for the nonsense [`FailoverBuilder::build`] refuses.
    pub fn build(self) -> Result<FailoverLayer<C>, ConfigError> {
        self.settings.validate()?;
        let tiers = check_tiers(
            self.tiers
                .into_iter()
                .map(|tier| tier.into_iter().map(|Upstream(e)| e).collect())
                .collect(),
        )?;
        let runtime = self.settings.probe_runtime()?;
        Ok(FailoverLayer {
            inner: Arc::new(Inner {
                settings: self.settings,
                tiers,
                runtime,
            }),
        })
    }
}

/// Health-checked failover as a tower [`Layer`]: [`layer`](Layer::layer) over one client (a
/// hyper or reqwest client, any `Clone` service) gives a [`Failover`] whose endpoints all send
/// through clones of that client, each request rewritten to its endpoint's base URI.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_failover::FailoverLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_failover::BoxError> {
/// // One "client" for every endpoint: it echoes the URI it was sent to.
/// let client = service_fn(|req: Request<()>| async move {
///     Ok::<_, Infallible>(Response::new(req.uri().to_string()))
/// });
/// let failover = FailoverLayer::builder()
///     .name("orders")
///     .tier([("primary", "http://10.0.0.1:8080")])
///     .tier([("standby", "http://10.0.0.2:8080/v1")])
///     .build()?;
/// let svc = ServiceBuilder::new().layer(failover).service(client);
/// let handle = svc.handle(); // the set's endpoints, their health, events
///
/// let res = svc.clone().oneshot(Request::get("/orders").body(())?).await?;
/// assert_eq!(res.body(), "http://10.0.0.1:8080/orders");
///
/// // Take the primary out of rotation: traffic fails over to the standby.
/// let _drain = handle.remove("primary");
/// let res = svc.oneshot(Request::get("/orders").body(())?).await?;
/// assert_eq!(res.body(), "http://10.0.0.2:8080/v1/orders");
/// # Ok(()) }
/// ```
///
/// Each `layer` call starts one failover set — its endpoint table, their health, their metric
/// series and (with a probe) its probe task — shared by the returned service's clones and
/// reached through [`Failover::handle`]. A set holds the client its endpoints send through, so
/// two `layer` calls, over two clients, make two sets: to share one set, clone the service
/// rather than layering again. For different clients per endpoint, use [`Failover::builder`].
///
/// The set's [`handle`](Failover::handle) adds endpoints at runtime as [`Endpoint`]s with their
/// service: give each a clone of the client. There is no `Default`: a failover needs endpoints.
pub struct FailoverLayer<C = HttpClassifier> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    settings: Settings<C>,
    tiers: Vec<Vec<Checked<()>>>,
    /// Where probe tasks run when `layer` is called outside a runtime.
    runtime: Option<Handle>,
}

impl FailoverLayer {
    /// A builder; add at least one [`tier`](FailoverBuilder::tier).
    #[must_use]
    pub fn builder() -> FailoverLayerBuilder {
        FailoverBuilder::new()
    }
}

impl<C> FailoverLayer<C> {
    /// The instance name of the sets this layer starts.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// This layer in server mode: its services answer "no healthy endpoint" with a `503`
    /// problem response (see [`ServerMode`]), for axum and other servers.
    #[must_use]
    pub fn server_mode(self) -> ServerFailoverLayer<C> {
        ServerFailoverLayer { inner: self }
    }
}

/// A [`FailoverLayer`] in server mode, from [`FailoverLayer::server_mode`]: `layer(client)` gives
/// the layer's [`Failover`] wrapped in [`ServerMode`] (reach the set through
/// [`ServerMode::get_ref`]).
#[derive(Debug, Clone)]
pub struct ServerFailoverLayer<C = HttpClassifier> {
    inner: FailoverLayer<C>,
}

impl<S, C> Layer<S> for ServerFailoverLayer<C>
where
    S: Clone + Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    type Service = ServerMode<Failover<S, C>>;

    fn layer(&self, client: S) -> Self::Service {
        ServerMode::new(self.inner.layer(client))
    }
}

impl<C> Clone for FailoverLayer<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> fmt::Debug for FailoverLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<Vec<&str>> = self
            .inner
            .tiers
            .iter()
            .map(|tier| tier.iter().map(|e| &*e.name).collect())
            .collect();
        f.debug_struct("FailoverLayer")
            .field("name", &self.inner.settings.name)
            .field("tiers", &names)
            .finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for FailoverLayer<C>
where
    S: Clone + Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    type Service = Failover<S, C>;

    fn layer(&self, client: S) -> Failover<S, C> {
        let tiers = self
            .inner
            .tiers
            .iter()
            .map(|tier| {
                tier.iter()
                    .map(|e| e.with_service(client.clone()))
                    .collect()
            })
            .collect();
        let current = Handle::try_current().ok();
        let runtime = current.as_ref().or(self.inner.runtime.as_ref());
        self.inner.settings.clone().start(tiers, runtime)
    }
}
