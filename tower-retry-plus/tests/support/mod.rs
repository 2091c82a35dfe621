//! Scripted upstreams for the retry tests.
#![allow(dead_code, missing_docs)]

use std::{
    collections::VecDeque,
    convert::Infallible,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::time::Instant;
use tower::{Service, service_fn};
use tower_fault::{AttemptContext, BoxError, EndpointError, EndpointId, RejectReason, Rejected};
use tower_retry_plus::ReplayBody;

/// What the scripted upstream does with one attempt.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Status(u16),
    StatusRetryAfter(u16, &'static str),
    Refused,
    Reset,
    /// A local layer's rejection (a breaker open) with this hint.
    Rejected(Duration),
    /// The same, by the own layer of endpoint `n` (failover's `EndpointError` around it).
    RejectedBy(u64, Duration),
    Hang,
}

/// One attempt as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub attempt: u32,
    /// The endpoints the attempt's context says were tried before it.
    pub tried: Vec<EndpointId>,
}

#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

pub type Upstream<B> =
    tower::util::BoxCloneSyncService<Request<ReplayBody<B>>, Response<Full<Bytes>>, BoxError>;

/// An upstream that plays `steps` in order, then answers 200 to everything.
pub fn scripted<B>(steps: impl IntoIterator<Item = Step>) -> (Upstream<B>, Log)
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let script = Arc::new(Mutex::new(steps.into_iter().collect::<VecDeque<_>>()));
    let log = Log::default();
    let seen = log.clone();
    let svc = service_fn(move |req: Request<ReplayBody<B>>| {
        let script = Arc::clone(&script);
        let seen = seen.clone();
        async move {
            let at = Instant::now();
            let step = script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Status(200));
            let ctx = AttemptContext::of(&req);
            let (attempt, tried) = (ctx.attempt(), ctx.endpoints_tried().to_vec());
            let (parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            seen.0.lock().unwrap().push(Seen {
                at,
                method: parts.method,
                headers: parts.headers,
                body,
                attempt,
                tried,
            });
            let status = match step {
                Step::Status(status) => status,
                Step::StatusRetryAfter(status, after) => {
                    return Ok(Response::builder()
                        .status(status)
                        .header("retry-after", after)
                        .body(Full::new(Bytes::from_static(b"busy")))
                        .unwrap());
                }
                Step::Refused => {
                    return Err(io::Error::from(io::ErrorKind::ConnectionRefused).into());
                }
                Step::Reset => return Err(io::Error::from(io::ErrorKind::ConnectionReset).into()),
                Step::Rejected(after) => {
                    return Err(Rejected::new(RejectReason::BreakerOpen, Some(after)).into());
                }
                Step::RejectedBy(endpoint, after) => {
                    let rejected = Rejected::new(RejectReason::BreakerOpen, Some(after));
                    let name = format!("endpoint-{endpoint}").into();
                    return Err(
                        EndpointError::new(EndpointId(endpoint), name, rejected.into()).into(),
                    );
                }
                Step::Hang => std::future::pending().await,
            };
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(format!("attempt {attempt}"))))
                    .unwrap(),
            )
        }
    });
    (tower::util::BoxCloneSyncService::new(svc), log)
}

pub fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(empty()).unwrap()
}

pub fn post(uri: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// A streaming body of unknown size.
pub type Chunked = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A streaming body of unknown size made of `chunks`.
pub fn chunked(chunks: &[&'static str]) -> Chunked {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    StreamBody::new(stream::iter(frames))
}

/// Calls `svc` once with `req`.
pub async fn call<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    use tower::ServiceExt;
    svc.ready().await?.call(req).await
}
