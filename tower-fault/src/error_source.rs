//! Viewing an error value as `&dyn Error` so its `source()` chain can be walked.

use std::error::Error;

/// An error the classifier can inspect: anything that can be viewed as `&(dyn Error + 'static)`.
///
/// Implemented for [`BoxError`](crate::BoxError) (what tower layers return), `std::io::Error`,
/// tower's and tokio's timeout errors, the suite's own [`Rejected`](crate::Rejected), and the
/// errors of the clients the suite wraps, each with the feature of its name: `hyper::Error`
/// (`hyper`, default), `h2::Error` (`h2`, default), hyper-util's legacy client error
/// (`hyper-util`) and `reqwest::Error` (`reqwest`). Implement it for your own error type to
/// classify it with [`HttpClassifier`](crate::HttpClassifier):
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be classified: it does not implement `tower_fault::AsError`",
    note = "a client's error type is classifiable with the tower-fault feature of its crate's name \
            (`hyper`, `h2`, `hyper-util`, `reqwest`); box it as a `tower_fault::BoxError`, or \
            implement `AsError` for your own error type"
)]
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
    tower::timeout::error::Elapsed,
    tokio::time::error::Elapsed,
    crate::Rejected,
);

#[cfg(feature = "hyper")]
as_error_for!(hyper::Error);
#[cfg(feature = "hyper-util")]
as_error_for!(hyper_util::client::legacy::Error);
#[cfg(feature = "h2")]
as_error_for!(h2::Error);
#[cfg(feature = "reqwest")]
as_error_for!(::reqwest::Error);

impl AsError for std::convert::Infallible {
    fn as_error(&self) -> &(dyn Error + 'static) {
        match *self {}
    }
}
