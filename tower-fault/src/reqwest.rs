//! A tower adapter over [`reqwest::Client`] that speaks `http` types.
//!
//! `reqwest::Client` is a `Service<reqwest::Request>`; every layer of the suite is written for
//! `Service<http::Request<B>>`. [`ReqwestService`] bridges the two, so a whole client stack can
//! be built over reqwest:
//!
//! ```no_run
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use tower_fault::reqwest::ReqwestService;
//!
//! # async fn run() -> Result<(), reqwest::Error> {
//! let svc = ReqwestService::new(reqwest::Client::new());
//! let req = http::Request::post("http://127.0.0.1:8080/payments")
//!     .body(Full::new(bytes::Bytes::from_static(b"{}")))
//!     .unwrap();
//! let res: http::Response<reqwest::Body> = svc.oneshot(req).await?;
//! # let _ = res; Ok(()) }
//! ```

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

type ClientFuture = <reqwest::Client as Service<reqwest::Request>>::Future;

/// A `Service<http::Request<B>>` over a [`reqwest::Client`], answering `http::Response`s.
///
/// Always ready. The request body is handed to reqwest as a stream (`reqwest::Body::wrap`), so
/// any `http_body::Body` works; replaying bodies is the retry layer's job, not reqwest's.
#[derive(Debug, Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps a client (cloning a `reqwest::Client` shares its connection pool).
    #[must_use]
    pub const fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The wrapped client.
    #[must_use]
    pub const fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match reqwest::Request::try_from(req.map(reqwest::Body::wrap)) {
            Ok(req) => ResponseFuture::Pending {
                inner: self.client.call(req),
            },
            Err(err) => ResponseFuture::Invalid { error: Some(err) },
        }
    }
}

pin_project! {
    /// The response future of [`ReqwestService`].
    // pin-project-lite cannot carry docs on variant fields; the variants are documented.
    #[allow(missing_docs)]
    #[project = ResponseFutureProj]
    #[allow(missing_debug_implementations)]
    pub enum ResponseFuture {
        /// In flight.
        Pending {
            #[pin]
            inner: ClientFuture,
        },
        /// The request could not be converted (e.g. a URI reqwest cannot parse).
        Invalid {
            error: Option<reqwest::Error>,
        },
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<reqwest::Body>, reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Pending { inner } => inner.poll(cx).map_ok(Into::into),
            ResponseFutureProj::Invalid { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
