//! The [`Failover`] service.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_fault::{AttemptContext, BoxError, Classify, HttpClassifier, SeededRng};
use tower_service::Service;

use crate::{
    builder::FailoverBuilder,
    config::AllDown,
    endpoint::Endpoint,
    entry::Entry,
    error::NoHealthyEndpoint,
    events::HealthEvents,
    future::{CallGuard, ResponseFuture, wait_for_endpoint},
    handle::FailoverHandle,
    server::ServerMode,
    shared::Shared,
    snapshot::{Candidates, Snapshot},
};

/// Health-checked failover over priority tiers of endpoints.
///
/// Made by [`FailoverLayer`](crate::FailoverLayer) over one client that every endpoint shares,
/// or built with [`Failover::builder`] from endpoints that each bring their own service. Every
/// clone shares one set of endpoints, their health and the background probe task; the task
/// stops as soon as the last clone, the last [`FailoverHandle`] and the last response future
/// are dropped.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{Service, ServiceExt, service_fn};
/// use tower_failover::{Endpoint, Failover};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_failover::BoxError> {
/// // The endpoints' services: each echoes the URI it was sent to.
/// let client = service_fn(|req: Request<()>| async move {
///     Ok::<_, Infallible>(Response::new(req.uri().to_string()))
/// });
/// let mut failover = Failover::builder()
///     .tier([Endpoint::new("primary", "http://10.0.0.1:8080", client)])
///     .tier([Endpoint::new("standby", "http://10.0.0.2:8080/v1", client)])
///     .build()?;
/// let res = failover.ready().await?.call(Request::get("/orders").body(())?).await?;
/// assert_eq!(res.body(), "http://10.0.0.1:8080/orders");
///
/// // Take the primary out of rotation: traffic fails over to the standby.
/// let _drain = failover.handle().remove("primary");
/// let res = failover.ready().await?.call(Request::get("/orders").body(())?).await?;
/// assert_eq!(res.body(), "http://10.0.0.2:8080/v1/orders");
/// # Ok(()) }
/// ```
///
/// The endpoint service `S` must be `Clone + Send + Sync` (hyper's and reqwest's clients are;
/// for a boxed service use tower's `BoxCloneSyncService`): one prototype per endpoint is shared
/// and cloned for each request, which is then sent on the clone that was polled ready.
///
/// * `poll_ready` is ready as soon as one usable endpoint of the active tier is ready (two
///   random candidates first, by power of two choices on in-flight requests, then the rest of
///   the tier); a pending endpoint never stalls the others, and the wakers of every endpoint
///   polled are kept registered, so nothing spins. When no endpoint is usable (or every
///   candidate just failed its own `poll_ready`, which ejects it) it is ready too: the call
///   then fails fast, waits, or goes to a trial endpoint according to [`AllDown`].
/// * `call` rewrites the request URI to the chosen endpoint and, when the request's
///   [`AttemptContext`] (put there by a retry layer) says the polled endpoint was already tried
///   by this logical request, sends it to an untried healthy endpoint instead.
/// * Each outcome is classified with the classifier `C`: a streak of `Transient` outcomes that
///   the endpoint's recent failure rate does not explain ejects it (passive detection, see the
///   [crate docs](crate#noise-is-not-an-outage) and
///   [`eject_after`](FailoverBuilder::eject_after)), and a local rejection by the endpoint's own
///   layer that says when to come back holds it out until then. A response that is not a success carries
///   [`ServedBy`](tower_fault::ServedBy) in its extensions, so a retry layer above knows which
///   endpoint not to try again; a success carries nothing. A request that carries a
///   [`SentTo`](tower_fault::SentTo) (a retry layer with an attempt timeout) learns its endpoint
///   as it is sent.
///
/// Errors are `BoxError`: an endpoint's error (from its readiness or its call) wrapped in a
/// [`tower_fault::EndpointError`] that names the endpoint and keeps the original as its
/// `source()` (classification reads through it), or
/// [`NoHealthyEndpoint`](crate::error::NoHealthyEndpoint).
pub struct Failover<S, C = HttpClassifier> {
    pub(crate) shared: Arc<Shared<S, C>>,
    snap: Arc<Snapshot<S>>,
    /// The endpoint polled ready and its service, taken from the endpoint's idle clones.
    ready: Option<(Arc<Entry<S>>, Box<S>)>,
    pending: Vec<(Arc<Entry<S>>, Box<S>)>,
    rng: SeededRng,
}

impl<S, C> fmt::Debug for Failover<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field("name", &self.shared.name)
            .field("endpoints", &self.snap.entries.len())
            .field("ready", &self.ready.as_ref().map(|(e, _)| &e.info.name))
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<S, C> Clone for Failover<S, C> {
    /// A clone shares the endpoints and their health; it is not ready until polled.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            snap: self.snap.clone(),
            ready: None,
            pending: Vec::new(),
            rng: self.shared.clone_rng(),
        }
    }
}

impl<S> Failover<S> {
    /// A builder of a set whose endpoints each bring their own service; add at least one
    /// [`tier`](FailoverBuilder::tier). For one client shared by every endpoint,
    /// [`FailoverLayer`](crate::FailoverLayer) does the same over the client it wraps.
    #[must_use]
    pub fn builder() -> FailoverBuilder<Endpoint<S>> {
        FailoverBuilder::new()
    }
}

impl<S, C> Failover<S, C> {
    pub(crate) fn from_shared(shared: Arc<Shared<S, C>>) -> Self {
        Self {
            snap: shared.load_snapshot(),
            rng: shared.clone_rng(),
            shared,
            ready: None,
            pending: Vec::new(),
        }
    }

    /// The name used in metrics and logs.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A handle to add and remove endpoints and read their state.
    #[must_use]
    pub fn handle(&self) -> FailoverHandle<S, C> {
        FailoverHandle::new(self.shared.clone())
    }

    /// Subscribes to health events (see [`HealthEvents`]).
    #[must_use]
    pub fn subscribe(&self) -> HealthEvents {
        self.shared.subscribe()
    }

    /// Wraps this service so that "no healthy endpoint" becomes a `503` problem response
    /// (for axum and other servers); see [`ServerMode`].
    #[must_use]
    pub fn server_mode(self) -> ServerMode<Self> {
        ServerMode::new(self)
    }

    fn refresh(&mut self) {
        if self.shared.generation.load(Ordering::Acquire) != self.snap.generation {
            self.snap = self.shared.load_snapshot();
        }
    }
}

/// Whether `entry` is still a candidate for a request.
fn eligible<S>(cands: &Candidates, snap: &Snapshot<S>, entry: &Arc<Entry<S>>) -> bool {
    cands.admits(entry)
        && snap.entries[cands.range.clone()]
            .iter()
            .any(|e| Arc::ptr_eq(e, entry))
}

impl<S, C, B, ResB> Service<Request<B>> for Failover<S, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.refresh();
        let version = self.shared.version.load(Ordering::Acquire);
        let Some(cands) = self.shared.candidates(&self.snap, &mut self.rng) else {
            // All down: `call` fails fast, waits or sends a trial, per the all-down policy.
            self.ready = None;
            self.pending.clear();
            return Poll::Ready(Ok(()));
        };
        if let Some((entry, _)) = &self.ready {
            if eligible(&cands, &self.snap, entry) {
                return Poll::Ready(Ok(()));
            }
            self.ready = None;
        }
        // Endpoints that were pending last time keep their place (and their registered wakers).
        let mut i = 0;
        while i < self.pending.len() {
            if !eligible(&cands, &self.snap, &self.pending[i].0) {
                self.pending.swap_remove(i);
                continue;
            }
            match self.pending[i].1.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.ready = Some(self.pending.swap_remove(i));
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(err)) => {
                    let (entry, _) = self.pending.swap_remove(i);
                    self.shared.readiness_failed(&entry, &err.into(), None);
                }
                Poll::Pending => i += 1,
            }
        }
        let picked = self.shared.pick(&self.snap, &cands, &mut self.rng);
        let first = picked.map(|(a, b)| [Some(a), b]).unwrap_or_default();
        let rest = cands
            .range
            .clone()
            .filter(|i| first.iter().all(|f| *f != Some(*i)));
        for idx in first.into_iter().flatten().chain(rest) {
            let entry = &self.snap.entries[idx];
            if !cands.admits(entry) || self.pending.iter().any(|(e, _)| Arc::ptr_eq(e, entry)) {
                continue;
            }
            let mut svc = entry.take_service();
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.ready = Some((entry.clone(), svc));
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(err)) => self.shared.readiness_failed(entry, &err.into(), None),
                Poll::Pending => self.pending.push((entry.clone(), svc)),
            }
        }
        if self.pending.is_empty() {
            // Every candidate failed readiness (and was ejected): nothing will wake us for it.
            // Be ready and let `call` decide, like when all are down: another tier, fail fast,
            // wait, or (panic mode) a send whose readiness error reaches the caller.
            return Poll::Ready(Ok(()));
        }
        self.shared.waiters.register(cx.waker());
        if self.shared.version.load(Ordering::Acquire) != version {
            // Health changed while we looked (an endpoint whose readiness failed is ejected,
            // which is such a change): look again, once.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ctx = req.extensions().get::<AttemptContext>().cloned();
        let shared = &self.shared;
        let snap = &self.snap;
        // Every start goes through `CallGuard::try_begin`, which refuses an endpoint removed
        // meanwhile (its drain may have completed): the request then falls through to the next
        // way of sending it below.
        if let Some(i) = shared.claim_trial(snap, ctx.as_ref()) {
            // The one trial request of an endpoint whose ejection is over; the polled service
            // stays ready for the next call.
            let entry = &snap.entries[i];
            if let Some(guard) = CallGuard::try_begin(entry.clone(), true, &mut req) {
                let svc = entry.service.clone();
                return ResponseFuture::not_ready(svc, req, guard, shared.clone());
            }
        }
        if let Some((entry, mut svc)) = self.ready.take() {
            let tried = ctx.as_ref().is_some_and(|c| c.was_tried(entry.info.id));
            if tried {
                let was_tried = |id| ctx.as_ref().is_some_and(|c| c.was_tried(id));
                let cands = shared.candidates(snap, &mut self.rng);
                if let Some(i) = shared.untried(snap, cands.as_ref(), &was_tried) {
                    let other = &snap.entries[i];
                    if let Some(guard) = CallGuard::try_begin(other.clone(), false, &mut req) {
                        self.ready = Some((entry, svc));
                        let svc = other.service.clone();
                        return ResponseFuture::not_ready(svc, req, guard, shared.clone());
                    }
                }
                // Every usable endpoint was tried: the polled one will do.
            }
            if let Some(guard) = CallGuard::try_begin(entry, false, &mut req) {
                let fut = svc.call(req);
                guard.entry.give_back(svc);
                return ResponseFuture::called(fut, guard, shared.clone());
            }
        }
        // Not polled ready: everything is down (or the caller skipped `poll_ready`, or the
        // polled endpoint was removed since).
        let was_tried = |id| ctx.as_ref().is_some_and(|c| c.was_tried(id));
        if let Some(cands) = shared.candidates(snap, &mut self.rng) {
            let i = shared
                .untried(snap, Some(&cands), &was_tried)
                .or_else(|| shared.pick(snap, &cands, &mut self.rng).map(|(a, _)| a));
            if let Some(i) = i {
                let entry = &snap.entries[i];
                if let Some(guard) = CallGuard::try_begin(entry.clone(), false, &mut req) {
                    let svc = entry.service.clone();
                    return ResponseFuture::not_ready(svc, req, guard, shared.clone());
                }
            }
        }
        match shared.all_down {
            AllDown::Wait(max) => {
                let wait = wait_for_endpoint(shared.clone(), max, ctx);
                ResponseFuture::waiting(wait, req, shared.clone())
            }
            AllDown::FailFast | AllDown::Panic => {
                tracing::debug!(failover = &*shared.name, "no healthy endpoint");
                ResponseFuture::failed(
                    NoHealthyEndpoint::new(shared.retry_hint(snap)),
                    shared.clone(),
                )
            }
        }
    }
}
