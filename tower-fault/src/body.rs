//! A response body that is either the inner service's body or one produced by a layer.
//!
//! Layers with a server mode (breaker, failover) answer some requests themselves (a 503
//! problem). Their response type is `Response<ResponseBody<B>>`, so the inner service's body
//! type passes through untouched and without boxing. (Idempotency, whose own answers are
//! replayed responses as well as problems, has a body type of its own, `IdempotencyBody`.)

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The inner body, or a complete body held in memory.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Empty};
    /// use tower_fault::body::ResponseBody;
    ///
    /// # tokio_test_block_on(async {
    /// let body: ResponseBody<Empty<Bytes>> = ResponseBody::full(Bytes::from_static(b"hi"));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    // pin-project-lite cannot carry docs on variant fields; the variants are documented.
    #[allow(missing_docs)]
    #[project = ResponseBodyProj]
    #[derive(Debug)]
    pub enum ResponseBody<B> {
        /// The inner service's body.
        Inner {
            #[pin]
            body: B,
        },
        /// A body produced by the layer.
        Full {
            data: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub const fn inner(body: B) -> Self {
        ResponseBody::Inner { body }
    }

    /// A complete body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// An empty body.
    pub const fn empty() -> Self {
        ResponseBody::Full { data: None }
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Inner { body } => body.is_end_stream(),
            ResponseBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Inner { body } => body.size_hint(),
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
