//! The attempt context kept in request extensions: which attempt this is, and which endpoints
//! this logical request has already been sent to.

use std::sync::{Arc, Mutex, PoisonError};

/// Identifies an endpoint across attempts (failover assigns one per endpoint it manages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u64);

/// Per-logical-request context, stored in `http::Request::extensions`.
///
/// The retry layer inserts one when it first sees a request and advances it before every
/// attempt; every attempt's request carries a clone that *shares* the list of endpoints tried, so
/// a layer below (failover) can record where an attempt went and, on the next attempt, pick an
/// endpoint not yet tried (Envoy's `previous_hosts` predicate).
///
/// ```
/// use tower_fault::{AttemptContext, EndpointId};
///
/// let mut ctx = AttemptContext::new();
/// assert_eq!(ctx.attempt(), 1);
/// let copy_for_attempt = ctx.clone();
/// copy_for_attempt.record_endpoint(EndpointId(7));
/// ctx.advance();
/// assert_eq!(ctx.attempt(), 2);
/// assert!(ctx.was_tried(EndpointId(7)));
/// ```
#[derive(Debug, Clone)]
pub struct AttemptContext {
    attempt: u32,
    tried: Arc<Mutex<Vec<EndpointId>>>,
}

impl Default for AttemptContext {
    fn default() -> Self {
        Self::new()
    }
}

impl AttemptContext {
    /// The context of a first attempt.
    #[must_use]
    pub fn new() -> Self {
        Self {
            attempt: 1,
            tried: Arc::default(),
        }
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

    /// Records that an attempt went to `endpoint` (visible to every clone).
    pub fn record_endpoint(&self, endpoint: EndpointId) {
        // The lock is held for a push onto a short list, once per attempt that reaches an
        // endpoint selector; a poisoned lock still holds a valid list.
        let mut tried = self.tried.lock().unwrap_or_else(PoisonError::into_inner);
        if !tried.contains(&endpoint) {
            tried.push(endpoint);
        }
    }

    /// Whether an earlier attempt of this request went to `endpoint`.
    #[must_use]
    pub fn was_tried(&self, endpoint: EndpointId) -> bool {
        self.tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&endpoint)
    }

    /// The endpoints tried so far, in order.
    #[must_use]
    pub fn endpoints_tried(&self) -> Vec<EndpointId> {
        self.tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
