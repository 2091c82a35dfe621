//! Reading bodies: a keyed request's, whole and capped, to fingerprint it; a response's, capped
//! and timed, to keep it.

use std::{
    future::Future,
    pin::{Pin, pin},
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_fault::{BoxError, time::saturating_after};

/// Why a request body was not read.
pub(super) enum ReadError {
    TooLarge,
    Unreadable,
}

/// Reads a keyed request's body, up to `limit` bytes, to fingerprint it and hand it on.
pub(super) async fn read_request<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    // Read by hand rather than `Limited` + `collect()`: those queue the frames in a `VecDeque`
    // (an allocation per request) to hand back the one frame a small body comes in.
    let mut body = pin!(body);
    let mut buffered = Buffered::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ReadError::Unreadable);
        };
        // A request's trailers are not part of its fingerprint, nor passed on.
        if let Ok(mut data) = frame.into_data() {
            if buffered.len + data.remaining() > limit {
                return Err(ReadError::TooLarge);
            }
            buffered.push(data.copy_to_bytes(data.remaining()));
        }
    }
    Ok(buffered.finish())
}

/// Body bytes read so far: a single data frame (the common case) is kept without copying; only
/// a body in several frames is copied, once, into one buffer.
#[derive(Default)]
struct Buffered {
    first: Option<Bytes>,
    rest: BytesMut,
    len: usize,
}

impl Buffered {
    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if self.first.is_none() {
            self.first = Some(data);
        } else {
            self.rest.extend_from_slice(&data);
        }
    }

    fn finish(self) -> Bytes {
        match self.first {
            None => Bytes::new(),
            Some(first) if self.rest.is_empty() => first,
            Some(first) => {
                let mut all = BytesMut::with_capacity(first.len() + self.rest.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&self.rest);
                all.freeze()
            }
        }
    }
}

/// How reading a response body ended; what was read is in the [`ReadBody`].
pub(super) enum ReadEnd<E> {
    /// The whole body, and its trailers.
    Complete,
    /// The body went over the limit; the rest is still in the body.
    TooLarge,
    /// The body did not end within the response body timeout; the rest is still in the body.
    Overdue,
    /// The body failed, with this error.
    Failed(E),
}

/// Reads a response body up to `limit` bytes and for at most `timeout`, leaving the rest in
/// the body to stream if it is larger or slower. Trailers are kept with a complete body; a body
/// cut short has not sent its trailers yet (they come last), so they stream through with the
/// rest of it.
///
/// A struct rather than an `async fn` so that what was read stays here when the read is cut
/// short by the timeout.
pub(super) struct ReadBody<'b, B> {
    body: &'b mut B,
    limit: usize,
    timeout: Duration,
    /// Set up only once the body is not ready at once (boxed: inline, a `Sleep` would grow
    /// every keyed request's future, and only slow bodies need one).
    deadline: Option<Pin<Box<Sleep>>>,
    buffered: Buffered,
    /// Boxed: trailers are rare, and a `HeaderMap` inline would add 88 bytes to every keyed
    /// request's boxed future, which holds this across the store's `complete`.
    trailers: Option<Box<HeaderMap>>,
}

impl<'b, B: Body<Data = Bytes> + Unpin> ReadBody<'b, B> {
    pub(super) fn new(body: &'b mut B, limit: usize, timeout: Duration) -> Self {
        Self {
            body,
            limit,
            timeout,
            deadline: None,
            buffered: Buffered::default(),
            trailers: None,
        }
    }

    /// Whether the body says it is over the limit before a byte is read.
    pub(super) fn too_large_by_hint(&self) -> bool {
        self.body.size_hint().lower() > self.limit as u64
    }

    /// The bytes read (all of them, or the prefix before the read stopped) and the trailers.
    pub(super) fn into_parts(self) -> (Bytes, Option<Box<HeaderMap>>) {
        (self.buffered.finish(), self.trailers)
    }
}

impl<B: Body<Data = Bytes> + Unpin> Future for ReadBody<'_, B> {
    type Output = ReadEnd<B::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut *this.body).poll_frame(cx) {
                Poll::Ready(None) => return Poll::Ready(ReadEnd::Complete),
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => {
                            if let Ok(more) = frame.into_trailers() {
                                match &mut this.trailers {
                                    Some(trailers) => trailers.extend(more),
                                    None => this.trailers = Some(Box::new(more)),
                                }
                            }
                            continue;
                        }
                    };
                    this.buffered.push(data);
                    if this.buffered.len > this.limit {
                        return Poll::Ready(ReadEnd::TooLarge);
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(ReadEnd::Failed(error)),
                Poll::Pending => {
                    let timeout = this.timeout;
                    let deadline = this.deadline.get_or_insert_with(|| {
                        Box::pin(sleep_until(saturating_after(Instant::now(), timeout)))
                    });
                    return match deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(ReadEnd::Overdue),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        pin::Pin,
        task::{Context, Poll},
    };

    use http_body::Frame;

    use super::*;

    /// A body of scripted frames with no size hint (as a chunked request has).
    struct Frames(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl Frames {
        fn data(chunks: &[&'static str]) -> Self {
            Self(
                chunks
                    .iter()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                    .collect(),
            )
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn read(body: Frames, limit: usize) -> Result<Bytes, ReadError> {
        futures_now(read_request(body, limit))
    }

    fn futures_now<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn request_body_in_frames_is_joined_and_trailers_ignored() {
        let mut body = Frames::data(&["ab", "", "cd", "e"]);
        body.0.push_back(Ok(Frame::trailers(HeaderMap::new())));
        assert_eq!(read(body, 5).ok().unwrap(), "abcde");
        assert_eq!(read(Frames::data(&["one"]), 3).ok().unwrap(), "one");
        assert_eq!(read(Frames::data(&[]), 0).ok().unwrap(), "");
    }

    #[test]
    fn request_body_over_the_limit_across_frames_is_too_large() {
        assert!(matches!(
            read(Frames::data(&["abc", "def"]), 5),
            Err(ReadError::TooLarge)
        ));
    }

    #[test]
    fn request_body_error_is_unreadable() {
        let mut body = Frames::data(&["ab"]);
        body.0.push_back(Err("reset"));
        assert!(matches!(read(body, 100), Err(ReadError::Unreadable)));
    }
}
