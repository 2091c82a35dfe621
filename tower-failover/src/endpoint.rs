//! Endpoints: what the user declares, what probes and events see, and the URI rewrite.

use std::{fmt, sync::Arc, time::Duration};

use http::{
    Request, Uri,
    uri::{Authority, PathAndQuery, Scheme},
};
use tower_fault::EndpointId;

use crate::error::ConfigError;

/// One upstream: a unique name, a base URI and the tower service that reaches it.
///
/// The base URI's scheme and authority replace the request's; a non-root path in it is a prefix
/// prepended to the request's path (`http://10.0.0.7:8080/v2` sends `/orders?id=1` to
/// `http://10.0.0.7:8080/v2/orders?id=1`). Every endpoint can therefore share one hyper or
/// reqwest client.
///
/// ```
/// use tower::service_fn;
/// use tower_failover::Endpoint;
///
/// let svc = service_fn(|_req: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) });
/// let primary = Endpoint::new("eu-1", "http://10.0.0.7:8080", svc);
/// # let _ = primary;
/// ```
pub struct Endpoint<S> {
    pub(crate) name: Arc<str>,
    pub(crate) base: Result<Uri, String>,
    pub(crate) service: S,
}

impl<S: Clone> Clone for Endpoint<S> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            base: self.base.clone(),
            service: self.service.clone(),
        }
    }
}

impl<S> fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl<S> Endpoint<S> {
    /// An endpoint. An unparsable `base` is reported by `build()` (or `FailoverHandle::add`).
    pub fn new<U>(name: impl Into<Arc<str>>, base: U, service: S) -> Self
    where
        U: TryInto<Uri>,
        U::Error: fmt::Display,
    {
        Self {
            name: name.into(),
            base: base.try_into().map_err(|e| e.to_string()),
            service,
        }
    }

    /// Checks the name and the base URI.
    pub(crate) fn check(self) -> Result<Checked<S>, ConfigError> {
        if self.name.is_empty() {
            return Err(crate::error::config_error("an endpoint has an empty name"));
        }
        let target = Target::from_base(&self.name, &self.base)?;
        let base_uri = self.base.map_err(crate::error::config_error)?;
        Ok(Checked {
            name: self.name,
            base_uri,
            target,
            service: self.service,
        })
    }
}

/// An endpoint whose name and base URI passed [`Endpoint::check`]: ready to join a set.
#[derive(Debug, Clone)]
pub(crate) struct Checked<S> {
    pub(crate) name: Arc<str>,
    pub(crate) base_uri: Uri,
    pub(crate) target: Target,
    pub(crate) service: S,
}

impl<S> Checked<S> {
    /// The same endpoint, sending through `service`.
    pub(crate) fn with_service<T>(&self, service: T) -> Checked<T> {
        Checked {
            name: self.name.clone(),
            base_uri: self.base_uri.clone(),
            target: self.target.clone(),
            service,
        }
    }
}

/// What probes, events and snapshots know about an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The id failover assigned (the one recorded in `tower_fault::AttemptContext`).
    pub id: EndpointId,
    /// The configured name (unique within a failover set).
    pub name: Arc<str>,
    /// The priority tier, 0 being the primary.
    pub tier: usize,
    /// The base URI.
    pub base_uri: Uri,
}

impl EndpointInfo {
    /// The URI of `path_and_query` on this endpoint's authority (the base path is *not*
    /// prepended: probe paths such as `/healthz` are absolute). An unparsable
    /// `path_and_query` yields the root path.
    #[must_use]
    pub fn uri_for(&self, path_and_query: &str) -> Uri {
        let mut parts = self.base_uri.clone().into_parts();
        // `healthz` means `/healthz`: `http` would accept it and send `GET healthz`, which
        // servers answer 400 (every probe failing, with that as the only clue).
        let absolute = if path_and_query.starts_with('/') {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("/{path_and_query}"))
        };
        parts.path_and_query = Some(absolute.unwrap_or_else(|_| PathAndQuery::from_static("/")));
        Uri::from_parts(parts).unwrap_or_else(|_| self.base_uri.clone())
    }
}

/// The health status of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointStatus {
    /// Not probed yet (initial state [`InitialState::ProbeFirst`](crate::InitialState)); takes no traffic.
    Unknown,
    /// Takes traffic.
    Healthy,
    /// Failed `unhealthy_threshold` consecutive probes; back after `healthy_threshold` passes.
    Unhealthy,
    /// Ejected by passive detection (a streak of transient failures of live traffic, a failed
    /// readiness), or held out while its own layer (a circuit breaker) refuses requests; back
    /// after its ejection time, once a probe or one trial request passes.
    Ejected,
    /// Removed at runtime; in-flight requests drain, new ones never come.
    Removed,
}

impl EndpointStatus {
    pub(crate) const fn to_u8(self) -> u8 {
        match self {
            EndpointStatus::Unknown => 0,
            EndpointStatus::Healthy => 1,
            EndpointStatus::Unhealthy => 2,
            EndpointStatus::Ejected => 3,
            EndpointStatus::Removed => 4,
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            1 => EndpointStatus::Healthy,
            2 => EndpointStatus::Unhealthy,
            3 => EndpointStatus::Ejected,
            4 => EndpointStatus::Removed,
            _ => EndpointStatus::Unknown,
        }
    }

    /// A short stable label (`unknown`, `healthy`, `unhealthy`, `ejected`, `removed`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Unknown => "unknown",
            EndpointStatus::Healthy => "healthy",
            EndpointStatus::Unhealthy => "unhealthy",
            EndpointStatus::Ejected => "ejected",
            EndpointStatus::Removed => "removed",
        }
    }
}

impl fmt::Display for EndpointStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A point-in-time view of one endpoint (see [`FailoverHandle::endpoints`](crate::FailoverHandle::endpoints)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// Who.
    pub info: Arc<EndpointInfo>,
    /// Its status.
    pub status: EndpointStatus,
    /// Requests sent to it and not finished yet.
    pub in_flight: usize,
    /// Consecutive transient failures of live traffic since the last success (or since it
    /// last came back into rotation).
    pub consecutive_failures: u32,
    /// How many times it was ejected or held out.
    pub ejections: u64,
    /// Whether it is out of rotation because its own layer (a circuit breaker) refused a
    /// request and said when to come back, rather than ejected (see
    /// [`Cause::HeldOut`](crate::Cause::HeldOut)).
    pub held_out: bool,
    /// While ejected: how long until it may take a trial request (zero once that time is
    /// over and it waits for a trial or a probe).
    pub ejected_for: Option<Duration>,
}

/// The scheme, authority and optional path prefix an endpoint rewrites requests to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    scheme: Scheme,
    authority: Authority,
    prefix: Option<Box<str>>,
}

impl Target {
    pub(crate) fn from_base(name: &str, base: &Result<Uri, String>) -> Result<Self, ConfigError> {
        let uri = base.as_ref().map_err(|e| {
            crate::error::config_error(format!("endpoint `{name}`: invalid base URI: {e}"))
        })?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(crate::error::config_error(format!(
                "endpoint `{name}`: base URI `{uri}` needs a scheme and an authority (e.g. `http://10.0.0.7:8080`)"
            )));
        };
        if uri.query().is_some() {
            return Err(crate::error::config_error(format!(
                "endpoint `{name}`: base URI `{uri}` must not have a query"
            )));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
            prefix: (!path.is_empty()).then(|| path.into()),
        })
    }

    /// Points `req` at this endpoint. Allocation-free unless a path prefix is configured.
    pub(crate) fn rewrite<B>(&self, req: &mut Request<B>) {
        if self.points_at_it(req.uri()) {
            return;
        }
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        let pq = parts.path_and_query.take();
        parts.path_and_query = Some(match (&self.prefix, pq) {
            (None, Some(pq)) => pq,
            // `OPTIONS *` asks about the server, not a resource under its prefix.
            (Some(_), Some(pq)) if pq.as_str() == "*" => pq,
            (None, None) => PathAndQuery::from_static("/"),
            (Some(prefix), pq) => {
                let rest = pq.as_ref().map_or("/", PathAndQuery::as_str);
                let rest = if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    format!("/{rest}")
                };
                PathAndQuery::try_from(format!("{prefix}{rest}"))
                    .unwrap_or_else(|_| PathAndQuery::from_static("/"))
            }
        });
        // Scheme, authority and path are all set, so this cannot fail.
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }

    /// Whether `uri` is already what [`rewrite`](Self::rewrite) would make of it: this
    /// endpoint's scheme and authority, byte for byte, a path, and no prefix to add. A request
    /// addressed to the endpoint it is sent to (the primary's URL under active-passive) then
    /// keeps its URI instead of having it taken apart and rebuilt (~270 instructions).
    fn points_at_it(&self, uri: &Uri) -> bool {
        self.prefix.is_none()
            && uri.path_and_query().is_some()
            && uri.scheme_str() == Some(self.scheme.as_str())
            && uri.authority().map(Authority::as_str) == Some(self.authority.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str) -> Target {
        Target::from_base("t", &base.parse::<Uri>().map_err(|e| e.to_string())).unwrap()
    }

    fn rewrite(t: &Target, uri: &str) -> String {
        let mut req = Request::builder().uri(uri).body(()).unwrap();
        t.rewrite(&mut req);
        req.uri().to_string()
    }

    #[test]
    fn rewrites_authority_and_prefix() {
        let plain = target("http://10.0.0.7:8080");
        assert_eq!(
            rewrite(&plain, "https://api.example/orders?id=1"),
            "http://10.0.0.7:8080/orders?id=1"
        );
        assert_eq!(rewrite(&plain, "/x"), "http://10.0.0.7:8080/x");
        let prefixed = target("https://b.internal/v2/");
        assert_eq!(
            rewrite(&prefixed, "http://api/orders?id=1"),
            "https://b.internal/v2/orders?id=1"
        );
        let mut options = Request::options("*").body(()).unwrap();
        prefixed.rewrite(&mut options);
        assert_eq!(options.uri().path(), "*", "OPTIONS * is about the server");
        assert_eq!(options.uri().authority().unwrap().as_str(), "b.internal");
    }

    #[test]
    fn a_uri_already_pointing_at_the_endpoint_is_kept() {
        let plain = target("http://10.0.0.7:8080");
        for uri in [
            "http://10.0.0.7:8080/orders?id=1",
            "http://10.0.0.7:8080/",
            "http://10.0.0.7:8080",
        ] {
            let expected = Uri::from_parts({
                let mut parts = uri.parse::<Uri>().unwrap().into_parts();
                parts
                    .path_and_query
                    .get_or_insert(PathAndQuery::from_static("/"));
                parts
            })
            .unwrap()
            .to_string();
            assert_eq!(rewrite(&plain, uri), expected, "{uri}");
        }
        // Kept, not rebuilt: the authority is still the request's own bytes.
        let mut req = Request::get("http://10.0.0.7:8080/orders")
            .body(())
            .unwrap();
        let before = req.uri().authority().unwrap().as_str().as_ptr();
        plain.rewrite(&mut req);
        assert_eq!(req.uri().authority().unwrap().as_str().as_ptr(), before);
        // Only the same bytes count as the endpoint's: another scheme, host spelling or port
        // is rewritten.
        assert_eq!(
            rewrite(&plain, "https://10.0.0.7:8080/x"),
            "http://10.0.0.7:8080/x"
        );
        assert_eq!(
            rewrite(&plain, "http://10.0.0.7:8081/x"),
            "http://10.0.0.7:8080/x"
        );
        let named = target("http://api.internal");
        assert_eq!(
            rewrite(&named, "http://API.internal/x"),
            "http://api.internal/x"
        );
        // With a prefix the path changes, so the URI is always rebuilt.
        let prefixed = target("http://10.0.0.7:8080/v2");
        assert_eq!(
            rewrite(&prefixed, "http://10.0.0.7:8080/orders"),
            "http://10.0.0.7:8080/v2/orders"
        );
    }

    #[test]
    fn rejects_bad_bases() {
        let relative = Target::from_base("r", &Ok(Uri::from_static("/only/path")));
        assert!(
            relative
                .unwrap_err()
                .message()
                .contains("scheme and an authority")
        );
        let query = Target::from_base("q", &Ok(Uri::from_static("http://a/?x=1")));
        assert!(query.unwrap_err().message().contains("query"));
        let unparsable = Target::from_base("u", &Err("bad".into()));
        assert!(unparsable.unwrap_err().message().contains("`u`"));
    }
}
