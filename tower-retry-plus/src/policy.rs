//! What the layer decides per request: method safety, per-request overrides, and the
//! [`RetryInfo`] it reports.

use std::time::Duration;

use http::Method;

/// Whether a method is idempotent (RFC 9110 §9.2.2): sending it twice has the effect of sending
/// it once, so every transient failure may be retried.
///
/// ```
/// use http::Method;
/// use tower_retry_plus::is_idempotent;
///
/// assert!(is_idempotent(&Method::PUT));
/// assert!(!is_idempotent(&Method::POST));
/// ```
#[must_use]
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Per-request settings that override the layer's, read from the request's extensions.
///
/// ```
/// use tower_retry_plus::RetryOverride;
///
/// let mut req = http::Request::get("http://example.com/").body(()).unwrap();
/// req.extensions_mut().insert(RetryOverride::max_attempts(2));
/// let mut other = http::Request::post("http://example.com/pay").body(()).unwrap();
/// other.extensions_mut().insert(RetryOverride::disabled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOverride {
    max_attempts: Option<u32>,
}

impl RetryOverride {
    /// Send this request once, never retry it.
    #[must_use]
    pub const fn disabled() -> Self {
        Self {
            max_attempts: Some(1),
        }
    }

    /// Make at most `n` attempts (counting the first) for this request; 0 is treated as 1.
    #[must_use]
    pub const fn max_attempts(n: u32) -> Self {
        Self {
            max_attempts: Some(if n == 0 { 1 } else { n }),
        }
    }

    /// `true` if this override disables retries.
    #[must_use]
    pub const fn is_disabled(&self) -> bool {
        matches!(self.max_attempts, Some(1))
    }

    pub(crate) fn attempts(this: Option<&Self>, default: u32) -> u32 {
        this.and_then(|o| o.max_attempts).unwrap_or(default)
    }
}

/// Why the layer stopped and returned what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryOutcome {
    /// The last attempt succeeded.
    Success,
    /// The last attempt failed permanently (never retried).
    Permanent,
    /// Transient failures until `max_attempts` ran out.
    Exhausted,
    /// A transient failure that may have been processed, of a request whose method is not
    /// idempotent and that carries no `Idempotency-Key`: retrying could duplicate its effect.
    UnsafeMethod,
    /// The retry budget refused the retry.
    BudgetExhausted,
    /// The deadline (or `max_retry_after`) left no time for another attempt.
    Deadline,
    /// The request body could not be replayed (larger than the replay limit, or it failed).
    NotReplayable,
    /// A local layer (a circuit breaker, failover with no healthy endpoint) rejected the request
    /// with a hint longer than
    /// [`max_local_rejection_wait`](crate::RetryLayerBuilder::max_local_rejection_wait): the
    /// rejection is returned at once rather than blocking the caller.
    Rejected,
}

impl RetryOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [RetryOutcome; 8] = [
        RetryOutcome::Success,
        RetryOutcome::Permanent,
        RetryOutcome::Exhausted,
        RetryOutcome::UnsafeMethod,
        RetryOutcome::BudgetExhausted,
        RetryOutcome::Deadline,
        RetryOutcome::NotReplayable,
        RetryOutcome::Rejected,
    ];

    /// The `outcome` label of `retry_requests_total`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RetryOutcome::Success => "success",
            RetryOutcome::Permanent => "permanent",
            RetryOutcome::Exhausted => "exhausted",
            RetryOutcome::UnsafeMethod => "unsafe_method",
            RetryOutcome::BudgetExhausted => "budget_exhausted",
            RetryOutcome::Deadline => "deadline",
            RetryOutcome::NotReplayable => "not_replayable",
            RetryOutcome::Rejected => "rejected",
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// What the retry layer did for a request, in the final response's extensions whenever it did
/// anything: retried, or returned an outcome other than [`RetryOutcome::Success`].
///
/// A response its first attempt answered successfully carries none — the happy path then
/// allocates nothing for it — and [`RetryInfo::of`] reads that as [`RetryInfo::FIRST_ATTEMPT`].
///
/// ```
/// # use std::time::Duration;
/// # use tower_retry_plus::RetryInfo;
/// # let res = http::Response::new(());
/// let info = RetryInfo::of(&res);
/// println!("{} attempts, {:?} spent waiting", info.attempts, info.total_delay);
/// assert_eq!(info, RetryInfo::FIRST_ATTEMPT);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryInfo {
    /// Attempts made, counting the first.
    pub attempts: u32,
    /// Time spent sleeping between attempts.
    pub total_delay: Duration,
    /// Why this response was returned.
    pub outcome: RetryOutcome,
}

impl RetryInfo {
    /// A success on the first attempt: what a response without a `RetryInfo` means.
    pub const FIRST_ATTEMPT: Self = Self {
        attempts: 1,
        total_delay: Duration::ZERO,
        outcome: RetryOutcome::Success,
    };

    /// What the retry layer did for the request `res` answers: its `RetryInfo`, or
    /// [`RetryInfo::FIRST_ATTEMPT`] if it has none (only meaningful for a response that came
    /// through a retry layer).
    #[must_use]
    pub fn of<B>(res: &http::Response<B>) -> Self {
        res.extensions()
            .get::<Self>()
            .copied()
            .unwrap_or(Self::FIRST_ATTEMPT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_table() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [
            Method::POST,
            Method::PATCH,
            Method::CONNECT,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn overrides() {
        assert_eq!(RetryOverride::attempts(None, 4), 4);
        assert_eq!(
            RetryOverride::attempts(Some(&RetryOverride::disabled()), 4),
            1
        );
        assert_eq!(
            RetryOverride::attempts(Some(&RetryOverride::max_attempts(0)), 4),
            1
        );
        assert_eq!(
            RetryOverride::attempts(Some(&RetryOverride::max_attempts(7)), 4),
            7
        );
        assert!(RetryOverride::disabled().is_disabled());
    }

    #[test]
    fn outcome_labels_are_distinct() {
        let labels: std::collections::HashSet<_> =
            RetryOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), RetryOutcome::ALL.len());
        for (i, o) in RetryOutcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
