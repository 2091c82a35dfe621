//! A controllable in-process upstream for failover tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use http::{Request, Response};
use tower::{Service, ServiceExt};
use tower_failover::Endpoint;
use tower_fault::BoxError;

/// The shared state of one upstream.
#[derive(Debug)]
pub struct MockState {
    pub name: &'static str,
    /// Status of ordinary requests; 0 answers a connection-refused error.
    pub status: AtomicU16,
    /// Status of `/healthz`.
    pub health: AtomicU16,
    /// Requests received (excluding `/healthz`).
    pub hits: AtomicUsize,
    /// `/healthz` requests received.
    pub probes: AtomicUsize,
    /// `poll_ready` calls.
    pub polls: AtomicUsize,
    /// While set, `poll_ready` is pending.
    pub not_ready: AtomicBool,
    /// While set, ordinary requests never finish.
    pub hang: AtomicBool,
    /// Ordinary requests answer after this many milliseconds (read when called).
    pub delay_ms: AtomicU64,
    /// While set, `poll_ready` fails.
    pub broken: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

/// A tower service standing in for an HTTP client aimed at one upstream.
#[derive(Debug, Clone)]
pub struct Mock(pub Arc<MockState>);

impl Mock {
    pub fn new(name: &'static str) -> Self {
        Mock(Arc::new(MockState {
            name,
            status: AtomicU16::new(200),
            health: AtomicU16::new(200),
            hits: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            polls: AtomicUsize::new(0),
            not_ready: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            wakers: Mutex::default(),
        }))
    }

    pub fn set_status(&self, status: u16) {
        self.0.status.store(status, Ordering::SeqCst);
    }

    pub fn set_health(&self, status: u16) {
        self.0.health.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.0.hits.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> usize {
        self.0.probes.load(Ordering::SeqCst)
    }

    pub fn polls(&self) -> usize {
        self.0.polls.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.not_ready.store(!ready, Ordering::SeqCst);
        if ready {
            for w in self.0.wakers.lock().unwrap().drain(..) {
                w.wake();
            }
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}.test:80", self.0.name)
    }
}

type MockFuture = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

impl Service<Request<String>> for Mock {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = MockFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.polls.fetch_add(1, Ordering::SeqCst);
        if self.0.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err("connection pool closed".into()));
        }
        if self.0.not_ready.load(Ordering::SeqCst) {
            self.0.wakers.lock().unwrap().push(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> MockFuture {
        let state = self.0.clone();
        let health = req.uri().path() == "/healthz";
        let status = if health {
            state.probes.fetch_add(1, Ordering::SeqCst);
            state.health.load(Ordering::SeqCst)
        } else {
            state.hits.fetch_add(1, Ordering::SeqCst);
            state.status.load(Ordering::SeqCst)
        };
        let hang = !health && state.hang.load(Ordering::SeqCst);
        let delay = if health {
            0
        } else {
            state.delay_ms.load(Ordering::SeqCst)
        };
        let body = format!("{} {}", state.name, req.uri());
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if status == 0 {
                let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                return Err(Box::new(refused) as BoxError);
            }
            Ok(Response::builder().status(status).body(body).unwrap())
        })
    }
}

impl Mock {
    /// This upstream as an endpoint named after it.
    pub fn endpoint(&self) -> Endpoint<Mock> {
        Endpoint::new(self.0.name, self.base(), self.clone())
    }
}

/// Waits for `svc` (a failover set) to be ready and sends `req`.
pub async fn send<S>(svc: &mut S, req: Request<String>) -> Result<Response<String>, BoxError>
where
    S: Service<Request<String>, Response = Response<String>, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// A current-thread runtime on the paused clock (for tests that need the thread's own metrics
/// recorder, or run many cases).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A request to `path`.
pub fn get(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

/// Which upstream answered (the first word of the body).
pub fn who(res: &Response<String>) -> &str {
    res.body().split(' ').next().unwrap_or_default()
}

/// Sleeps on the (paused) clock.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Never-ready-checking infallible marker so the type is used.
pub type NoError = Infallible;

/// One client in front of several upstreams: each request goes to the upstream its URI's host
/// names (what an HTTP client does with the URI failover rewrote). It takes any request body,
/// as reqwest's client does.
#[derive(Debug, Clone)]
pub struct Router(pub Vec<Mock>);

impl<B> Service<Request<B>> for Router {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = MockFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> MockFuture {
        let host = req.uri().host().unwrap_or_default().to_owned();
        let upstream = self.0.iter().find(|m| host == format!("{}.test", m.0.name));
        match upstream {
            Some(m) => m.clone().call(req.map(|_| String::new())),
            None => Box::pin(async move { Err(format!("no upstream at `{host}`").into()) }),
        }
    }
}

/// A real HTTP upstream (axum on a loopback port): `GET /hello` answers `name`, `GET /healthz`
/// answers `ok`. Returns its base URL and the server task (abort it to kill the upstream).
pub async fn axum_upstream(name: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(move || async move { name }))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (
        url,
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }),
    )
}
