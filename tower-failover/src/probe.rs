//! Active health checks: the [`Probe`] trait, closures as probes, and [`HttpProbe`].

use std::{borrow::Cow, fmt, future::Future, ops::RangeInclusive, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_fault::BoxError;
use tower_service::Service;

use crate::endpoint::EndpointInfo;

/// The verdict of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The endpoint looks healthy.
    Healthy,
    /// The endpoint looks unhealthy, and why.
    Unhealthy(Cow<'static, str>),
}

impl ProbeOutcome {
    /// An unhealthy verdict with a reason.
    pub fn unhealthy(reason: impl Into<Cow<'static, str>>) -> Self {
        ProbeOutcome::Unhealthy(reason.into())
    }

    /// `true` for [`ProbeOutcome::Healthy`].
    #[must_use]
    pub const fn is_healthy(&self) -> bool {
        matches!(self, ProbeOutcome::Healthy)
    }
}

/// The future a [`Probe`] returns (probes are not on the request path, so boxing is fine).
pub type ProbeFuture = Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'static>>;

/// An active health check of one endpoint.
///
/// The failover's background task calls it on every endpoint, every probe interval (with
/// jitter), under a timeout (a timed-out probe counts as a failure) and with bounded
/// concurrency.
pub trait Probe: Send + Sync + 'static {
    /// Checks `endpoint`.
    fn check(&self, endpoint: &EndpointInfo) -> ProbeFuture;
}

/// A [`Probe`] made of a closure; see [`probe_fn`].
#[derive(Clone)]
pub struct ProbeFn<F> {
    f: F,
}

impl<F> fmt::Debug for ProbeFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeFn").finish_non_exhaustive()
    }
}

/// A probe from a closure returning a future of a [`ProbeOutcome`].
///
/// ```
/// use tower_failover::{ProbeOutcome, probe_fn};
///
/// let probe = probe_fn(|endpoint| {
///     let healthy = !endpoint.name.starts_with("drained-");
///     async move { if healthy { ProbeOutcome::Healthy } else { ProbeOutcome::unhealthy("drained") } }
/// });
/// # let _ = probe;
/// ```
pub fn probe_fn<F, Fut>(f: F) -> ProbeFn<F>
where
    F: Fn(&EndpointInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProbeOutcome> + Send + 'static,
{
    ProbeFn { f }
}

impl<F, Fut> Probe for ProbeFn<F>
where
    F: Fn(&EndpointInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProbeOutcome> + Send + 'static,
{
    fn check(&self, endpoint: &EndpointInfo) -> ProbeFuture {
        Box::pin((self.f)(endpoint))
    }
}

type BodyCheck = Arc<dyn Fn(StatusCode, &Bytes) -> Result<(), String> + Send + Sync>;

/// The largest body an [`HttpProbe::deep`] reads by default (64 KiB: a health document, never a
/// page); a larger one fails the probe.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// An HTTP health check sent through any `Service<http::Request<ReqB>>` — typically the very
/// client the endpoints use.
///
/// * **shallow** ([`HttpProbe::shallow`]): `GET path`, healthy when the status is expected
///   (2xx by default; see [`HttpProbe::expect_statuses`]);
/// * **deep** ([`HttpProbe::deep`]): also reads the body (up to [`HttpProbe::max_body_bytes`])
///   and asks a predicate, so "200 with the wrong body" is caught.
///
/// The probe URI is the endpoint's scheme and authority plus `path` (absolute: an endpoint's
/// base path prefix is not prepended). The request body is `ReqB::default()`: `Full<Bytes>`
/// unless [`request_body`](HttpProbe::request_body) says otherwise, so a client that takes any
/// body (reqwest's) needs no annotation, and one typed to another body (hyper's client under a
/// retry layer takes `ReplayBody<Full<Bytes>>`) gets that type inferred by `request_body()`.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::service_fn;
/// use tower_failover::HttpProbe;
///
/// let client = service_fn(|_req: http::Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{\"db\":\"up\"}"))))
/// });
/// let shallow = HttpProbe::shallow(client.clone(), "/healthz");
/// let deep = HttpProbe::deep(client, "/ready", |status, body| {
///     if status.is_success() && body.as_ref() == b"{\"db\":\"up\"}" { Ok(()) } else { Err("db down".into()) }
/// });
/// # let _ = (shallow, deep);
/// ```
pub struct HttpProbe<T, ReqB = http_body_util::Full<Bytes>> {
    client: T,
    method: Method,
    path: Arc<str>,
    statuses: Vec<RangeInclusive<u16>>,
    body_check: Option<BodyCheck>,
    max_body_bytes: usize,
    _body: std::marker::PhantomData<fn() -> ReqB>,
}

impl<T: Clone, ReqB> Clone for HttpProbe<T, ReqB> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            statuses: self.statuses.clone(),
            body_check: self.body_check.clone(),
            max_body_bytes: self.max_body_bytes,
            _body: std::marker::PhantomData,
        }
    }
}

impl<T, ReqB> fmt::Debug for HttpProbe<T, ReqB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProbe")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("statuses", &self.statuses)
            .field("deep", &self.body_check.is_some())
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl<T> HttpProbe<T> {
    /// `GET path` with an empty `Full<Bytes>` body, healthy on a 2xx.
    pub fn shallow(client: T, path: impl Into<Arc<str>>) -> Self {
        Self {
            client,
            method: Method::GET,
            path: path.into(),
            statuses: vec![200..=299],
            body_check: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            _body: std::marker::PhantomData,
        }
    }

    /// `GET path` with an empty `Full<Bytes>` body, healthy when `check(status, body)` is `Ok`
    /// (its `Err` is the reason). The expected statuses are not consulted.
    pub fn deep<F>(client: T, path: impl Into<Arc<str>>, check: F) -> Self
    where
        F: Fn(StatusCode, &Bytes) -> Result<(), String> + Send + Sync + 'static,
    {
        let mut probe = Self::shallow(client, path);
        probe.statuses = vec![100..=999];
        probe.body_check = Some(Arc::new(check));
        probe
    }
}

impl<T, ReqB> HttpProbe<T, ReqB> {
    /// Sends the probe with a `B::default()` body instead. `B` is inferred when the client takes
    /// one body type, as hyper's client does:
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Empty;
    /// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    /// use tower_failover::{HttpProbe, Probe};
    ///
    /// let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    /// let probe = HttpProbe::shallow(client, "/healthz").request_body();
    /// fn is_probe(_: &impl Probe) {}
    /// is_probe(&probe); // sends `Empty<Bytes>`
    /// ```
    pub fn request_body<B>(self) -> HttpProbe<T, B> {
        HttpProbe {
            client: self.client,
            method: self.method,
            path: self.path,
            statuses: self.statuses,
            body_check: self.body_check,
            max_body_bytes: self.max_body_bytes,
            _body: std::marker::PhantomData,
        }
    }

    /// The statuses a shallow probe accepts (default `200..=299`).
    #[must_use]
    pub fn expect_statuses(
        mut self,
        statuses: impl IntoIterator<Item = RangeInclusive<u16>>,
    ) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// The method (default `GET`; `HEAD` suits a shallow check).
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The largest body a deep probe reads (default [`DEFAULT_MAX_BODY_BYTES`]); a larger one
    /// fails the probe.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

impl<T, ReqB, ResB> Probe for HttpProbe<T, ReqB>
where
    T: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<BoxError>,
    ReqB: Default + Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Into<BoxError>,
{
    fn check(&self, endpoint: &EndpointInfo) -> ProbeFuture {
        let mut client = self.client.clone();
        let mut req = Request::new(ReqB::default());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = endpoint.uri_for(&self.path);
        let statuses = self.statuses.clone();
        let body_check = self.body_check.clone();
        let max_body_bytes = self.max_body_bytes;
        Box::pin(async move {
            if let Err(e) = std::future::poll_fn(|cx| client.poll_ready(cx)).await {
                return ProbeOutcome::unhealthy(format!("client not ready: {}", e.into()));
            }
            let res = match client.call(req).await {
                Ok(res) => res,
                Err(e) => return ProbeOutcome::unhealthy(format!("request failed: {}", e.into())),
            };
            let status = res.status();
            if !statuses.iter().any(|r| r.contains(&status.as_u16())) {
                return ProbeOutcome::unhealthy(format!("unexpected status {}", status.as_u16()));
            }
            let Some(check) = body_check else {
                return ProbeOutcome::Healthy;
            };
            match Limited::new(res.into_body(), max_body_bytes)
                .collect()
                .await
            {
                Ok(body) => match check(status, &body.to_bytes()) {
                    Ok(()) => ProbeOutcome::Healthy,
                    Err(reason) => ProbeOutcome::unhealthy(reason),
                },
                Err(e) => ProbeOutcome::unhealthy(format!("body: {e}")),
            }
        })
    }
}
