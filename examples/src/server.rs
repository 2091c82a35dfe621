//! A loopback HTTP/1.1 server with control over its connections: it can reset a connection on a
//! request's behalf (see [`crate::faults`]) and go down for an outage (listener closed, so
//! connects are refused, and open connections reset), then come back on the same port.
//!
//! `axum::serve` hides the sockets; this accept loop over `hyper::server::conn::http1` keeps
//! them, which is what a fault injector needs.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Notify, watch},
    task::{JoinHandle, JoinSet},
};
use tower::ServiceExt;
use tower_fault::BoxError;
use tower_service::Service;

use crate::faults::{ConnHandle, FaultStats};

/// A running server; dropping it stops the server and closes every connection.
#[derive(Debug)]
pub struct ChaosServer {
    addr: SocketAddr,
    down: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ChaosServer {
    /// Serves `service` on a fresh loopback port. Outage resets are counted in `stats`.
    ///
    /// # Errors
    /// Binding the listener failed.
    pub async fn start<S, B>(service: S, stats: FaultStats) -> io::Result<Self>
    where
        S: Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let (down, down_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, addr, service, down_rx, stats));
        Ok(Self { addr, down, task })
    }

    /// The address the server listens on (kept across outages).
    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Takes the server down: the listener is closed (connects are refused), idle connections
    /// are reset at once, and a connection with a request in flight is reset as soon as that
    /// request's response is produced (a drain: work already started completes, as when a
    /// process is stopped by an orchestrator).
    pub fn go_down(&self) {
        self.down.send_replace(true);
    }

    /// Brings the server back on the same address.
    pub fn come_up(&self) {
        self.down.send_replace(false);
    }

    /// Whether the server is down.
    #[must_use]
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Schedules an outage: down after `after`, back up `duration` later.
    pub fn schedule_outage(&self, after: Duration, duration: Duration) -> JoinHandle<()> {
        let down = self.down.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            down.send_replace(true);
            tokio::time::sleep(duration).await;
            down.send_replace(false);
        })
    }
}

impl Drop for ChaosServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Coming back on the same port after an outage must not wait for TIME_WAIT sockets.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    addr: SocketAddr,
    service: S,
    mut down: watch::Receiver<bool>,
    stats: FaultStats,
) where
    S: Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut listener = Some(listener);
    // Dropped with this task: aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        if let Some(open) = &listener {
            tokio::select! {
                accepted = open.accept() => {
                    if let Ok((stream, _)) = accepted {
                        conns.spawn(serve_connection(stream, service.clone(), down.clone(), stats.clone()));
                    }
                }
                changed = down.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *down.borrow_and_update() {
                        listener = None;
                    }
                }
            }
        } else {
            if down.changed().await.is_err() {
                return;
            }
            if !*down.borrow_and_update() {
                listener = loop {
                    match bind(addr) {
                        Ok(l) => break Some(l),
                        Err(err) => {
                            tracing::warn!(%addr, %err, "rebinding after an outage failed; retrying");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                };
            }
        }
    }
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    mut down: watch::Receiver<bool>,
    stats: FaultStats,
) where
    S: Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let _ = stream.set_nodelay(true);
    // Keep a second descriptor of the socket: a reset sets SO_LINGER to zero on it, then both
    // descriptors are closed, which makes the kernel send RST instead of FIN.
    let Ok((stream, socket)) = split_for_reset(stream) else {
        return;
    };
    let handle = ConnHandle::new();
    let per_request = handle.clone();
    let busy = Arc::new(Busy::default());
    let tracker = Arc::clone(&busy);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(per_request.clone());
        let guard = tracker.enter();
        let fut = service.clone().oneshot(req);
        // The guard lives in the response body: the request counts as in flight until its
        // response has been handed to the connection in full.
        async move {
            fut.await.map(|res| {
                res.map(|inner| GuardedBody {
                    inner,
                    _guard: guard,
                })
            })
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    let outage = async {
        let _ = down.wait_for(|is_down| *is_down).await;
        busy.idle().await;
    };
    tokio::select! {
        // Polled first: a response being written is flushed before an outage reset.
        biased;
        _ = conn => return,
        () = handle.reset_requested() => {}
        () = outage => stats.outage_reset(),
    }
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
}

/// Requests in flight on one connection.
#[derive(Debug, Default)]
struct Busy {
    in_flight: AtomicUsize,
    changed: Notify,
}

struct BusyGuard(Arc<Busy>);

pin_project_lite::pin_project! {
    struct GuardedBody<B> {
        #[pin]
        inner: B,
        _guard: BusyGuard,
    }
}

impl<B: http_body::Body> http_body::Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Busy {
    fn enter(self: &Arc<Self>) -> BusyGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        BusyGuard(Arc::clone(self))
    }

    async fn idle(&self) {
        loop {
            let changed = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

fn split_for_reset(stream: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let std = stream.into_std()?;
    let dup = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, dup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        faults::{FaultLayer, FaultPlan},
        payments::{Ledger, router},
    };
    use tower::ServiceBuilder;

    async fn start(plan: FaultPlan, ledger: &Ledger) -> (ChaosServer, FaultLayer) {
        let faults = FaultLayer::new(plan).unwrap();
        let svc = ServiceBuilder::new()
            .layer(faults.clone())
            .service(router("primary", ledger.clone()));
        let server = ChaosServer::start(svc, faults.stats()).await.unwrap();
        (server, faults)
    }

    fn payment(id: &str) -> serde_json::Value {
        serde_json::json!({ "id": id, "amount": 100 })
    }

    #[tokio::test]
    async fn reset_after_processing_records_then_resets() {
        let ledger = Ledger::new();
        let plan = FaultPlan {
            reset_after_processing: 1.0,
            ..FaultPlan::default()
        };
        let (server, faults) = start(plan, &ledger).await;
        let client = reqwest::Client::new();
        let err = client
            .post(server.url("/payments"))
            .json(&payment("p1"))
            .send()
            .await
            .expect_err("the connection is reset instead of answered");
        let info = tower_fault::inspect(&err);
        assert_eq!(info.kind, tower_fault::ErrorKind::Reset, "{err:?}");
        assert_eq!(ledger.times_recorded("p1"), 1);
        assert_eq!(faults.stats().snapshot().reset_after_processing, 1);
    }

    #[tokio::test]
    async fn outage_refuses_then_recovers_on_the_same_port() {
        let ledger = Ledger::new();
        let (server, faults) = start(FaultPlan::default(), &ledger).await;
        let client = reqwest::Client::new();
        let ok = client
            .post(server.url("/payments"))
            .json(&payment("a"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 201);

        server.go_down();
        assert!(server.is_down());
        // The pooled connection is reset and new connects are refused.
        let mut refused = false;
        for _ in 0..50 {
            match client
                .post(server.url("/payments"))
                .json(&payment("b"))
                .send()
                .await
            {
                Err(err) if err.is_connect() => {
                    refused = true;
                    break;
                }
                Err(_) => {}
                Ok(res) => panic!("answered during the outage: {}", res.status()),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "connects are refused while down");
        assert_eq!(ledger.times_recorded("b"), 0);
        assert_eq!(faults.stats().snapshot().outage_resets, 1);

        server.come_up();
        let mut back = false;
        for _ in 0..100 {
            if let Ok(res) = client
                .post(server.url("/payments"))
                .json(&payment("c"))
                .send()
                .await
            {
                assert_eq!(res.status(), 201);
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(back, "the server comes back on the same address");
        assert_eq!(ledger.times_recorded("c"), 1);
    }

    #[tokio::test]
    async fn going_down_drains_the_request_in_flight() {
        let ledger = Ledger::new();
        let plan = FaultPlan {
            spike: 1.0,
            spike_delay: (Duration::from_millis(300), Duration::from_millis(300)),
            ..FaultPlan::default()
        };
        let (server, faults) = start(plan, &ledger).await;
        let client = reqwest::Client::new();
        let slow = tokio::spawn(
            client
                .post(server.url("/payments"))
                .json(&payment("slow"))
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.go_down();
        let res = slow
            .await
            .unwrap()
            .expect("the request in flight is answered");
        assert_eq!(res.status(), 201);
        assert_eq!(ledger.times_recorded("slow"), 1);
        let err = client
            .post(server.url("/payments"))
            .json(&payment("late"))
            .send()
            .await
            .expect_err("down");
        assert!(
            err.is_connect() || tower_fault::inspect(&err).kind == tower_fault::ErrorKind::Reset
        );
        assert_eq!(faults.stats().snapshot().outage_resets, 1);
    }
}
