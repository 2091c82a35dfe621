//! The response future of [`Failover`](crate::Failover).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_fault::{AttemptContext, BoxError, Class, Classify, EndpointError, SentTo, ServedBy};
use tower_service::Service;

use crate::{endpoint::EndpointStatus, entry::Entry, error::NoHealthyEndpoint, shared::Shared};

/// Counts a request in flight on an endpoint until it finishes or is dropped.
pub(crate) struct CallGuard<S> {
    pub(crate) entry: Arc<Entry<S>>,
    /// For the trial request of an ejected endpoint: that ejection (the endpoint's ejection
    /// count when the trial began), so its verdict applies to it and not to a later one.
    pub(crate) trial: Option<u64>,
    done: bool,
}

impl<S> CallGuard<S> {
    /// Starts a request on `entry`, unless it was removed: counts it in flight first, then
    /// checks, so a removal either sees the request (its [`Drain`](crate::Drain) waits for it)
    /// or the request sees the removal (and is not sent). Both sides use `SeqCst`: the count's
    /// increment and the removal's store each come before the other side's load. A request
    /// that starts tells a retry layer that may cancel the attempt where it went ([`SentTo`],
    /// only on requests that carry one) and has its URI rewritten.
    ///
    /// `None` for a removed endpoint: a trial it held is released.
    pub(crate) fn try_begin<B>(
        entry: Arc<Entry<S>>,
        trial: bool,
        req: &mut Request<B>,
    ) -> Option<Self> {
        entry.in_flight.fetch_add(1, Ordering::SeqCst);
        // From here on the guard's drop undoes the count (and frees a trial).
        let guard = Self {
            trial: trial.then(|| entry.ejections.load(Ordering::Acquire)),
            entry,
            done: false,
        };
        let entry = &guard.entry;
        if entry.removed_seqcst() {
            return None;
        }
        if let Some(sent_to) = req.extensions().get::<SentTo>() {
            sent_to.record(entry.info.id);
        }
        if let Some(target) = &entry.target {
            target.rewrite(req);
        }
        entry.metrics.request();
        Some(guard)
    }
}

impl<S> Drop for CallGuard<S> {
    fn drop(&mut self) {
        if self.trial.is_some() && !self.done {
            // Cancelled before an answer: let another request be the trial, and wake the
            // requests waiting for one.
            self.entry.release_trial();
        }
        let before = self.entry.in_flight.fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.entry.status() == EndpointStatus::Removed {
            self.entry.drained.notify_waiters();
        }
    }
}

/// Boxed: only the all-down path with [`AllDown::Wait`](crate::AllDown::Wait) builds one (an
/// `async` block with a `Notified` and a `Sleep` inside), never a request that has an endpoint.
pub(crate) type WaitFuture<S> = Pin<Box<dyn Future<Output = Option<(Arc<Entry<S>>, bool)>> + Send>>;

/// Waits (woken by recoveries and ejection ends, never polling) for a usable endpoint.
pub(crate) fn wait_for_endpoint<S, C>(
    shared: Arc<Shared<S, C>>,
    max: Duration,
    ctx: Option<AttemptContext>,
) -> WaitFuture<S>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    Box::pin(async move {
        let deadline = tower_fault::time::saturating_after(Instant::now(), max);
        let mut rng = shared.clone_rng();
        loop {
            let notified = shared.recovered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let snap = shared.load_snapshot();
            if let Some(i) = shared.claim_trial(&snap, ctx.as_ref()) {
                return Some((snap.entries[i].clone(), true));
            }
            if let Some(c) = shared.candidates(&snap, &mut rng)
                && let Some((i, _)) = shared.pick(&snap, &c, &mut rng)
            {
                return Some((snap.entries[i].clone(), false));
            }
            // At least a millisecond on: a wake-up that finds nothing new (another request
            // claimed the trial in between) must not turn into a busy loop.
            let wake_at = shared
                .next_trial_at(&snap, ctx.as_ref())
                .map_or(deadline, |t| t.min(deadline))
                .max(Instant::now() + Duration::from_millis(1));
            drop(snap);
            if Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    })
}

/// A request still to be sent once its endpoint's service is ready.
struct Unsent<S, B> {
    svc: S,
    req: Option<Request<B>>,
}

pin_project! {
    /// The request and the service of `NotReady` and `Waiting` are boxed: only a trial request,
    /// a request steered to an endpoint its retry has not tried and one that waited for an
    /// endpoint build them, and inline they would make every response future (the common
    /// `Called` one included) hundreds of bytes larger — copied with every move of it and of the
    /// retry future around it (616 → 72 bytes over hyper-util's client).
    #[project = StateProj]
    enum State<F, S, B> {
        Called { #[pin] fut: F },
        NotReady { unsent: Box<Unsent<S, B>> },
        Waiting { wait: WaitFuture<S>, req: Option<Box<Request<B>>> },
        Failed { err: Option<NoHealthyEndpoint> },
    }
}

pin_project! {
    /// The response future of [`Failover`](crate::Failover).
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, S, B>,
        guard: Option<CallGuard<S>>,
        // One reference-count increment per call: the future outlives `&mut self` of the
        // service and needs the classifier and the passive-detection state when it completes.
        shared: Arc<Shared<S, C>>,
    }
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::NotReady { .. } => "not_ready",
            State::Waiting { .. } => "waiting",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("endpoint", &self.guard.as_ref().map(|g| &g.entry.info.name))
            .finish()
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    pub(crate) fn called(fut: S::Future, guard: CallGuard<S>, shared: Arc<Shared<S, C>>) -> Self {
        Self {
            state: State::Called { fut },
            guard: Some(guard),
            shared,
        }
    }

    pub(crate) fn not_ready(
        svc: S,
        req: Request<B>,
        guard: CallGuard<S>,
        shared: Arc<Shared<S, C>>,
    ) -> Self {
        Self {
            state: State::NotReady {
                unsent: Box::new(Unsent {
                    svc,
                    req: Some(req),
                }),
            },
            guard: Some(guard),
            shared,
        }
    }

    pub(crate) fn waiting(wait: WaitFuture<S>, req: Request<B>, shared: Arc<Shared<S, C>>) -> Self {
        Self {
            state: State::Waiting {
                wait,
                req: Some(Box::new(req)),
            },
            guard: None,
            shared,
        }
    }

    pub(crate) fn failed(err: NoHealthyEndpoint, shared: Arc<Shared<S, C>>) -> Self {
        Self {
            state: State::Failed { err: Some(err) },
            guard: None,
            shared,
        }
    }
}

/// Tells a retry layer above which endpoint answered: a response that is not a success carries
/// [`ServedBy`] (a success carries nothing, so the happy path pays nothing; any other answer
/// may be one the retry layer's own classifier retries), an endpoint's error comes wrapped in an
/// [`EndpointError`].
fn report<S, ResB>(
    guard: Option<&CallGuard<S>>,
    class: Option<&Class>,
    result: Result<Response<ResB>, BoxError>,
) -> Result<Response<ResB>, BoxError> {
    let Some(guard) = guard else { return result };
    let info = &guard.entry.info;
    match result {
        Ok(mut res) => {
            if class.is_some_and(|class| !class.is_success()) {
                res.extensions_mut().insert(ServedBy(info.id));
            }
            Ok(res)
        }
        Err(err) => Err(EndpointError::new(info.id, info.name.clone(), err).into()),
    }
}

impl<S, B, C, ResB> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { fut } => {
                    let res = ready!(fut.poll(cx));
                    let mut class = None;
                    if let Some(guard) = this.guard.as_mut() {
                        let verdict = this.shared.classifier.classify(res.as_ref());
                        this.shared.record(&guard.entry, verdict, guard.trial);
                        guard.done = true;
                        class = Some(verdict);
                    }
                    let res = res.map_err(Into::into);
                    return Poll::Ready(report(this.guard.as_ref(), class.as_ref(), res));
                }
                StateProj::NotReady { unsent } => match ready!(unsent.svc.poll_ready(cx)) {
                    Ok(()) => {
                        let req = unsent.req.take().expect("request present until called");
                        let fut = unsent.svc.call(req);
                        this.state.set(State::Called { fut });
                    }
                    Err(err) => {
                        let err = err.into();
                        if let Some(guard) = this.guard.as_mut() {
                            this.shared
                                .readiness_failed(&guard.entry, &err, guard.trial);
                            guard.done = true;
                        }
                        return Poll::Ready(report(this.guard.as_ref(), None, Err(err)));
                    }
                },
                StateProj::Waiting { wait, req } => {
                    if let Some((entry, trial)) = ready!(wait.as_mut().poll(cx)) {
                        let mut req = *req.take().expect("request present until sent");
                        let svc = entry.service.clone();
                        let Some(guard) = CallGuard::try_begin(entry, trial, &mut req) else {
                            // Removed in the instant since the wait found it: as if none had
                            // been found (a not-processed failure a retry layer retries).
                            let hint = this.shared.retry_hint(&this.shared.load_snapshot());
                            return Poll::Ready(Err(NoHealthyEndpoint::new(hint).into()));
                        };
                        *this.guard = Some(guard);
                        this.state.set(State::NotReady {
                            unsent: Box::new(Unsent {
                                svc,
                                req: Some(req),
                            }),
                        });
                    } else {
                        let hint = this.shared.retry_hint(&this.shared.load_snapshot());
                        return Poll::Ready(Err(NoHealthyEndpoint::new(hint).into()));
                    }
                }
                StateProj::Failed { err } => {
                    let err = err.take().unwrap_or_else(|| NoHealthyEndpoint::new(None));
                    return Poll::Ready(Err(err.into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower_fault::HttpClassifier;

    use super::*;

    /// A service as large as hyper-util's client, with a boxed future like it.
    #[derive(Clone)]
    struct Large {
        _state: [u64; 40],
    }

    impl Service<Request<()>> for Large {
        type Response = Response<()>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<()>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            Box::pin(std::future::ready(Ok(Response::new(()))))
        }
    }

    #[test]
    fn the_service_and_the_request_do_not_size_the_response_future() {
        let size = size_of::<ResponseFuture<Large, (), HttpClassifier>>();
        assert!(
            size <= 96,
            "{size} bytes: a large service or the request is kept inline again"
        );
    }
}
