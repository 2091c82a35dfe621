//! RFC 9457 `application/problem+json` responses for the layers' server modes.
//!
//! [`Problem`] builds the response; [`types`] holds the `type` URI of every problem the suite
//! answers with.

use std::{fmt::Write as _, time::Duration};

use http::{HeaderValue, Response, StatusCode, header};

use crate::{body::ResponseBody, retry_after};

mod json;
pub mod types;

/// The media type of problem details.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem, rendered as a response.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use tower_fault::problem::Problem;
///
/// use tower_fault::problem::types;
///
/// let res = Problem::new(StatusCode::SERVICE_UNAVAILABLE, types::BREAKER_OPEN, "Circuit open")
///     .detail("the upstream is failing")
///     .retry_after(Duration::from_millis(2500))
///     .into_response::<http_body_util::Empty<bytes::Bytes>>();
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()["retry-after"], "3");
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: Option<String>,
    retry_after: Option<Duration>,
}

impl Problem {
    /// A problem with a status, a stable `type` URI and a short human title.
    #[must_use]
    pub const fn new(status: StatusCode, kind: &'static str, title: &'static str) -> Self {
        Self {
            status,
            kind,
            title,
            detail: None,
            retry_after: None,
        }
    }

    /// A human-readable explanation of this occurrence.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a `Retry-After` header (whole seconds, rounded up).
    #[must_use]
    pub const fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The status.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON document: `type`, `title`, `status` and, when set, `detail`.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_fault::problem::Problem;
    ///
    /// let problem = Problem::new(StatusCode::CONFLICT, "https://example.dev/p", "Busy")
    ///     .detail("key \"a\" is in use");
    /// assert_eq!(
    ///     problem.to_json(),
    ///     r#"{"type":"https://example.dev/p","title":"Busy","status":409,"detail":"key \"a\" is in use"}"#
    /// );
    /// ```
    #[must_use]
    pub fn to_json(&self) -> String {
        let detail_len = self.detail.as_ref().map_or(0, |d| d.len() + 12);
        let mut doc = String::with_capacity(self.kind.len() + self.title.len() + detail_len + 40);
        doc.push_str("{\"type\":");
        json::push_string(&mut doc, self.kind);
        doc.push_str(",\"title\":");
        json::push_string(&mut doc, self.title);
        // Writing to a `String` cannot fail.
        let _ = write!(doc, ",\"status\":{}", self.status.as_u16());
        if let Some(detail) = &self.detail {
            doc.push_str(",\"detail\":");
            json::push_string(&mut doc, detail);
        }
        doc.push('}');
        doc
    }

    /// The response, with a body type that can stand beside an inner service's body `B`.
    #[must_use]
    pub fn into_response<B>(self) -> Response<ResponseBody<B>> {
        let mut res = Response::new(ResponseBody::full(self.to_json()));
        *res.status_mut() = self.status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(delay) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, retry_after::header_value(delay));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(problem: &Problem) -> serde_json::Value {
        serde_json::from_str(&problem.to_json()).expect("valid JSON")
    }

    #[test]
    fn the_document_has_every_member() {
        let problem = Problem::new(StatusCode::CONFLICT, types::REQUEST_IN_FLIGHT, "In flight")
            .detail("key \"k\\1\"\n\tis busy");
        assert_eq!(
            parse(&problem),
            serde_json::json!({
                "type": types::REQUEST_IN_FLIGHT,
                "title": "In flight",
                "status": 409,
                "detail": "key \"k\\1\"\n\tis busy",
            })
        );
        let bare = Problem::new(StatusCode::BAD_GATEWAY, types::UPSTREAM_FAILED, "Upstream");
        assert_eq!(
            bare.to_json(),
            format!(
                r#"{{"type":"{}","title":"Upstream","status":502}}"#,
                types::UPSTREAM_FAILED
            )
        );
    }

    #[test]
    fn the_response_carries_the_document() {
        let res = Problem::new(StatusCode::SERVICE_UNAVAILABLE, types::BREAKER_OPEN, "Open")
            .detail("payments")
            .retry_after(Duration::from_millis(1))
            .into_response::<()>();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        let ResponseBody::Full { data: Some(body) } = res.into_body() else {
            panic!("a problem has a full body");
        };
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["detail"], "payments");
    }

    proptest! {
        /// Whatever a detail holds (quotes, backslashes, control characters, any Unicode), the
        /// document is valid JSON and reads back the same.
        #[test]
        fn any_detail_reads_back(detail in any::<String>(), status in 400u16..600) {
            let status = StatusCode::from_u16(status).unwrap();
            let problem = Problem::new(status, types::NOT_QUEUED, "Not queued").detail(detail.clone());
            let doc = parse(&problem);
            prop_assert_eq!(doc["detail"].as_str(), Some(detail.as_str()));
            prop_assert_eq!(doc["status"].as_u64(), Some(u64::from(status.as_u16())));
            prop_assert_eq!(doc["type"].as_str(), Some(types::NOT_QUEUED));
            prop_assert_eq!(doc.as_object().map(serde_json::Map::len), Some(4));
        }
    }
}
