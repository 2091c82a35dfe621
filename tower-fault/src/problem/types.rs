//! Every problem `type` URI of the suite, in one place.
//!
//! An RFC 9457 problem's `type` identifies the kind of problem; dereferenced, it should explain
//! it to a human. Each constant here is the address of its own page in this crate's
//! documentation on docs.rs (`…/tower_fault/problem/types/constant.<NAME>.html`), and its doc
//! comment is that explanation: the status it comes with, what happened, and what a client
//! should do. A constant is never renamed, so its URI stays valid.
//!
//! ```
//! use tower_fault::problem::types;
//!
//! assert_eq!(
//!     types::BREAKER_OPEN,
//!     "https://docs.rs/tower-fault/latest/tower_fault/problem/types/constant.BREAKER_OPEN.html"
//! );
//! assert!(types::ALL.contains(&types::NO_HEALTHY_ENDPOINT));
//! ```

/// Defines each constant as the docs.rs address of its own page, and [`ALL`].
macro_rules! problem_types {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        $(
            $(#[doc = $doc])*
            pub const $name: &str = concat!(
                "https://docs.rs/tower-fault/latest/tower_fault/problem/types/constant.",
                stringify!($name),
                ".html"
            );
        )*

        /// Every problem type above.
        pub const ALL: &[&str] = &[$($name),*];

        #[cfg(test)]
        const NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

problem_types! {
    /// `503 Service Unavailable`: a circuit breaker is open (tower-breaker's server mode).
    ///
    /// Calls to what the breaker protects have been failing, so it refuses requests for a
    /// while instead of adding load. `Retry-After` gives the remaining open time (plus a little
    /// jitter); retry after it. The `detail` names the breaker.
    BREAKER_OPEN,

    /// `503 Service Unavailable`: no upstream endpoint is healthy (tower-failover's server mode).
    ///
    /// Every endpoint is failing its health checks, ejected after failures, or held out by its
    /// own breaker. `Retry-After`, when present, is when the first of them may return.
    NO_HEALTHY_ENDPOINT,

    /// `400 Bad Request`: this endpoint requires an `Idempotency-Key` header and the request
    /// has none (tower-idempotency with `require_key`). Send one unique key per logical
    /// request, the same on every retry.
    MISSING_IDEMPOTENCY_KEY,

    /// `400 Bad Request`: the `Idempotency-Key` header is malformed or appears more than once
    /// (tower-idempotency). A key is 1–255 printable ASCII characters, as an RFC 8941 string
    /// (`"order-42"`) or bare (`order-42`); the `detail` says what is wrong.
    INVALID_IDEMPOTENCY_KEY,

    /// `401 Unauthorized`: an idempotent request must identify its caller and this one does
    /// not (tower-idempotency with `require_principal`). Authenticate and send it again.
    MISSING_PRINCIPAL,

    /// `413 Content Too Large`: the request body is over the cap the layer buffers
    /// (tower-idempotency's `max_request_bytes`, tower-redrive's `max_body_bytes`). The request
    /// was not executed; sending it again unchanged gets the same answer.
    REQUEST_TOO_LARGE,

    /// `400 Bad Request`: the request body could not be read (the client's stream failed or
    /// ended early) by a layer that buffers it (tower-idempotency, tower-redrive). The request
    /// was not executed.
    UNREADABLE_BODY,

    /// `409 Conflict`: a request with this idempotency key is still being executed
    /// (tower-idempotency). Retry after `Retry-After` to get its response.
    REQUEST_IN_FLIGHT,

    /// `422 Unprocessable Content`: this idempotency key was used for a different request
    /// (another body, route, method, bound header, or — without an application principal —
    /// other credentials) (tower-idempotency). Use a new key for a new request.
    IDEMPOTENCY_KEY_REUSED,

    /// `409 Conflict`: the request with this idempotency key was executed, but its response
    /// could not be kept (too large, too slow, its body failed, or its record is unreadable)
    /// (tower-idempotency). It is not executed again; the `detail` says what happened and the
    /// status it answered.
    RESPONSE_NOT_REPLAYABLE,

    /// `503 Service Unavailable`: the idempotency store cannot be reached and the layer fails
    /// closed rather than risk a second execution (tower-idempotency). Retry after
    /// `Retry-After` with the same key.
    IDEMPOTENCY_STORE_UNAVAILABLE,

    /// `503 Service Unavailable`: the request failed transiently upstream and could not be
    /// queued for a later delivery (tower-redrive's gateway). The response carries the
    /// `Idempotency-Key` the request was stored under, if it was: retry with it after
    /// `Retry-After`, and a server with an idempotency layer executes it once either way.
    NOT_QUEUED,

    /// `502 Bad Gateway`: the upstream failed with a permanent error, not worth re-driving, or
    /// the client stack could not become ready (tower-redrive's gateway). The `detail`
    /// describes the error.
    UPSTREAM_FAILED,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each URI is the docs.rs page of its constant: this module's path, then the name.
    #[test]
    fn every_uri_is_the_page_of_its_constant() {
        let module = module_path!().replace("::", "/");
        let module = module.trim_end_matches("/tests");
        let base = format!(
            "https://docs.rs/{}/latest/{module}/",
            env!("CARGO_PKG_NAME")
        );
        assert_eq!(ALL.len(), NAMES.len());
        for (uri, name) in ALL.iter().zip(NAMES) {
            assert_eq!(*uri, format!("{base}constant.{name}.html"));
        }
    }

    #[test]
    fn uris_are_unique() {
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len());
    }
}
