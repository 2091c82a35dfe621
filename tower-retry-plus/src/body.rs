//! The replayable request body.

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tower_fault::BoxError;

use crate::error::BodyNotReplayable;

/// A request body that can be sent again, for another attempt.
///
/// The first attempt streams the original body while keeping up to a limit of its bytes (as
/// `Bytes` handles: a frame that already is `Bytes` costs a reference count, not a copy). Later
/// attempts replay the kept frames byte-identical, then continue reading the original where the
/// previous attempt stopped, if it did not read it to the end. A body that turns out larger than
/// the limit stops being kept — the attempt reading it still sends every byte, in order — and is
/// no longer replayable.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use tower_retry_plus::ReplayBody;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let first = ReplayBody::new(Full::new(Bytes::from_static(b"payload")), 64 * 1024);
/// let second = first.try_clone().expect("small bodies are replayable");
/// assert_eq!(first.collect().await.unwrap().to_bytes(), "payload");
/// assert_eq!(second.collect().await.unwrap().to_bytes(), "payload");
/// # });
/// ```
///
/// `Send` and `Sync` whenever `B: Send`, so it suits clients that require `Sync` bodies
/// (reqwest). Clones made with [`ReplayBody::try_clone`] are meant to be polled one after the
/// other (one per attempt), as the retry layer does.
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    /// The original body was empty: nothing to keep.
    Empty,
    /// The original body is sent once, without keeping anything (known to exceed the limit).
    Once(Mutex<B>),
    /// A handle on the shared, partly kept original.
    Replay {
        shared: Arc<Mutex<Shared<B>>>,
        /// Data frames this handle has yielded.
        position: usize,
        trailers_sent: bool,
    },
}

struct Shared<B> {
    /// The original body, until it ends or fails.
    body: Option<B>,
    /// The kept data frames `dropped..frames_read`.
    frames: Vec<Bytes>,
    /// Frames no longer kept (all of them once the limit was passed).
    dropped: usize,
    /// Bytes read from the original so far.
    read: u64,
    limit: u64,
    overflowed: bool,
    failed: bool,
    trailers: Option<HeaderMap>,
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f
                .debug_struct("ReplayBody")
                .field("kind", &"empty")
                .finish(),
            Kind::Once(_) => f.debug_struct("ReplayBody").field("kind", &"once").finish(),
            Kind::Replay { position, .. } => f
                .debug_struct("ReplayBody")
                .field("kind", &"replay")
                .field("position", position)
                .field("replayable", &self.is_replayable())
                .finish(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `limit` bytes of it for replays.
    ///
    /// A body that is already at its end is replayable at no cost; a body whose size hint says
    /// it exceeds `limit` is sent once and never kept.
    pub fn new(body: B, limit: usize) -> Self {
        if body.is_end_stream() {
            return Self { kind: Kind::Empty };
        }
        let limit = limit as u64;
        if body.size_hint().lower() > limit {
            return Self::once(body);
        }
        Self {
            kind: Kind::Replay {
                shared: Arc::new(Mutex::new(Shared {
                    body: Some(body),
                    frames: Vec::new(),
                    dropped: 0,
                    read: 0,
                    limit,
                    overflowed: false,
                    failed: false,
                    trailers: None,
                })),
                position: 0,
                trailers_sent: false,
            },
        }
    }

    /// Wraps `body` to be sent once: nothing is kept and it is never replayable.
    pub fn once(body: B) -> Self {
        Self {
            kind: Kind::Once(Mutex::new(body)),
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    /// [`ReplayBody::new`], as the retry layer wraps a request body.
    pub(crate) fn for_retries(body: B, limit: usize) -> Self {
        Self::new(body, limit)
    }
}

impl<B> ReplayBody<B> {
    /// Whether another attempt can still send this body in full.
    ///
    /// `false` once the original grew past the limit or failed, and for a body made with
    /// [`ReplayBody::once`].
    #[must_use]
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Once(_) => false,
            Kind::Replay { shared, .. } => {
                let shared = lock(shared);
                !shared.overflowed && !shared.failed
            }
        }
    }

    /// A new handle that sends the whole body from its start, or `None` if the body is not
    /// [replayable](Self::is_replayable).
    #[must_use]
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Empty => Some(Self { kind: Kind::Empty }),
            Kind::Once(_) => None,
            Kind::Replay { shared, .. } => self.is_replayable().then(|| Self {
                kind: Kind::Replay {
                    shared: Arc::clone(shared),
                    position: 0,
                    trailers_sent: false,
                },
            }),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Once(body) => {
                let body = body.get_mut().unwrap_or_else(PoisonError::into_inner);
                Pin::new(body).poll_frame(cx).map(|frame| {
                    frame.map(|frame| {
                        frame
                            .map(|frame| {
                                frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                            })
                            .map_err(Into::into)
                    })
                })
            }
            Kind::Replay {
                shared,
                position,
                trailers_sent,
            } => poll_replay(&mut lock(shared), position, trailers_sent, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Once(body) => lock(body).is_end_stream(),
            Kind::Replay {
                shared,
                position,
                trailers_sent,
            } => {
                let shared = lock(shared);
                shared.body.is_none()
                    && !shared.failed
                    && *position == shared.dropped + shared.frames.len()
                    && (shared.trailers.is_none() || *trailers_sent)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Once(body) => lock(body).size_hint(),
            Kind::Replay {
                shared, position, ..
            } => {
                let shared = lock(shared);
                if *position < shared.dropped {
                    return SizeHint::default();
                }
                let kept: u64 = shared.frames[*position - shared.dropped..]
                    .iter()
                    .map(|f| f.len() as u64)
                    .sum();
                match &shared.body {
                    None => SizeHint::with_exact(kept),
                    Some(body) => {
                        let rest = body.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(kept + rest.lower());
                        if let Some(upper) = rest.upper() {
                            hint.set_upper(kept + upper);
                        }
                        hint
                    }
                }
            }
        }
    }
}

fn poll_replay<B>(
    shared: &mut Shared<B>,
    position: &mut usize,
    trailers_sent: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    let frames_read = shared.dropped + shared.frames.len();
    if *position < frames_read {
        // Behind the original: replay a kept frame, if it still is kept.
        if *position < shared.dropped {
            return Poll::Ready(Some(Err(BodyNotReplayable::new().into())));
        }
        let data = shared.frames[*position - shared.dropped].clone();
        *position += 1;
        return Poll::Ready(Some(Ok(Frame::data(data))));
    }
    if shared.failed {
        return Poll::Ready(Some(Err(BodyNotReplayable::new().into())));
    }
    let Some(body) = shared.body.as_mut() else {
        // The original ended: only its trailers, if any, remain.
        if !*trailers_sent {
            if let Some(trailers) = &shared.trailers {
                *trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
            }
        }
        return Poll::Ready(None);
    };
    // At the front: read the original.
    match Pin::new(body).poll_frame(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(None) => {
            shared.body = None;
            Poll::Ready(None)
        }
        Poll::Ready(Some(Err(err))) => {
            shared.body = None;
            shared.failed = true;
            Poll::Ready(Some(Err(err.into())))
        }
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(mut data) => {
                let data = data.copy_to_bytes(data.remaining());
                shared.read += data.len() as u64;
                if !shared.overflowed && shared.read > shared.limit {
                    shared.overflowed = true;
                    shared.dropped += shared.frames.len();
                    shared.frames = Vec::new();
                }
                if shared.overflowed {
                    shared.dropped += 1;
                } else {
                    shared.frames.push(data.clone());
                }
                *position += 1;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    shared.trailers = Some(trailers.clone());
                    shared.body = None;
                    *trailers_sent = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                // A frame that is neither data nor trailers (none exist in http-body 1.x):
                // nothing to keep; skip it by asking for the next one.
                Err(_) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    async fn collect<B>(body: ReplayBody<B>) -> Result<Bytes, BoxError>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn full_bodies_replay_as_refcounts() {
        let payload = Bytes::from_static(b"hello world");
        let first = ReplayBody::new(Full::new(payload.clone()), 1024);
        let second = first.try_clone().unwrap();
        let a = first.collect().await.unwrap().to_bytes();
        let b = second.collect().await.unwrap().to_bytes();
        assert_eq!(a, payload);
        assert_eq!(b, payload);
        // the replayed frame is the very same allocation
        assert_eq!(a.as_ptr(), payload.as_ptr());
        assert_eq!(b.as_ptr(), payload.as_ptr());
    }

    #[tokio::test]
    async fn streams_replay_in_order_and_continue_a_partial_read() {
        let mut first = ReplayBody::new(chunks(&["ab", "cd", "ef"]), 1024);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        // the first attempt stopped after one frame; the second sends everything
        let second = first.try_clone().unwrap();
        drop(first);
        assert_eq!(collect(second).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn over_limit_stream_is_sent_whole_once_and_not_replayable() {
        let body = ReplayBody::new(chunks(&["1234", "5678", "9"]), 6);
        let spare = body.try_clone().unwrap();
        assert_eq!(collect(body).await.unwrap(), "123456789");
        assert!(!spare.is_replayable());
        assert!(spare.try_clone().is_none());
        let err = collect(spare).await.unwrap_err();
        assert!(err.downcast_ref::<BodyNotReplayable>().is_some(), "{err}");
    }

    #[tokio::test]
    async fn known_size_over_limit_is_once() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"too large")), 4);
        assert!(!body.is_replayable());
        assert!(body.try_clone().is_none());
        assert_eq!(body.size_hint().exact(), Some(9));
        assert_eq!(collect(body).await.unwrap(), "too large");
    }

    #[tokio::test]
    async fn empty_bodies_cost_nothing() {
        let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 0);
        assert!(body.is_end_stream());
        assert!(body.try_clone().is_some());
        assert_eq!(collect(body).await.unwrap(), "");
    }

    #[tokio::test]
    async fn trailers_are_replayed() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "42".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"data"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let first = ReplayBody::new(StreamBody::new(stream::iter(frames)), 1024);
        let second = first.try_clone().unwrap();
        let a = first.collect().await.unwrap();
        assert_eq!(a.trailers(), Some(&trailers));
        let b = second.collect().await.unwrap();
        assert_eq!(b.trailers(), Some(&trailers));
        assert_eq!(b.to_bytes(), "data");
    }

    #[tokio::test]
    async fn a_failing_body_is_not_replayable() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err(std::io::Error::other("disk on fire")),
        ];
        let first = ReplayBody::new(StreamBody::new(stream::iter(frames)), 1024);
        let second = first.try_clone().unwrap();
        let err = collect(first).await.unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert!(!second.is_replayable());
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReplayBody<Full<Bytes>>>();
    }
}
