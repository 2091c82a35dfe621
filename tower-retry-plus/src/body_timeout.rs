//! [`BodyTimeoutLayer`]: an opt-in bound on the time a response body takes to arrive.
//!
//! The retry layer's deadline ends when the response head is returned; a body that stalls
//! after its head would hold a caller reading it forever. Put this layer outside the retry
//! layer to bound reading the body of the response the caller gets.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_fault::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BodyTimedOut, ConfigError};

/// Wraps every response body in a [`TimeoutBody`] that fails with [`BodyTimedOut`] once
/// `timeout` has passed since the response head was returned.
///
/// The time counts from the head to the body's end, including any time the caller takes
/// before reading it: a bound on how long a response can hold the caller, not an idle timeout
/// between frames (a body that trickles one byte a second is ended too).
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_retry_plus::{BodyTimeoutLayer, RetryLayer};
///
/// # fn stack<S>(client: S) -> impl Sized {
/// ServiceBuilder::new()
///     .layer(BodyTimeoutLayer::new(Duration::from_secs(30)).expect("a valid timeout"))
///     .layer(RetryLayer::default())
///     .service(client)
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeoutLayer {
    timeout: Duration,
}

impl BodyTimeoutLayer {
    /// Bodies get `timeout` from their response head to their end. `Duration::MAX` is no limit.
    ///
    /// # Errors
    /// A zero timeout (every body that is not complete at once would fail).
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::for_field(
                "body timeout",
                "timeout",
                "must be longer than zero",
            ));
        }
        Ok(Self { timeout })
    }

    /// The time a body gets from its response head to its end.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for BodyTimeoutLayer {
    type Service = BodyTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`BodyTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct BodyTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> BodyTimeout<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the layer, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, ResB> Service<Req> for BodyTimeout<S>
where
    S: Service<Req, Response = Response<ResB>>,
{
    type Response = Response<TimeoutBody<ResB>>;
    type Error = S::Error;
    type Future = BodyTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        BodyTimeoutFuture {
            inner: self.inner.call(req),
            timeout: self.timeout,
        }
    }
}

pin_project! {
    /// The response future of [`BodyTimeout`]: the inner future, whose response body is wrapped
    /// when the head arrives.
    pub struct BodyTimeoutFuture<F> {
        #[pin]
        inner: F,
        timeout: Duration,
    }
}

impl<F> fmt::Debug for BodyTimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyTimeoutFuture")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<F, ResB, E> Future for BodyTimeoutFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<TimeoutBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let timeout = *this.timeout;
        let res = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(res.map(|body| TimeoutBody::new(body, timeout))))
    }
}

pin_project! {
    /// A body that fails with [`BodyTimedOut`] once its time is up, counted from when it was
    /// made (by [`BodyTimeoutLayer`]: when the response head was returned).
    ///
    /// The time is checked whenever the body waits for data, so a body that is always ready
    /// (the caller reading as fast as it arrives) is never cut, and one that waits is cut at
    /// its time. After the error, the body ends.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_retry_plus::TimeoutBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = TimeoutBody::new(Full::new(Bytes::from_static(b"hi")), Duration::from_secs(5));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
    /// # }
    /// ```
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        deadline: Instant,
        // Boxed and made only when the body first waits: a `Sleep` is 112 bytes, and a body
        // that is complete when it arrives (most small ones) never needs one.
        sleep: Option<Pin<Box<Sleep>>>,
        timed_out: bool,
    }
}

impl<B> TimeoutBody<B> {
    /// Wraps `body`, which then has `timeout` from now to its end (`Duration::MAX`: no limit).
    pub fn new(body: B, timeout: Duration) -> Self {
        Self {
            inner: body,
            deadline: tower_fault::time::saturating_after(Instant::now(), timeout),
            sleep: None,
            timed_out: false,
        }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for TimeoutBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("inner", &self.inner)
            .field("deadline", &self.deadline)
            .field("timed_out", &self.timed_out)
            .finish_non_exhaustive()
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            *this.timed_out = true;
            return Poll::Ready(Some(Err(BodyTimedOut::new().into())));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = *this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    *this.timed_out = true;
                    return Poll::Ready(Some(Err(BodyTimedOut::new().into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.timed_out {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// Frames `"a"`, then `"b"` after 1 s, then `"c"` after 2 s more.
    fn trickle() -> impl Body<Data = Bytes, Error = Infallible> {
        let frames = futures_util::stream::unfold(0u32, |n| async move {
            let (wait, data) = match n {
                0 => (0, "a"),
                1 => (1, "b"),
                2 => (2, "c"),
                _ => return None,
            };
            tokio::time::sleep(Duration::from_secs(wait)).await;
            Some((Ok(Frame::data(Bytes::from_static(data.as_bytes()))), n + 1))
        });
        StreamBody::new(frames)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_is_cut_at_its_time_and_then_ends() {
        let start = Instant::now();
        let mut body = std::pin::pin!(TimeoutBody::new(trickle(), Duration::from_millis(2_500)));
        let frame = |f: Frame<Bytes>| f.into_data().unwrap();
        assert_eq!(frame(body.frame().await.unwrap().unwrap()), "a");
        assert_eq!(frame(body.frame().await.unwrap().unwrap()), "b");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyTimedOut>(), "{err}");
        assert_eq!(start.elapsed(), Duration::from_millis(2_500));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_within_its_time_is_untouched() {
        let body = TimeoutBody::new(trickle(), Duration::from_millis(3_500));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        let body = TimeoutBody::new(trickle(), Duration::MAX);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }

    #[test]
    fn a_zero_timeout_is_refused() {
        let err = BodyTimeoutLayer::new(Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("longer than zero"), "{err}");
    }
}
