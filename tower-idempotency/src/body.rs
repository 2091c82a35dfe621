//! The layer's response body.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_fault::body::ResponseBody;

pin_project! {
    /// The body of every response the layer returns.
    ///
    /// * `Full`: a body held in memory — a replay, a problem document, or a first execution's
    ///   response the layer buffered to store it — and the trailers that follow it, if any (a
    ///   buffered response keeps its trailers; a replay carries the stored ones);
    /// * `Stream`: the inner service's body, streamed untouched, possibly after the bytes the
    ///   layer already read from it (an oversized response, or one whose reading failed: the
    ///   error is passed on after the bytes read before it).
    // pin-project-lite cannot carry docs on variant fields; the variants are documented.
    #[allow(missing_docs)]
    #[project = IdempotencyBodyProj]
    #[derive(Debug)]
    pub enum IdempotencyBody<B: Body> {
        /// A complete body, then its trailers.
        Full {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
        /// The inner body, after an already-read prefix and a pending error.
        Stream {
            prefix: Option<Bytes>,
            error: Option<B::Error>,
            #[pin]
            body: B,
        },
    }
}

impl<B: Body> IdempotencyBody<B> {
    /// A complete body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        Self::full_with_trailers(data, None)
    }

    /// A complete body followed by `trailers` (none when `None` or empty).
    pub fn full_with_trailers(data: impl Into<Bytes>, trailers: Option<HeaderMap>) -> Self {
        let data: Bytes = data.into();
        IdempotencyBody::Full {
            data: (!data.is_empty()).then_some(data),
            trailers: trailers.filter(|t| !t.is_empty()),
        }
    }

    /// The inner body, untouched.
    pub const fn stream(body: B) -> Self {
        IdempotencyBody::Stream {
            prefix: None,
            error: None,
            body,
        }
    }

    pub(crate) fn resumed(prefix: Bytes, error: Option<B::Error>, body: B) -> Self {
        IdempotencyBody::Stream {
            prefix: (!prefix.is_empty()).then_some(prefix),
            error,
            body,
        }
    }

    pub(crate) fn from_layer(body: ResponseBody<B>) -> Self {
        match body {
            ResponseBody::Full { data } => IdempotencyBody::Full {
                data,
                trailers: None,
            },
            ResponseBody::Inner { body } => IdempotencyBody::stream(body),
        }
    }
}

impl<B> Body for IdempotencyBody<B>
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
            IdempotencyBodyProj::Full { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            IdempotencyBodyProj::Stream {
                prefix,
                error,
                body,
            } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                body.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            IdempotencyBody::Full { data, trailers } => data.is_none() && trailers.is_none(),
            IdempotencyBody::Stream {
                prefix,
                error,
                body,
            } => prefix.is_none() && error.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            IdempotencyBody::Full { data, trailers } => {
                let len = data.as_ref().map_or(0, |d| d.len() as u64);
                if trailers.is_some() {
                    // Not exact on purpose: an HTTP/1.1 server (hyper) sends a body of exact
                    // size with `Content-Length`, and trailers only on a chunked body.
                    let mut hint = SizeHint::new();
                    hint.set_lower(len);
                    hint
                } else {
                    SizeHint::with_exact(len)
                }
            }
            IdempotencyBody::Stream { prefix, body, .. } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn stream_yields_prefix_then_rest() {
        let body: IdempotencyBody<Full<Bytes>> = IdempotencyBody::resumed(
            Bytes::from_static(b"head-"),
            None,
            Full::new(Bytes::from_static(b"tail")),
        );
        assert_eq!(body.size_hint().exact(), Some(9));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "head-tail");
    }

    /// An empty body whose error type is `&'static str`.
    struct Empty;

    impl Body for Empty {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(None)
        }
    }

    #[tokio::test]
    async fn stream_passes_on_a_pending_error_after_prefix() {
        let mut body = IdempotencyBody::resumed(Bytes::from_static(b"a"), Some("boom"), Empty);
        assert!(!body.is_end_stream());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        assert_eq!(body.frame().await.unwrap().unwrap_err(), "boom");
        assert!(body.frame().await.is_none());
    }
}
