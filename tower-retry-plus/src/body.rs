//! The replayable request body.

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
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
/// The retry layer polls a body of known size within the limit once as it wraps it: when that
/// frame is the whole body (`Full<Bytes>` and the like), every attempt gets a `Bytes` handle on
/// it and nothing is shared or locked; anything else that poll returns goes to the first
/// attempt, as if it had polled the body itself.
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
///
/// A handle on a body kept inline is as large as a `Full<Bytes>` (32 bytes on 64-bit targets):
/// the client moves the request several times on its way to the connection, and measured in
/// the end-to-end bench a body type 8 bytes larger cost hyper's client ~360 more instructions
/// per request. The other kinds of body keep their state behind a box.
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    /// The whole body in one `Bytes`, read in one frame when the retry layer wrapped it
    /// (`Full<Bytes>` and the like), or empty: every handle owns a `Bytes` handle on it, no
    /// shared state. Sending it leaves [`sent`] in its place.
    Inline(Bytes),
    /// A body that needs state of its own: one allocation per handle, on top of the shared
    /// state a streamed body keeps anyway (or, for a body sent once, its only one).
    Boxed(Box<Boxed<B>>),
}

enum Boxed<B> {
    /// The original body is sent once, without keeping anything (known to exceed the limit).
    Once(Mutex<B>),
    /// A handle on the shared, partly kept original.
    Replay {
        shared: Arc<Mutex<Shared<B>>>,
        /// The attempt this handle is for (see [`Shared::generation`]).
        generation: u64,
        /// Data frames this handle has yielded.
        position: usize,
        trailers_sent: bool,
    },
}

/// Where an inline handle's data was: an empty `Bytes` told apart from an empty body's by its
/// address, so that a handle that has sent its data does not offer a replay it cannot make.
static SENT: [u8; 1] = [0];

/// The data of an inline handle that has sent its body.
fn sent() -> Bytes {
    Bytes::from_static(&SENT[..0])
}

fn is_sent(data: &Bytes) -> bool {
    data.is_empty() && std::ptr::eq(data.as_ptr(), SENT.as_ptr())
}

struct Shared<B> {
    /// The original body, until it ends or fails.
    body: Option<B>,
    /// The attempt whose handles may still be read; bumped by [`ReplayBody::fence`] when the
    /// layer gives an attempt up. A client may keep polling an abandoned attempt's body (hyper
    /// writes it from the connection task even after the response came back): read on, it
    /// would take the original's waker from the next attempt's handle, or push the original
    /// past the limit while the retry sleeps. A handle of an older attempt fails instead.
    generation: u64,
    /// A frame read from the original when the layer wrapped it, not yet yielded by any
    /// handle: the next handle at the front takes it instead of polling the original.
    prefetched: Option<Result<Frame<Bytes>, BoxError>>,
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
            Kind::Inline(data) => f
                .debug_struct("ReplayBody")
                .field("kind", &"inline")
                .field("len", &data.len())
                .field("sent", &is_sent(data))
                .finish(),
            Kind::Boxed(boxed) => match &**boxed {
                Boxed::Once(_) => f.debug_struct("ReplayBody").field("kind", &"once").finish(),
                Boxed::Replay { position, .. } => f
                    .debug_struct("ReplayBody")
                    .field("kind", &"replay")
                    .field("position", position)
                    .field("replayable", &self.is_replayable())
                    .finish(),
            },
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
            return Self::inline(Bytes::new());
        }
        let limit = limit as u64;
        if body.size_hint().lower() > limit {
            return Self::once(body);
        }
        Self::shared(body, limit, None)
    }

    /// [`ReplayBody::once`] for a request that has one attempt, except that an empty body is
    /// kept inline: the common bodiless request costs no allocation.
    pub(crate) fn for_one_attempt(body: B) -> Self {
        if body.is_end_stream() {
            Self::inline(Bytes::new())
        } else {
            Self::once(body)
        }
    }

    fn shared(body: B, limit: u64, prefetched: Option<Result<Frame<Bytes>, BoxError>>) -> Self {
        Self::boxed(Boxed::Replay {
            shared: Arc::new(Mutex::new(Shared {
                body: Some(body),
                generation: 0,
                prefetched,
                frames: Vec::new(),
                dropped: 0,
                read: 0,
                limit,
                overflowed: false,
                failed: false,
                trailers: None,
            })),
            generation: 0,
            position: 0,
            trailers_sent: false,
        })
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    /// [`ReplayBody::new`], as the retry layer wraps a request body: a body of known size
    /// within the limit is polled once right away, and if that one frame is the whole body
    /// (`Full<Bytes>` and the like) it is kept inline — no shared state, no allocation. Any
    /// other outcome of that poll is handed to the first attempt as if it had polled itself
    /// (a `Pending` leaves nothing behind: the next poll registers the real waker).
    pub(crate) fn for_retries(mut body: B, limit: usize) -> Self {
        if body.is_end_stream() {
            return Self::inline(Bytes::new());
        }
        let hint = body.size_hint();
        let limit = limit as u64;
        if hint.lower() > limit {
            return Self::once(body);
        }
        if hint.exact().is_none() {
            return Self::shared(body, limit, None);
        }
        let mut cx = Context::from_waker(Waker::noop());
        let frame = match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Pending => return Self::shared(body, limit, None),
            Poll::Ready(None) => return Self::inline(Bytes::new()),
            Poll::Ready(Some(Err(err))) => return Self::shared(body, limit, Some(Err(err.into()))),
            Poll::Ready(Some(Ok(frame))) => {
                frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
            }
        };
        match frame.into_data() {
            Ok(data) if body.is_end_stream() && data.len() as u64 <= limit => Self::inline(data),
            Ok(data) => Self::shared(body, limit, Some(Ok(Frame::data(data)))),
            Err(frame) => Self::shared(body, limit, Some(Ok(frame))),
        }
    }
}

impl<B> ReplayBody<B> {
    /// Wraps `body` to be sent once: nothing is kept and it is never replayable.
    pub fn once(body: B) -> Self {
        Self::boxed(Boxed::Once(Mutex::new(body)))
    }

    fn inline(data: Bytes) -> Self {
        Self {
            kind: Kind::Inline(data),
        }
    }

    fn boxed(boxed: Boxed<B>) -> Self {
        Self {
            kind: Kind::Boxed(Box::new(boxed)),
        }
    }

    /// Whether another attempt can still send this body in full.
    ///
    /// `false` once the original grew past the limit or failed, for a body made with
    /// [`ReplayBody::once`], and for a handle on a body read in one frame once it has sent it
    /// (it hands its data on rather than keep a copy; the retry layer makes its replays from a
    /// handle it never sends).
    #[must_use]
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Inline(data) => !is_sent(data),
            Kind::Boxed(boxed) => match &**boxed {
                Boxed::Once(_) => false,
                Boxed::Replay { shared, .. } => {
                    let shared = lock(shared);
                    !shared.overflowed && !shared.failed
                }
            },
        }
    }

    /// A new handle that sends the whole body from its start, or `None` if the body is not
    /// [replayable](Self::is_replayable).
    #[must_use]
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Inline(data) => (!is_sent(data)).then(|| Self::inline(data.clone())),
            Kind::Boxed(boxed) => match &**boxed {
                Boxed::Once(_) => None,
                Boxed::Replay { shared, .. } => self.is_replayable().then(|| {
                    Self::boxed(Boxed::Replay {
                        generation: lock(shared).generation,
                        shared: Arc::clone(shared),
                        position: 0,
                        trailers_sent: false,
                    })
                }),
            },
        }
    }

    /// Gives up the handles made so far: their next poll fails (a client still sending an
    /// abandoned attempt's body stops), and only handles cloned from now on read the body.
    /// The retry layer calls this when it decides to retry, before it sleeps.
    pub(crate) fn fence(&self) {
        if let Kind::Boxed(boxed) = &self.kind
            && let Boxed::Replay { shared, .. } = &**boxed
        {
            let mut shared = lock(shared);
            shared.generation = shared.generation.wrapping_add(1);
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
        let boxed = match &mut self.get_mut().kind {
            Kind::Inline(data) if data.is_empty() => return Poll::Ready(None),
            Kind::Inline(data) => {
                return Poll::Ready(Some(Ok(Frame::data(std::mem::replace(data, sent())))));
            }
            Kind::Boxed(boxed) => &mut **boxed,
        };
        match boxed {
            Boxed::Once(body) => {
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
            Boxed::Replay {
                shared,
                generation,
                position,
                trailers_sent,
            } => {
                let mut shared = lock(shared);
                if shared.generation != *generation {
                    return Poll::Ready(Some(Err(AttemptAbandoned.into())));
                }
                poll_replay(&mut shared, position, trailers_sent, cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let boxed = match &self.kind {
            Kind::Inline(data) => return data.is_empty(),
            Kind::Boxed(boxed) => &**boxed,
        };
        match boxed {
            Boxed::Once(body) => lock(body).is_end_stream(),
            Boxed::Replay {
                shared,
                position,
                trailers_sent,
                ..
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
        let boxed = match &self.kind {
            Kind::Inline(data) => return SizeHint::with_exact(data.len() as u64),
            Kind::Boxed(boxed) => &**boxed,
        };
        match boxed {
            Boxed::Once(body) => lock(body).size_hint(),
            Boxed::Replay {
                shared, position, ..
            } => {
                let shared = lock(shared);
                if *position < shared.dropped {
                    return SizeHint::default();
                }
                let prefetched = match &shared.prefetched {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len() as u64),
                    _ => 0,
                };
                let kept: u64 = shared.frames[*position - shared.dropped..]
                    .iter()
                    .map(|f| f.len() as u64)
                    .sum::<u64>()
                    + prefetched;
                match &shared.body {
                    None => SizeHint::with_exact(kept),
                    Some(body) => {
                        let rest = body.size_hint();
                        // Saturating: a body may report an upper bound near `u64::MAX`
                        // ("unknown, but bounded"), and `set_upper` below `lower` panics.
                        let mut hint = SizeHint::new();
                        let lower = kept.saturating_add(rest.lower());
                        hint.set_lower(lower);
                        if let Some(upper) = rest.upper() {
                            hint.set_upper(kept.saturating_add(upper).max(lower));
                        }
                        hint
                    }
                }
            }
        }
    }
}

impl<B: Default> Default for ReplayBody<B> {
    /// `B`'s default body, sent once ([`ReplayBody::once`]): nothing is kept, so it costs no
    /// shared state.
    ///
    /// A client whose request body is `ReplayBody<B>` (one that sits under a
    /// [`RetryLayer`](crate::RetryLayer)) can then also send requests made without the layer,
    /// such as the health probes of tower-failover's `HttpProbe`, which builds its requests
    /// with `Default`: one client serves both.
    fn default() -> Self {
        Self::once(B::default())
    }
}

/// The error an abandoned attempt's body handle answers once the layer moved on.
#[derive(Debug)]
struct AttemptAbandoned;

impl fmt::Display for AttemptAbandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the retry layer gave this attempt up; its request body is not sent further")
    }
}

impl std::error::Error for AttemptAbandoned {}

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
        if !*trailers_sent && let Some(trailers) = &shared.trailers {
            *trailers_sent = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
        }
        return Poll::Ready(None);
    };
    // At the front: take what was read when the body was wrapped, or read the original.
    let polled = match shared.prefetched.take() {
        Some(frame) => Some(frame),
        None => match Pin::new(body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame.map(|frame| {
                frame
                    .map(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
                    .map_err(Into::into)
            }),
        },
    };
    shared.front(polled, position, trailers_sent, cx)
}

impl<B> Shared<B> {
    /// Takes the frame the handle at the front read from the original (`None`: the original
    /// ended): keeps a data frame while the body is within the limit (dropping what was kept
    /// once it grows past it), keeps the trailers, and notes the end or a failure.
    fn front(
        &mut self,
        polled: Option<Result<Frame<Bytes>, BoxError>>,
        position: &mut usize,
        trailers_sent: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match polled {
            None => {
                self.body = None;
                Poll::Ready(None)
            }
            Some(Err(err)) => {
                self.body = None;
                self.failed = true;
                Poll::Ready(Some(Err(err)))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.read += data.len() as u64;
                    if !self.overflowed && self.read > self.limit {
                        self.overflowed = true;
                        self.dropped += self.frames.len();
                        self.frames = Vec::new();
                    }
                    if self.overflowed {
                        self.dropped += 1;
                    } else {
                        self.frames.push(data.clone());
                    }
                    *position += 1;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        self.trailers = Some(trailers.clone());
                        self.body = None;
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
    async fn the_default_is_the_inner_default_sent_once() {
        let body = ReplayBody::<Full<Bytes>>::default();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(!body.is_replayable());
        assert!(body.try_clone().is_none());
        assert_eq!(collect(body).await.unwrap(), "");
        let text = ReplayBody::<Full<Bytes>>::default();
        assert_eq!(format!("{text:?}"), "ReplayBody { kind: \"once\" }");
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

    /// A body of announced exact size that yields a script of polls (`None` is `Pending`).
    struct Exact {
        script: std::collections::VecDeque<Option<Result<Frame<Bytes>, std::io::Error>>>,
        len: u64,
    }

    impl Exact {
        fn new(
            len: u64,
            script: impl IntoIterator<Item = Option<Result<Frame<Bytes>, std::io::Error>>>,
        ) -> Self {
            Self {
                script: script.into_iter().collect(),
                len,
            }
        }
    }

    impl Body for Exact {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.script.pop_front() {
                None => Poll::Ready(None),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(frame)) => {
                    if let Ok(data) = frame.as_ref().map(|f| f.data_ref()) {
                        self.len = self.len.saturating_sub(data.map_or(0, |d| d.len() as u64));
                    }
                    Poll::Ready(Some(frame))
                }
            }
        }

        fn is_end_stream(&self) -> bool {
            self.script.is_empty()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.len)
        }
    }

    fn data(s: &'static str) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))
    }

    #[tokio::test]
    async fn a_body_ready_in_one_frame_is_kept_inline() {
        let payload = Bytes::from_static(b"hello world");
        let first = ReplayBody::for_retries(Full::new(payload.clone()), 1024);
        assert!(matches!(first.kind, Kind::Inline(_)), "{first:?}");
        assert_eq!(first.size_hint().exact(), Some(11));
        assert!(!first.is_end_stream());
        let second = first.try_clone().unwrap();
        let a = first.collect().await.unwrap().to_bytes();
        let b = second.collect().await.unwrap().to_bytes();
        assert_eq!((&a, &b), (&payload, &payload));
        assert_eq!(b.as_ptr(), payload.as_ptr(), "a refcount, not a copy");
    }

    #[test]
    fn a_handle_on_a_full_body_is_as_large_as_the_body() {
        use std::mem::size_of;
        assert_eq!(
            size_of::<ReplayBody<Full<Bytes>>>(),
            size_of::<Full<Bytes>>()
        );
    }

    #[tokio::test]
    async fn an_inline_handle_that_sent_its_data_makes_no_replay() {
        let payload = Bytes::from_static(b"hello");
        let template = ReplayBody::for_retries(Full::new(payload.clone()), 1024);
        let mut first = template.try_clone().unwrap();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), payload);
        assert!(first.is_end_stream());
        assert_eq!(first.size_hint().exact(), Some(0));
        assert!(first.frame().await.is_none());
        // Its data went out with the frame: it cannot make a replay, the template still can.
        assert!(!first.is_replayable());
        assert!(first.try_clone().is_none());
        assert!(template.is_replayable());
        let again = template.try_clone().unwrap();
        assert_eq!(again.collect().await.unwrap().to_bytes(), payload);
    }

    #[tokio::test]
    async fn an_empty_body_stays_replayable_once_sent() {
        let mut first = ReplayBody::for_retries(Full::new(Bytes::new()), 1024);
        assert!(first.is_end_stream());
        assert!(first.frame().await.is_none());
        assert!(first.is_replayable());
        let again = first.try_clone().unwrap();
        assert!(again.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_read_ahead_frame_goes_to_the_first_attempt_then_replays() {
        // Two data frames then trailers: the first frame is read when wrapping, the rest later.
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "1".parse().unwrap());
        let body = Exact::new(
            4,
            [
                data("ab"),
                None,
                data("cd"),
                Some(Ok(Frame::trailers(trailers.clone()))),
            ],
        );
        let first = ReplayBody::for_retries(body, 1024);
        assert!(
            matches!(&first.kind, Kind::Boxed(b) if matches!(**b, Boxed::Replay { .. })),
            "{first:?}"
        );
        assert_eq!(first.size_hint().exact(), Some(4));
        let second = first.try_clone().unwrap();
        let a = first.collect().await.unwrap();
        assert_eq!(a.trailers(), Some(&trailers));
        assert_eq!(a.to_bytes(), "abcd");
        let b = second.collect().await.unwrap();
        assert_eq!(b.trailers(), Some(&trailers));
        assert_eq!(b.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_body_pending_when_wrapped_loses_nothing() {
        let body = Exact::new(3, [None, data("xyz")]);
        let first = ReplayBody::for_retries(body, 1024);
        let second = first.try_clone().unwrap();
        assert_eq!(collect(first).await.unwrap(), "xyz");
        assert_eq!(collect(second).await.unwrap(), "xyz");
    }

    #[tokio::test]
    async fn an_error_read_ahead_reaches_the_first_attempt() {
        let body = Exact::new(3, [Some(Err(std::io::Error::other("disk on fire")))]);
        let first = ReplayBody::for_retries(body, 1024);
        let second = first.try_clone().unwrap();
        let err = collect(first).await.unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert!(!second.is_replayable());
    }

    #[tokio::test]
    async fn a_read_ahead_frame_past_the_limit_is_still_sent() {
        // The size hint lied (3 bytes announced, 8 sent): every byte still goes out once.
        let body = Exact::new(3, [data("12345678")]);
        let first = ReplayBody::for_retries(body, 4);
        let second = first.try_clone().unwrap();
        assert_eq!(collect(first).await.unwrap(), "12345678");
        assert!(!second.is_replayable());
    }

    /// A client may go on polling an abandoned attempt's body (hyper writes it from the
    /// connection task after the response came back). Once the layer fences the body, that
    /// handle fails at its next poll: it can neither take the original's waker from the next
    /// attempt's handle nor push the original past the limit while the retry sleeps.
    #[tokio::test]
    async fn a_fenced_attempt_stops_reading_and_the_next_one_gets_everything() {
        let mut first = ReplayBody::new(chunks(&["1234", "5678", "9abc"]), 8);
        assert_eq!(
            first.frame().await.unwrap().unwrap().into_data().unwrap(),
            "1234"
        );
        let template = first.try_clone().unwrap();
        template.fence(); // the layer decided to retry
        let err = first.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("gave this attempt up"), "{err}");
        assert!(
            template.is_replayable(),
            "the abandoned handle read nothing more"
        );
        let second = template.try_clone().unwrap();
        // 12 bytes > the 8-byte limit: sent whole, once, by the live attempt.
        assert_eq!(collect(second).await.unwrap(), "123456789abc");
        assert!(!template.is_replayable());
    }

    /// A body whose upper bound is near `u64::MAX` ("unknown, but bounded") does not overflow
    /// the replay's size hint.
    #[tokio::test]
    async fn a_huge_upper_size_bound_does_not_overflow_the_hint() {
        struct Huge(Option<Bytes>);
        impl Body for Huge {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
            }
            fn size_hint(&self) -> SizeHint {
                let mut hint = SizeHint::new();
                hint.set_upper(u64::MAX);
                hint
            }
        }
        let mut first = ReplayBody::new(Huge(Some(Bytes::from_static(b"abc"))), 1024);
        first.frame().await.unwrap().unwrap();
        let hint = first.try_clone().unwrap().size_hint();
        assert_eq!(hint.lower(), 3);
        assert_eq!(hint.upper(), Some(u64::MAX));
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReplayBody<Full<Bytes>>>();
    }
}
