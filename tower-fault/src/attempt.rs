//! Where the attempts of one logical request went: the [`AttemptContext`] a retry layer puts on
//! retried requests, and the two ways an endpoint selector reports the endpoint that served an
//! attempt ([`ServedBy`] on a response, [`EndpointError`] around an error).
//!
//! The information flows with the request and its answer, never through shared state, so the
//! first attempt — the only one on the happy path — costs nothing: a request without an
//! `AttemptContext` is a first attempt with nothing tried, and a successful response carries no
//! `ServedBy`.

use std::{
    error::Error,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::BoxError;

/// Identifies an endpoint across attempts (failover assigns one per endpoint it manages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u64);

/// The attempt number and the endpoints tried so far, in the extensions of a *retried* request.
///
/// The retry layer inserts one into the request of every attempt after the first (a request
/// without one is a first attempt). An endpoint selector below it (failover) reads it to send a
/// retry to an endpoint not tried yet (Envoy's `previous_hosts` predicate), and reports the
/// endpoint each attempt went to with [`ServedBy`] / [`EndpointError`], from which the retry
/// layer builds the next context.
///
/// ```
/// use tower_fault::{AttemptContext, EndpointId};
///
/// let mut ctx = AttemptContext::new();
/// assert_eq!(ctx.attempt(), 1);
/// ctx.record_endpoint(EndpointId(7));
/// ctx.advance();
/// assert_eq!(ctx.attempt(), 2);
/// assert_eq!(ctx.resend_count(), 1);
/// assert!(ctx.was_tried(EndpointId(7)));
/// assert!(!ctx.was_tried(EndpointId(8)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptContext {
    attempt: u32,
    /// Short (one entry per attempt at most), so a linear scan beats any set.
    tried: Vec<EndpointId>,
}

impl Default for AttemptContext {
    fn default() -> Self {
        Self::new()
    }
}

impl AttemptContext {
    /// The context of a first attempt: nothing tried yet (allocates nothing).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            attempt: 1,
            tried: Vec::new(),
        }
    }

    /// The context of a request's attempts as a request carries it: its own if it has one,
    /// else a first attempt's.
    #[must_use]
    pub fn of<B>(req: &http::Request<B>) -> Self {
        req.extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(Self::new)
    }

    /// The attempt number, starting at 1.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many times this request has been sent before (`http.request.resend_count`).
    #[must_use]
    pub fn resend_count(&self) -> u32 {
        self.attempt - 1
    }

    /// Moves to the next attempt.
    pub fn advance(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
    }

    /// Records that an attempt went to `endpoint` (once: a repeat is ignored).
    pub fn record_endpoint(&mut self, endpoint: EndpointId) {
        if !self.tried.contains(&endpoint) {
            self.tried.push(endpoint);
        }
    }

    /// Whether an earlier attempt of this request went to `endpoint`.
    #[must_use]
    pub fn was_tried(&self, endpoint: EndpointId) -> bool {
        self.tried.contains(&endpoint)
    }

    /// The endpoints tried so far, in the order they were first tried.
    #[must_use]
    pub fn endpoints_tried(&self) -> &[EndpointId] {
        &self.tried
    }
}

/// The endpoint that answered an attempt with a response it counts as a failure, in that
/// response's extensions.
///
/// Failover inserts it into every response its classifier does not call a success (a 503, a
/// 429, a 404…: whichever a retry layer's own classifier may retry elsewhere), so a successful
/// response pays nothing for it. Errors from an endpoint carry the
/// same information as an [`EndpointError`]; [`ServedBy::of`] reads either.
///
/// ```
/// use tower_fault::{EndpointId, ServedBy};
///
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(ServedBy(EndpointId(3)));
/// assert_eq!(ServedBy::of(Ok::<_, &tower_fault::BoxError>(&res)), Some(EndpointId(3)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServedBy(pub EndpointId);

impl ServedBy {
    /// The endpoint that served an attempt, from a response's extensions ([`ServedBy`]) or an
    /// error's `source()` chain ([`EndpointError`]); `None` when no endpoint selector said.
    pub fn of<B, E>(result: Result<&http::Response<B>, &E>) -> Option<EndpointId>
    where
        E: crate::AsError + ?Sized,
    {
        match result {
            Ok(res) => res.extensions().get::<ServedBy>().map(|s| s.0),
            Err(err) => crate::find::<EndpointError>(err.as_error()).map(|e| e.endpoint),
        }
    }
}

/// Where an attempt that may be cancelled was sent: a slot shared by the clones of one value.
///
/// A cancelled attempt returns nothing, so [`ServedBy`] and [`EndpointError`] cannot say where
/// it went. A retry layer with a per-attempt timeout puts a `SentTo` in the attempt's request
/// extensions; an endpoint selector (failover) writes the endpoint into it as it sends the
/// request, and after a timeout the retry layer reads it back, so the next attempt avoids the
/// endpoint that did not answer. Only requests whose attempts can be cancelled carry one (it
/// costs an allocation and an extensions entry).
///
/// ```
/// use tower_fault::{EndpointId, SentTo};
///
/// let slot = SentTo::new();
/// let in_the_request = slot.clone();
/// assert_eq!(slot.get(), None);
/// in_the_request.record(EndpointId(4));
/// assert_eq!(slot.get(), Some(EndpointId(4)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SentTo(Arc<AtomicU64>);

impl SentTo {
    /// An empty slot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the attempt is being sent to `endpoint` (replacing an earlier record).
    pub fn record(&self, endpoint: EndpointId) {
        // Stored + 1 so that 0 means "nothing recorded" (failover's ids count up from 0 and
        // never come near u64::MAX, where this would saturate).
        self.0
            .store(endpoint.0.saturating_add(1), Ordering::Release);
    }

    /// The endpoint last recorded, if any.
    #[must_use]
    pub fn get(&self) -> Option<EndpointId> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(EndpointId(n - 1)),
        }
    }
}

/// An error an endpoint returned (from its readiness or its call), as an endpoint selector
/// passes it on: which endpoint, and the endpoint's own error as [`source()`](Error::source).
///
/// Classification reads through it ([`inspect`](crate::inspect) walks the source chain), so it
/// changes no decision; find the original error with [`EndpointError::inner`] or by walking the
/// chain.
///
/// ```
/// use std::error::Error;
/// use tower_fault::{EndpointError, EndpointId};
///
/// let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let err = EndpointError::new(EndpointId(1), "primary".into(), io.into());
/// assert_eq!(err.to_string(), "endpoint `primary` failed");
/// assert!(err.inner().downcast_ref::<std::io::Error>().is_some());
/// assert!(err.source().is_some());
/// ```
#[derive(Debug)]
pub struct EndpointError {
    endpoint: EndpointId,
    name: Arc<str>,
    source: BoxError,
}

impl EndpointError {
    /// Wraps the error `endpoint` (configured as `name`) returned.
    #[must_use]
    pub fn new(endpoint: EndpointId, name: Arc<str>, source: BoxError) -> Self {
        Self {
            endpoint,
            name,
            source,
        }
    }

    /// The endpoint's id.
    #[must_use]
    pub fn endpoint(&self) -> EndpointId {
        self.endpoint
    }

    /// The endpoint's configured name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint's own error.
    #[must_use]
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The endpoint's own error, owned.
    #[must_use]
    pub fn into_inner(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint `{}` failed", self.name)
    }
}

impl Error for EndpointError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_by_reads_the_error_chain_at_any_depth() {
        #[derive(Debug)]
        struct Outer(EndpointError);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = EndpointError::new(EndpointId(9), "b".into(), "boom".into());
        let err: BoxError = Box::new(Outer(inner));
        assert_eq!(
            ServedBy::of::<(), _>(Err(&err)),
            Some(EndpointId(9)),
            "found under a wrapper"
        );
        let plain: BoxError = "no endpoint".into();
        assert_eq!(ServedBy::of::<(), _>(Err(&plain)), None);
        assert_eq!(
            ServedBy::of(Ok::<_, &BoxError>(&http::Response::new(()))),
            None
        );
    }

    #[test]
    fn recording_is_idempotent_and_ordered() {
        let mut ctx = AttemptContext::new();
        for id in [2, 1, 2, 3, 1] {
            ctx.record_endpoint(EndpointId(id));
        }
        assert_eq!(
            ctx.endpoints_tried(),
            [EndpointId(2), EndpointId(1), EndpointId(3)]
        );
    }

    #[test]
    fn of_reads_the_request_or_defaults_to_a_first_attempt() {
        let mut req = http::Request::new(());
        assert_eq!(AttemptContext::of(&req), AttemptContext::new());
        let mut ctx = AttemptContext::new();
        ctx.advance();
        req.extensions_mut().insert(ctx.clone());
        assert_eq!(AttemptContext::of(&req).attempt(), 2);
    }
}
