//! What the layer and the worker read from one attempt's outcome: a short description for the
//! attempt history and logs, and the server's `Retry-After`.

use std::time::Duration;

use http::Response;
use tower_fault::BoxError;

use crate::{clock::Timestamp, entry::truncate};

/// The longest description kept, in bytes: an error chain can be long, and every attempt's is
/// stored in the entry's history.
const MAX_DESCRIPTION: usize = 1_000;

/// A short description of an outcome for the attempt history: the status line, or the error
/// and its sources.
pub(crate) fn describe<ResB>(result: &Result<Response<ResB>, BoxError>) -> String {
    match result {
        Ok(res) => res.status().to_string(),
        Err(e) => describe_error(&**e),
    }
}

/// An error and its sources on one line, at most [`MAX_DESCRIPTION`] bytes.
pub(crate) fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = tower_fault::DisplayChain(e).to_string();
    truncate(&mut out, MAX_DESCRIPTION);
    out
}

/// The server's `Retry-After` as the classifier reported it, with an HTTP-date read against
/// `now` — the layer's or the worker's own clock — instead of the system clock the classifier
/// reads it against. The two differ only under an injected clock (tests, replays), where a date
/// read against the system clock would be far in the past or the future.
pub(crate) fn retry_after_at<ResB>(
    hint: Option<Duration>,
    result: &Result<Response<ResB>, BoxError>,
    now: Timestamp,
) -> Option<Duration> {
    let hint = hint?;
    let Ok(res) = result else {
        return Some(hint);
    };
    Some(
        tower_fault::retry_after::from_headers(res.headers(), now.to_system_time()).unwrap_or(hint),
    )
}
