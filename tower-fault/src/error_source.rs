//! Viewing an error value as `&dyn Error` so its `source()` chain can be walked.

use std::error::Error;

/// An error the classifier can inspect: anything that can be viewed as `&(dyn Error + 'static)`.
///
/// Implemented for [`BoxError`](crate::BoxError) (what tower layers return), the errors of the
/// clients the suite wraps (hyper, hyper-util's legacy client, reqwest, `std::io`), tower's
/// timeout error, and the suite's own [`Rejected`](crate::Rejected). Implement it for your own
/// error type to classify it with [`HttpClassifier`](crate::HttpClassifier):
///
/// ```
/// use std::error::Error;
/// use tower_fault::AsError;
///
/// #[derive(Debug)]
/// struct MyError;
/// impl std::fmt::Display for MyError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.pad("my error") }
/// }
/// impl Error for MyError {}
/// impl AsError for MyError {
///     fn as_error(&self) -> &(dyn Error + 'static) { self }
/// }
/// ```
pub trait AsError {
    /// This error as a trait object.
    fn as_error(&self) -> &(dyn Error + 'static);
}

impl AsError for Box<dyn Error + Send + Sync + 'static> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error + 'static> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for dyn Error + Send + Sync + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for dyn Error + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl<E: AsError + ?Sized> AsError for &E {
    fn as_error(&self) -> &(dyn Error + 'static) {
        (**self).as_error()
    }
}

impl<E: AsError + ?Sized> AsError for std::sync::Arc<E> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        (**self).as_error()
    }
}

macro_rules! as_error_for {
    ($($ty:ty),* $(,)?) => {
        $(impl AsError for $ty {
            fn as_error(&self) -> &(dyn Error + 'static) {
                self
            }
        })*
    };
}

as_error_for!(
    std::io::Error,
    hyper::Error,
    hyper_util::client::legacy::Error,
    h2::Error,
    tower::timeout::error::Elapsed,
    tokio::time::error::Elapsed,
    crate::Rejected,
);

#[cfg(feature = "reqwest")]
as_error_for!(::reqwest::Error);

impl AsError for std::convert::Infallible {
    fn as_error(&self) -> &(dyn Error + 'static) {
        match *self {}
    }
}
