//! Panics in the worker's delivery service, caught so a background worker never stops silently.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;

pub(crate) use crate::error::DeliveryPanicked;

impl DeliveryPanicked {
    /// From a panic's payload (`&str` and `String` payloads keep their text).
    pub(crate) fn from_payload(payload: &(dyn Any + Send)) -> Self {
        Self::new(panic_message(payload))
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// Runs `f`, turning a panic into [`DeliveryPanicked`].
///
/// `AssertUnwindSafe`: after a panic the worker only reads the error; the service that panicked
/// is used again for the next entry, as a tower service that returned an error would be.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, DeliveryPanicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| DeliveryPanicked::from_payload(&*payload))
}

pin_project! {
    /// A future whose panics while polled become [`DeliveryPanicked`].
    pub(crate) struct CatchPanic<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchPanic<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, DeliveryPanicked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch(|| inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panicked) => Poll::Ready(Err(panicked)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_text_of_str_and_string_payloads() {
        let e = catch(|| panic!("static text")).unwrap_err();
        assert_eq!(e.message(), "static text");
        let n = 7;
        let e = catch(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(e.to_string(), "the delivery service panicked: formatted 7");
        let e = catch(|| std::panic::panic_any(42_u32)).unwrap_err();
        assert_eq!(e.message(), "(a panic payload that is not a string)");
    }

    #[tokio::test]
    async fn a_future_that_panics_when_polled_is_an_error() {
        let result = CatchPanic::new(async {
            tokio::task::yield_now().await;
            panic!("mid-flight");
        })
        .await;
        assert_eq!(result.unwrap_err().message(), "mid-flight");
        assert_eq!(CatchPanic::new(async { 5 }).await.unwrap(), 5);
    }
}
