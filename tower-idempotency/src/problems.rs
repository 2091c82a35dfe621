//! The problem+json (RFC 9457) responses the layer answers with, one stable `type` each.

use std::time::Duration;

use http::{Response, StatusCode};
use http_body::Body;
use tower_fault::problem::Problem;

use crate::body::IdempotencyBody;

pub use tower_fault::problem::types::{
    IDEMPOTENCY_KEY_REUSED as KEY_REUSED, IDEMPOTENCY_STORE_UNAVAILABLE as STORE_UNAVAILABLE,
    INVALID_IDEMPOTENCY_KEY as INVALID_KEY, MISSING_IDEMPOTENCY_KEY as MISSING_KEY,
    MISSING_PRINCIPAL, REQUEST_IN_FLIGHT as IN_FLIGHT, REQUEST_TOO_LARGE,
    RESPONSE_NOT_REPLAYABLE as NOT_REPLAYABLE, UNREADABLE_BODY,
};

pub(crate) fn respond<B: Body>(problem: Problem) -> Response<IdempotencyBody<B>> {
    problem
        .into_response::<B>()
        .map(IdempotencyBody::from_layer)
}

pub(crate) fn missing_key(header: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        MISSING_KEY,
        "Idempotency key required",
    )
    .detail(format!("this endpoint requires an `{header}` header"))
}

pub(crate) fn invalid_key(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        INVALID_KEY,
        "Invalid idempotency key",
    )
    .detail(detail)
}

pub(crate) fn missing_principal() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        MISSING_PRINCIPAL,
        "Authentication required",
    )
    .detail("idempotent requests must identify their caller")
}

pub(crate) fn request_too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        REQUEST_TOO_LARGE,
        "Request body too large",
    )
    .detail(format!(
        "idempotent request bodies are limited to {limit} bytes"
    ))
}

pub(crate) fn unreadable_body() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        UNREADABLE_BODY,
        "Request body could not be read",
    )
}

pub(crate) fn in_flight(retry_after: Duration) -> Problem {
    Problem::new(StatusCode::CONFLICT, IN_FLIGHT, "Request in progress")
        .detail("a request with this idempotency key is still being processed")
        .retry_after(retry_after)
}

pub(crate) fn key_reused() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        KEY_REUSED,
        "Idempotency key reused",
    )
    .detail("this idempotency key was used for a different request (another body, route, method, header or credentials)")
}

pub(crate) fn not_replayable(status: StatusCode, limit: u64) -> Problem {
    Problem::new(StatusCode::CONFLICT, NOT_REPLAYABLE, "Response not replayable").detail(format!(
        "the request with this idempotency key was executed (status {}), but its response was larger than {limit} bytes and was not kept",
        status.as_u16()
    ))
}

/// The request ran and answered `status`, but its response body failed while it was read, so
/// there is nothing to replay; it is not run again.
pub(crate) fn body_failed(status: StatusCode) -> Problem {
    Problem::new(StatusCode::CONFLICT, NOT_REPLAYABLE, "Response not replayable").detail(format!(
        "the request with this idempotency key was executed (status {}), but its response body failed before it could be kept",
        status.as_u16()
    ))
}

/// The request ran and answered `status`, but its response body did not end within `limit`,
/// so it was not kept; it is not run again.
pub(crate) fn too_slow(status: StatusCode, limit: Duration) -> Problem {
    Problem::new(StatusCode::CONFLICT, NOT_REPLAYABLE, "Response not replayable").detail(format!(
        "the request with this idempotency key was executed (status {}), but its response body did not end within {limit:?} and was not kept",
        status.as_u16()
    ))
}

/// A record exists for the key but this server cannot read it (corrupt, or written by a newer
/// version during a rolling deploy): the request may have run, so it is not run again.
pub(crate) fn record_unreadable() -> Problem {
    Problem::new(StatusCode::CONFLICT, NOT_REPLAYABLE, "Response not replayable").detail(
        "a record exists for this idempotency key but could not be read; the request is not executed again",
    )
}

pub(crate) fn store_unavailable(retry_after: Duration) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        STORE_UNAVAILABLE,
        "Idempotency store unavailable",
    )
    .retry_after(retry_after)
}
