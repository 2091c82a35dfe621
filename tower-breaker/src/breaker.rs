//! The [`Breaker`] handle and its permits.

use std::{fmt, sync::Arc, time::Duration};

use tower_fault::{Class, HttpClassifier};
use tower_service::Service;

use crate::{
    BreakerBuilder, BreakerLayer, State,
    config::Config,
    core::{Inner, RawPermit},
    error::BreakerError,
    events::Transitions,
    future::Admission,
    guard::FleetGuard,
    telemetry::{Series, Telemetry},
    window::{Window, WindowCounts},
};

/// A circuit breaker: shared state behind a cheap, cloneable handle.
///
/// Every clone, every [`BreakerLayer`] made from it and every service those layers wrap share
/// one state. Use it through [`layer`](Self::layer), or directly around any call:
///
/// ```
/// use tower_breaker::Breaker;
/// use tower_fault::Class;
///
/// let breaker = Breaker::builder().consecutive_failures(2).build().unwrap();
/// for _ in 0..2 {
///     let permit = breaker.try_acquire().expect("closed");
///     permit.record(Class::TRANSIENT); // or permit.success() / permit.failure()
/// }
/// assert!(breaker.try_acquire().is_err()); // open now
/// ```
#[derive(Clone)]
pub struct Breaker {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Breaker {
    /// A builder with the defaults (see [`BreakerBuilder`]).
    #[must_use]
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder::new()
    }

    pub(crate) fn from_parts(
        name: Arc<str>,
        cfg: Config,
        window: Window,
        seed: u64,
        guard: Option<Arc<FleetGuard>>,
        series: &Series,
    ) -> Self {
        let telemetry = Telemetry::new(&name, series);
        Self {
            inner: Arc::new(Inner::new(name, cfg, window, seed, guard, telemetry)),
        }
    }

    /// Asks to make one call. Closed: always a permit (one atomic load, no allocation). Open:
    /// a [`BreakerError`] with the remaining open time. Half-open: a probe permit while fewer
    /// than `half_open_permits` probes are in flight or have succeeded.
    ///
    /// Report the call's outcome with [`Permit::record`]; a permit dropped without an outcome
    /// (a cancelled call) records nothing and frees its probe slot.
    ///
    /// # Errors
    ///
    /// [`BreakerError`] when the call must not be made.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, BreakerError> {
        self.inner.try_acquire().map(|raw| Permit {
            inner: &self.inner,
            raw: Some(raw),
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a handle to the breaker
    /// (`'static`, can move into a task).
    ///
    /// # Errors
    ///
    /// [`BreakerError`] when the call must not be made.
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, BreakerError> {
        self.inner.try_acquire().map(|raw| OwnedPermit {
            inner: Arc::clone(&self.inner),
            raw: Some(raw),
        })
    }

    /// The instance name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// What the window holds now.
    #[must_use]
    pub fn counts(&self) -> WindowCounts {
        self.inner.counts()
    }

    /// The remaining open time, when the breaker is open.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.remaining_open()
    }

    /// A stream of this breaker's transitions from now on, in order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tower_breaker::{Breaker, State};
    ///
    /// let breaker = Breaker::builder().build().unwrap();
    /// let mut events = breaker.subscribe();
    /// breaker.force_open();
    /// let event = events.recv().await.unwrap();
    /// assert_eq!((event.from, event.to), (State::Closed, State::ForcedOpen));
    /// # }
    /// ```
    #[must_use]
    pub fn subscribe(&self) -> Transitions {
        self.inner.subscribe()
    }

    /// Rejects every call until [`reset`](Self::reset) (or another manual state).
    pub fn force_open(&self) {
        self.inner.manual(State::ForcedOpen);
    }

    /// Admits every call and records nothing until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.inner.manual(State::ForcedClosed);
    }

    /// Metrics only: admits every call and records it (window and metrics), but never trips,
    /// until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.inner.manual(State::Disabled);
    }

    /// Back to closed with an empty window and the open duration back at its base.
    pub fn reset(&self) {
        self.inner.manual(State::Closed);
    }

    /// A layer guarding a service with this breaker and the default [`HttpClassifier`].
    #[must_use]
    pub fn layer(&self) -> BreakerLayer<HttpClassifier> {
        BreakerLayer::new(self.clone())
    }
}

/// Permission to make one call, borrowed from a [`Breaker`]; see [`Breaker::try_acquire`].
#[must_use = "a permit records nothing unless its outcome is reported"]
pub struct Permit<'a> {
    inner: &'a Inner,
    raw: Option<RawPermit>,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("raw", &self.raw).finish()
    }
}

impl Permit<'_> {
    /// Records the call's class: `Success` is a success, `Transient` a failure (its
    /// `retry_after` may stretch the next open duration), `Permanent` as configured (ignored by
    /// default). When a slow-call rule is set, the time since the permit was acquired decides
    /// whether the call was slow.
    #[inline]
    pub fn record(mut self, class: Class) {
        if let Some(raw) = self.raw.take() {
            self.inner.record(raw, class);
        }
    }

    /// Records a success.
    #[inline]
    pub fn success(self) {
        self.record(Class::Success);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(Class::TRANSIENT);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.inner.release(raw);
        }
    }
}

/// Permission to make one call, owning a handle to its [`Breaker`]; see
/// [`Breaker::try_acquire_owned`].
#[must_use = "a permit records nothing unless its outcome is reported"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    raw: Option<RawPermit>,
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("raw", &self.raw)
            .finish()
    }
}

impl OwnedPermit {
    /// Records the call's class (see [`Permit::record`]).
    pub fn record(mut self, class: Class) {
        if let Some(raw) = self.raw.take() {
            self.inner.record(raw, class);
        }
    }

    /// Records a success.
    pub fn success(self) {
        self.record(Class::Success);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(Class::TRANSIENT);
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.inner.release(raw);
        }
    }
}

/// A breaker and a classifier, shared by a service's clones and held by its futures (one
/// reference count per call instead of two).
#[derive(Debug)]
pub(crate) struct Guarded<C> {
    pub(crate) breaker: Breaker,
    pub(crate) classifier: C,
}

/// The permit a response future holds.
#[derive(Debug)]
pub(crate) struct PermitGuard<C> {
    shared: Arc<Guarded<C>>,
    raw: Option<RawPermit>,
}

impl<C> Guarded<C> {
    // `always`, as `record` below and `Inner`'s `try_acquire` and `record`: with `inline`,
    // LLVM kept these out of line as soon as a program had breaker services over two different
    // inner types (the e2e bench has several), ~60 instructions more per call on the closed
    // path than with one (`breaker_probe`'s `padded-*` runs add the second).
    #[inline(always)]
    fn acquire(self: &Arc<Self>) -> Result<PermitGuard<C>, BreakerError> {
        let raw = self.breaker.inner.try_acquire()?;
        Ok(PermitGuard {
            shared: Arc::clone(self),
            raw: Some(raw),
        })
    }

    /// The one admission path of every service of the crate: with a permit, `inner` is called
    /// with `req` under it (a panic in the call is recorded as a failure); without, `inner` is
    /// never called and the response future answers the rejection (the error itself in client
    /// mode, a `503` in server mode).
    ///
    /// The service and the request are passed rather than a closure that calls one: 2–3
    /// instructions fewer per call under callgrind (`breaker_probe`).
    #[inline]
    pub(crate) fn admit<S, Req, A>(self: &Arc<Self>, inner: &mut S, req: Req) -> A
    where
        S: Service<Req>,
        A: Admission<S::Future, C>,
    {
        match self.acquire() {
            Ok(mut permit) => {
                // A `call` that panics is recorded as a failure (see `OnPanic`) before the
                // panic goes on. The permit stays where the response future will hold it.
                let armed = OnPanic::arm(Some(&mut permit));
                let future = inner.call(req);
                armed.disarm();
                A::called(future, Some(permit))
            }
            Err(rejected) => A::rejected(&self.breaker, rejected),
        }
    }
}

impl<C> PermitGuard<C> {
    /// Records the outcome (once: a second call records nothing). Takes `&mut self` so that the
    /// response future keeps the handle until it is dropped.
    #[inline(always)]
    pub(crate) fn record<Res, Err>(&mut self, outcome: Result<&Res, &Err>)
    where
        C: tower_fault::Classify<Res, Err>,
    {
        if self.raw.is_some() {
            // Classified before the permit is taken: a classifier that panics leaves the
            // permit to `Drop`, which frees its half-open slot.
            let class = self.shared.classifier.classify(outcome);
            if let Some(raw) = self.raw.take() {
                self.shared.breaker.inner.record(raw, class);
            }
        }
    }
}

impl<C> Drop for PermitGuard<C> {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.shared.breaker.inner.release(raw);
        }
    }
}

/// Records a failure on a permit if the inner service panics.
///
/// Armed around the inner service's `call` and each poll of its future, and disarmed as soon as
/// they return, so it is dropped armed only while a panic unwinds out of them. A panicking
/// upstream call is a failing call: an upstream that makes its client panic on every answer
/// must trip the breaker like one that answers 500, and a half-open probe that panics re-opens
/// it (rather than only freeing its permit, which would admit the next probe into the same
/// panic). The panic itself goes on unchanged to whoever polls the future. Outside a panic it
/// costs 3 instructions per call on the closed path (callgrind, a bare service behind a
/// count-window breaker): the permit is kept in memory while the inner service runs,
/// and disarming leaves the drop nothing to do. Unlike `catch_unwind`, it neither catches nor
/// re-throws the panic.
pub(crate) struct OnPanic<'a, C>(Option<&'a mut PermitGuard<C>>);

impl<'a, C> OnPanic<'a, C> {
    #[inline]
    pub(crate) fn arm(permit: Option<&'a mut PermitGuard<C>>) -> Self {
        Self(permit)
    }

    #[inline]
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<C> Drop for OnPanic<'_, C> {
    fn drop(&mut self) {
        if let Some(permit) = self.0.take()
            && let Some(raw) = permit.raw.take()
        {
            permit.shared.breaker.inner.record(raw, Class::TRANSIENT);
        }
    }
}
