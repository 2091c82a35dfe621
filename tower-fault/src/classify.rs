//! The [`Classify`] trait, the default [`HttpClassifier`] and closure classifiers.

use std::{error::Error, fmt, ops::RangeInclusive, sync::Arc, time::SystemTime};

use http::{HeaderMap, Response, StatusCode};

use crate::{AsError, Class, Delivery, ErrorKind, inspect, retry_after};

/// Decides the [`Class`] of a call's outcome.
///
/// Cheap, `&self`, and shared by clones: every layer of a stack can hold the same classifier.
pub trait Classify<Res, Err: ?Sized>: Clone + Send + Sync + 'static {
    /// Classifies a response or an error.
    fn classify(&self, outcome: Result<&Res, &Err>) -> Class;
}

/// The class a status or an error kind is configured to fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not a failure.
    Success,
    /// A failure worth retrying, counted against the upstream's health.
    Transient,
    /// A failure not worth retrying, ignored by health tracking.
    Permanent,
}

const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 999;
const STATUS_SLOTS: usize = (STATUS_MAX - STATUS_MIN + 1) as usize;

#[derive(Clone)]
struct Table {
    statuses: [Verdict; STATUS_SLOTS],
    /// Statuses whose transient verdict proves the request was not processed (429).
    not_processed: Vec<StatusCode>,
    /// Statuses whose `Retry-After` header is read (429, 503).
    retry_after_from: Vec<StatusCode>,
    kinds: [Verdict; ErrorKind::ALL.len()],
}

/// The default classifier of HTTP responses and client errors.
///
/// | outcome | class |
/// |---|---|
/// | 1xx, 2xx, 3xx | `Success` |
/// | 408, 429, 500, 502, 503, 504 | `Transient` (`Retry-After` read from 429 and 503; 429 is *not processed*) |
/// | every other 4xx, 501, 505 and above | `Permanent` |
/// | connect error, `REFUSED_STREAM`, a local [`Rejected`](crate::Rejected) | `Transient`, *not processed* |
/// | timeout, reset, incomplete message, unrecognised error | `Transient`, *possibly processed* |
/// | protocol (parse) error, body/decode error, invalid request | `Permanent` |
///
/// Every row can be moved with [`HttpClassifier::builder`]:
///
/// ```
/// use http::StatusCode;
/// use tower_fault::{ErrorKind, HttpClassifier, Verdict};
///
/// let classifier = HttpClassifier::builder()
///     .status(StatusCode::CONFLICT, Verdict::Transient)
///     .error_kind(ErrorKind::Timeout, Verdict::Permanent)
///     .build();
/// # let _ = classifier;
/// ```
///
/// Cloning is a reference-count increment; classifying never allocates.
#[derive(Clone)]
pub struct HttpClassifier {
    table: Arc<Table>,
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transient: Vec<u16> = (STATUS_MIN..=599)
            .filter(|s| self.status_verdict(*s) == Verdict::Transient)
            .collect();
        f.debug_struct("HttpClassifier")
            .field("transient_statuses", &transient)
            .field("kinds", &self.table.kinds)
            .finish_non_exhaustive()
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        HttpClassifier::builder().build()
    }
}

impl HttpClassifier {
    /// A builder starting from the default table.
    #[must_use]
    pub fn builder() -> HttpClassifierBuilder {
        HttpClassifierBuilder::new()
    }

    #[inline]
    fn status_verdict(&self, status: u16) -> Verdict {
        if (STATUS_MIN..=STATUS_MAX).contains(&status) {
            self.table.statuses[usize::from(status - STATUS_MIN)]
        } else {
            Verdict::Permanent
        }
    }

    /// Classifies a response by its status (and its `Retry-After` header where configured).
    #[must_use]
    #[inline] // every layer calls it on every response: a table lookup, inlined into the caller
    pub fn classify_status(&self, status: StatusCode, headers: &HeaderMap) -> Class {
        match self.status_verdict(status.as_u16()) {
            Verdict::Success => Class::Success,
            Verdict::Permanent => Class::Permanent,
            Verdict::Transient => self.classify_transient(status, headers),
        }
    }

    /// The delivery and `Retry-After` of a transient status (off the success path).
    fn classify_transient(&self, status: StatusCode, headers: &HeaderMap) -> Class {
        let delivery = if self.table.not_processed.contains(&status) {
            Delivery::NotProcessed
        } else {
            Delivery::MaybeProcessed
        };
        let retry_after = if self.table.retry_after_from.contains(&status) {
            retry_after::from_headers(headers, SystemTime::now())
        } else {
            None
        };
        Class::Transient {
            retry_after,
            delivery,
        }
    }

    /// Classifies an error by walking its `source()` chain (see [`inspect`]).
    #[must_use]
    pub fn classify_error(&self, err: &(dyn Error + 'static)) -> Class {
        let info = inspect(err);
        match self.table.kinds[info.kind.index()] {
            Verdict::Success => Class::Success,
            Verdict::Permanent => Class::Permanent,
            Verdict::Transient => Class::Transient {
                retry_after: info.retry_after,
                delivery: info.kind.delivery(),
            },
        }
    }
}

impl<B, E> Classify<Response<B>, E> for HttpClassifier
where
    E: AsError + ?Sized,
{
    #[inline]
    fn classify(&self, outcome: Result<&Response<B>, &E>) -> Class {
        match outcome {
            Ok(res) => self.classify_status(res.status(), res.headers()),
            Err(err) => self.classify_error(err.as_error()),
        }
    }
}

/// Builds an [`HttpClassifier`], starting from the default table.
#[derive(Clone)]
pub struct HttpClassifierBuilder {
    table: Table,
}

impl fmt::Debug for HttpClassifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifierBuilder")
            .finish_non_exhaustive()
    }
}

impl Default for HttpClassifierBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClassifierBuilder {
    /// The default table (see [`HttpClassifier`]).
    #[must_use]
    pub fn new() -> Self {
        let mut statuses = [Verdict::Permanent; STATUS_SLOTS];
        for status in STATUS_MIN..400 {
            statuses[usize::from(status - STATUS_MIN)] = Verdict::Success;
        }
        for status in [408, 429, 500, 502, 503, 504] {
            statuses[usize::from(status - STATUS_MIN)] = Verdict::Transient;
        }
        let mut kinds = [Verdict::Transient; ErrorKind::ALL.len()];
        for kind in [ErrorKind::Protocol, ErrorKind::Body, ErrorKind::Request] {
            kinds[kind.index()] = Verdict::Permanent;
        }
        Self {
            table: Table {
                statuses,
                not_processed: vec![StatusCode::TOO_MANY_REQUESTS],
                retry_after_from: vec![
                    StatusCode::TOO_MANY_REQUESTS,
                    StatusCode::SERVICE_UNAVAILABLE,
                ],
                kinds,
            },
        }
    }

    /// Puts one status in a class.
    #[must_use]
    pub fn status(mut self, status: StatusCode, verdict: Verdict) -> Self {
        self.table.statuses[usize::from(status.as_u16() - STATUS_MIN)] = verdict;
        self
    }

    /// Puts a range of statuses (e.g. `500..=599`) in a class. Codes outside 100..=999 are
    /// ignored.
    #[must_use]
    pub fn status_range(mut self, range: RangeInclusive<u16>, verdict: Verdict) -> Self {
        for status in range {
            if (STATUS_MIN..=STATUS_MAX).contains(&status) {
                self.table.statuses[usize::from(status - STATUS_MIN)] = verdict;
            }
        }
        self
    }

    /// Puts an error kind in a class.
    #[must_use]
    pub fn error_kind(mut self, kind: ErrorKind, verdict: Verdict) -> Self {
        self.table.kinds[kind.index()] = verdict;
        self
    }

    /// Declares that a transient `status` proves the request was not processed (429 by default).
    #[must_use]
    pub fn not_processed_status(mut self, status: StatusCode) -> Self {
        if !self.table.not_processed.contains(&status) {
            self.table.not_processed.push(status);
        }
        self
    }

    /// Reads `Retry-After` on `status` too (429 and 503 by default).
    #[must_use]
    pub fn retry_after_status(mut self, status: StatusCode) -> Self {
        if !self.table.retry_after_from.contains(&status) {
            self.table.retry_after_from.push(status);
        }
        self
    }

    /// The classifier.
    #[must_use]
    pub fn build(self) -> HttpClassifier {
        HttpClassifier {
            table: Arc::new(self.table),
        }
    }
}

/// A classifier made of a closure; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F> {
    f: F,
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

/// A classifier from a closure over `Result<&Res, &Err>`.
///
/// Capture an [`HttpClassifier`] to fall back on the default table:
///
/// ```
/// use http::Response;
/// use tower_fault::{BoxError, Class, Classify, HttpClassifier, classify_fn};
///
/// let default = HttpClassifier::default();
/// let classifier = classify_fn(move |outcome: Result<&Response<()>, &BoxError>| match outcome {
///     Ok(res) if res.headers().contains_key("x-try-later") => Class::TRANSIENT,
///     other => default.classify(other),
/// });
/// let res = Response::builder().header("x-try-later", "1").body(()).unwrap();
/// assert!(classifier.classify(Ok(&res)).is_transient());
/// ```
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn { f }
}

impl<Res, Err, F> Classify<Res, Err> for ClassifyFn<F>
where
    Err: ?Sized,
    F: Fn(Result<&Res, &Err>) -> Class + Clone + Send + Sync + 'static,
{
    fn classify(&self, outcome: Result<&Res, &Err>) -> Class {
        (self.f)(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::BoxError;

    fn status(classifier: &HttpClassifier, code: u16) -> Class {
        classifier.classify_status(StatusCode::from_u16(code).unwrap(), &HeaderMap::new())
    }

    #[test]
    fn default_status_table() {
        let c = HttpClassifier::default();
        for code in [100, 200, 201, 204, 301, 304, 399] {
            assert_eq!(status(&c, code), Class::Success, "{code}");
        }
        for code in [408, 500, 502, 503, 504] {
            assert_eq!(status(&c, code), Class::TRANSIENT, "{code}");
        }
        assert_eq!(status(&c, 429), Class::NOT_PROCESSED);
        for code in [
            400, 401, 403, 404, 409, 413, 422, 451, 499, 501, 505, 511, 599, 999,
        ] {
            assert_eq!(status(&c, code), Class::Permanent, "{code}");
        }
    }

    #[test]
    fn retry_after_read_from_429_and_503_only() {
        let c = HttpClassifier::default();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        let three = Some(Duration::from_secs(3));
        assert_eq!(
            c.classify_status(StatusCode::TOO_MANY_REQUESTS, &headers)
                .retry_after(),
            three
        );
        assert_eq!(
            c.classify_status(StatusCode::SERVICE_UNAVAILABLE, &headers)
                .retry_after(),
            three
        );
        assert_eq!(
            c.classify_status(StatusCode::BAD_GATEWAY, &headers)
                .retry_after(),
            None
        );
    }

    #[test]
    fn builder_moves_rows() {
        let c = HttpClassifier::builder()
            .status(StatusCode::CONFLICT, Verdict::Transient)
            .status(StatusCode::SERVICE_UNAVAILABLE, Verdict::Permanent)
            .status_range(520..=530, Verdict::Transient)
            .not_processed_status(StatusCode::CONFLICT)
            .retry_after_status(StatusCode::BAD_GATEWAY)
            .error_kind(ErrorKind::Timeout, Verdict::Permanent)
            .build();
        assert_eq!(status(&c, 409), Class::NOT_PROCESSED);
        assert_eq!(status(&c, 503), Class::Permanent);
        assert_eq!(status(&c, 525), Class::TRANSIENT);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
        assert_eq!(
            c.classify_status(StatusCode::BAD_GATEWAY, &headers)
                .retry_after(),
            Some(Duration::from_secs(1))
        );
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(
            Classify::<Response<()>, BoxError>::classify(&c, Err(&elapsed)),
            Class::Permanent
        );
    }

    #[test]
    fn error_classes() {
        let c = HttpClassifier::default();
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let class = Classify::<Response<()>, BoxError>::classify(&c, Err(&refused));
        assert_eq!(class, Class::NOT_PROCESSED);
        let reset: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(
            Classify::<Response<()>, BoxError>::classify(&c, Err(&reset)),
            Class::TRANSIENT
        );
        let other: BoxError = "something odd".into();
        assert_eq!(
            Classify::<Response<()>, BoxError>::classify(&c, Err(&other)),
            Class::TRANSIENT
        );
    }
}
