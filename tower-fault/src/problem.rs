//! RFC 9457 `application/problem+json` responses for the layers' server modes.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::{body::ResponseBody, retry_after};

/// The media type of problem details.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem, rendered as a response.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use tower_fault::problem::Problem;
///
/// let res = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "https://example.dev/problems/open", "Circuit open")
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

    /// The JSON document.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert("type".into(), self.kind.into());
        doc.insert("title".into(), self.title.into());
        doc.insert("status".into(), self.status.as_u16().into());
        if let Some(detail) = &self.detail {
            doc.insert("detail".into(), detail.as_str().into());
        }
        serde_json::Value::Object(doc).to_string()
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
