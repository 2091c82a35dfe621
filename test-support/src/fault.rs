//! A raw-TCP HTTP/1.1 server that misbehaves on purpose.
//!
//! wiremock answers well-formed HTTP; some faults live below HTTP: a connection reset (TCP RST)
//! after the request was read, a close before any answer, a response cut in the middle, a server
//! that never answers, a port that refuses connections. [`FaultServer`] does all of those, one
//! [`Action`] per incoming request, in arrival order, and records what it received.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use test_support::fault::{Action, FaultServer, Reply};
//!
//! let server = FaultServer::with_script([
//!     Action::ResetAfterRequest,
//!     Action::Respond(Reply::status(503).header("retry-after", "1")),
//! ])
//! .await;
//! // ... send requests to server.url("/pay") ...
//! assert_eq!(server.requests(), 0);
//! # }
//! ```

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// The largest request head the server reads.
const MAX_HEAD: usize = 64 * 1024;
/// The largest request body the server reads; a larger one (or a nonsense length) closes the
/// connection instead of buffering without bound or overflowing a chunk size.
const MAX_BODY: usize = 64 * 1024 * 1024;

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "request body too large")
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Reply {
    /// A reply with `status`, no extra headers and an empty body.
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header (repeat the call for multi-valued headers).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body (`Content-Length` is added automatically).
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    fn head(&self, content_length: usize) -> Vec<u8> {
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {content_length}\r\n\r\n"));
        head.into_bytes()
    }
}

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the request and answer.
    Respond(Reply),
    /// Read the request, wait, then answer.
    Delay(Duration, Reply),
    /// Read the whole request, then reset the connection (TCP RST): the request *was* received.
    ResetAfterRequest,
    /// Reset the connection as soon as the request starts arriving, without reading it.
    ResetBeforeRequest,
    /// Read the request, then close the connection cleanly without answering (the client sees
    /// an incomplete message).
    CloseAfterRequest,
    /// Answer with the full head and only half of the body, then close.
    Truncated(Reply),
    /// Answer with the full head and only half of the body, then send nothing more and keep
    /// the connection open (until the server is dropped): a body that stalls.
    StalledBody(Reply),
    /// Read the request and never answer (until the server is dropped or the listener closed).
    Hang,
}

impl Default for Action {
    fn default() -> Self {
        Action::Respond(Reply::status(200).body("ok"))
    }
}

/// A request the server read completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// The headers, in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding decoded).
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<VecDeque<Action>>,
    fallback: Mutex<Action>,
    received: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    requests: AtomicUsize,
}

impl Shared {
    fn next_action(&self) -> Action {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let scripted = lock(&self.script).pop_front();
        scripted.unwrap_or_else(|| lock(&self.fallback).clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A scriptable HTTP/1.1 server on loopback. Stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// A second handle on the listening socket, so `close_listener` can stop it listening at
    /// once (aborting the accept task only drops the socket whenever the task is next polled,
    /// and until then the kernel still completes connections into the backlog).
    control: Mutex<Option<std::net::TcpListener>>,
}

impl FaultServer {
    /// A server that answers `200 ok` to every request.
    pub async fn start() -> Self {
        Self::with_script([]).await
    }

    /// A server that answers requests with `script`, in order, then with the fallback.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn with_script(script: impl IntoIterator<Item = Action>) -> Self {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let control = std_listener.try_clone().expect("clone the listener handle");
        let listener = TcpListener::from_std(std_listener).expect("register the listener");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        lock(&shared.script).extend(script);
        let (shutdown, watcher) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), watcher));
        Self {
            addr,
            shared,
            shutdown,
            accept: Mutex::new(Some(accept)),
            control: Mutex::new(Some(control)),
        }
    }

    /// Appends an action to the script.
    pub fn push(&self, action: Action) {
        lock(&self.shared.script).push_back(action);
    }

    /// Sets what the server does once the script is exhausted.
    pub fn set_fallback(&self, action: Action) {
        *lock(&self.shared.fallback) = action;
    }

    /// The listening address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests that reached the server so far (including ones it reset before reading).
    #[must_use]
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The requests read completely, in arrival order.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Closes the listener and every open connection: from now on connections are refused.
    pub fn close_listener(&self) {
        if let Some(control) = lock(&self.control).take() {
            // Linux: shutting down a listening socket stops it listening (pending and new
            // connections are refused) right now, not when the accept task is next polled.
            let _ = socket2::SockRef::from(&control).shutdown(std::net::Shutdown::Read);
        }
        if let Some(accept) = lock(&self.accept).take() {
            accept.abort();
        }
        let _ = self.shutdown.send(true);
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.close_listener();
    }
}

/// A loopback address nothing listens on (connections to it are refused).
///
/// # Panics
/// If no loopback port can be bound.
#[must_use]
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address")
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    while let Ok((stream, _)) = listener.accept().await {
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_connection(stream, &shared) => {}
                _ = shutdown.wait_for(|closed| *closed) => {}
            }
        });
    }
}

/// Serves requests on one connection until it closes or an action ends it.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while buf.is_empty() {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let action = shared.next_action();
        if action == Action::ResetBeforeRequest {
            return reset(stream);
        }
        let Some((request, keep_alive)) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        lock(&shared.received).push(request);
        match action {
            Action::Respond(reply) => write_reply(&mut stream, &reply).await?,
            Action::Delay(delay, reply) => {
                tokio::time::sleep(delay).await;
                write_reply(&mut stream, &reply).await?;
            }
            Action::ResetAfterRequest | Action::ResetBeforeRequest => return reset(stream),
            Action::CloseAfterRequest => return stream.shutdown().await,
            Action::Truncated(reply) => {
                write_half(&mut stream, &reply).await?;
                return stream.shutdown().await;
            }
            Action::StalledBody(reply) => {
                write_half(&mut stream, &reply).await?;
                std::future::pending::<()>().await;
            }
            Action::Hang => std::future::pending::<()>().await,
        }
        if !keep_alive {
            return stream.shutdown().await;
        }
    }
}

async fn write_reply(stream: &mut TcpStream, reply: &Reply) -> io::Result<()> {
    let mut out = reply.head(reply.body.len());
    out.extend_from_slice(&reply.body);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Writes `reply`'s full head (its whole length announced) and the first half of its body.
async fn write_half(stream: &mut TcpStream, reply: &Reply) -> io::Result<()> {
    stream.write_all(&reply.head(reply.body.len())).await?;
    stream
        .write_all(&reply.body[..reply.body.len() / 2])
        .await?;
    stream.flush().await
}

/// Drops the connection with `SO_LINGER(0)`, which makes the kernel send a TCP RST.
fn reset(stream: TcpStream) -> io::Result<()> {
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

/// Reads one request (head and body). `None` if the peer closed mid-request.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> io::Result<Option<(Received, bool)>> {
    let (head_len, method, path, headers) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (
                    len,
                    req.method.unwrap_or_default().to_owned(),
                    req.path.unwrap_or_default().to_owned(),
                    headers,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                if stream.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            }
            Ok(httparse::Status::Partial) | Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad request head",
                ));
            }
        }
    };
    buf.advance(head_len);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let keep_alive = header("connection").is_none_or(|v| !v.contains("close"));
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(stream, buf).await?
    } else {
        let len = header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            return Err(too_large());
        }
        read_exact_buffered(stream, buf, len).await?
    };
    Ok(body.map(|body| {
        (
            Received {
                method,
                path,
                headers,
                body,
            },
            keep_alive,
        )
    }))
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, at_least: usize) -> io::Result<bool> {
    while buf.len() < at_least {
        if stream.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn read_exact_buffered(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    len: usize,
) -> io::Result<Option<Vec<u8>>> {
    if !fill(stream, buf, len).await? {
        return Ok(None);
    }
    Ok(Some(buf.split_to(len).to_vec()))
}

async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Option<String>> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 2);
            return Ok(Some(line));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk line too long",
            ));
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line) = read_line(stream, buf).await? else {
            return Ok(None);
        };
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size > MAX_BODY - body.len() {
            return Err(too_large());
        }
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                match read_line(stream, buf).await? {
                    None => return Ok(None),
                    Some(l) if l.is_empty() => return Ok(Some(body)),
                    Some(_) => {}
                }
            }
        }
        if !fill(stream, buf, size + 2).await? {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    fn client() -> TestClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    fn post(url: &str, body: &'static str) -> http::Request<Full<Bytes>> {
        http::Request::post(url)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    #[tokio::test]
    async fn scripted_statuses_then_fallback() {
        let server = FaultServer::with_script([Action::Respond(
            Reply::status(503).header("retry-after", "2"),
        )])
        .await;
        let client = client();
        let first = client.request(post(&server.url("/a"), "x")).await.unwrap();
        assert_eq!(first.status(), 503);
        assert_eq!(first.headers()["retry-after"], "2");
        let second = client.request(post(&server.url("/b"), "y")).await.unwrap();
        assert_eq!(second.status(), 200);
        assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(server.requests(), 2);
        let received = server.received();
        assert_eq!(received[0].path, "/a");
        assert_eq!(received[1].body, b"y");
        assert_eq!(received[1].method, "POST");
    }

    #[tokio::test]
    async fn reset_after_request_is_seen_as_a_reset_and_the_request_was_read() {
        let server = FaultServer::with_script([Action::ResetAfterRequest]).await;
        let err = client()
            .request(post(&server.url("/"), "paid"))
            .await
            .unwrap_err();
        let io = find_io(&err).expect("an io error in the chain");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset, "{err:?}");
        assert_eq!(server.received()[0].body, b"paid");
    }

    #[tokio::test]
    async fn close_after_request_is_an_incomplete_message() {
        let server = FaultServer::with_script([Action::CloseAfterRequest]).await;
        let err = client()
            .request(post(&server.url("/"), "x"))
            .await
            .unwrap_err();
        let hyper = find::<hyper::Error>(&err).expect("a hyper error in the chain");
        assert!(hyper.is_incomplete_message(), "{err:?}");
    }

    #[tokio::test]
    async fn truncated_body_fails_while_reading() {
        let server =
            FaultServer::with_script([Action::Truncated(Reply::status(200).body("0123456789"))])
                .await;
        let res = client().request(post(&server.url("/"), "x")).await.unwrap();
        assert!(res.into_body().collect().await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_sends_half_and_then_nothing() {
        let server =
            FaultServer::with_script([Action::StalledBody(Reply::status(200).body("0123456789"))])
                .await;
        let res = client().request(post(&server.url("/"), "x")).await.unwrap();
        assert_eq!(res.headers()["content-length"], "10");
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "01234");
        let more = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(more.is_err(), "the body went on: {more:?}");
    }

    #[tokio::test]
    async fn closed_listener_refuses_connections() {
        let server = FaultServer::start().await;
        server.close_listener();
        // Refused at once, without giving the accept task a chance to run.
        let refused = std::net::TcpStream::connect(server.addr()).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        let err = client()
            .request(post(&server.url("/"), "x"))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let err = client()
            .request(post(&format!("http://{}/", refused_addr()), "x"))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn hang_never_answers_and_delay_answers_late() {
        let server = FaultServer::with_script([
            Action::Hang,
            Action::Delay(Duration::from_secs(5), Reply::status(201)),
        ])
        .await;
        let client = client();
        let hung = tokio::time::timeout(
            Duration::from_secs(30),
            client.request(post(&server.url("/"), "x")),
        )
        .await;
        assert!(hung.is_err(), "a hung request must not complete");
        let start = tokio::time::Instant::now();
        let res = client.request(post(&server.url("/"), "x")).await.unwrap();
        assert_eq!(res.status(), 201);
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded() {
        let server = FaultServer::start().await;
        let frames = ["hello, ", "world"]
            .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(c))));
        let chunks = futures_util::stream::iter(frames);
        let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
        let req = http::Request::post(server.url("/stream"))
            .body(StreamBody::new(chunks))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(server.received()[0].body, b"hello, world");
        assert_eq!(
            server.received()[0].header("transfer-encoding"),
            Some("chunked")
        );
    }

    #[tokio::test]
    async fn nonsense_body_lengths_close_the_connection() {
        let server = FaultServer::start().await;
        for head in [
            "POST / HTTP/1.1\r\ncontent-length: 1152921504606846976\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        ] {
            let mut stream = TcpStream::connect(server.addr()).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
                .await
                .expect("closed at once, not waiting for an endless body");
            assert!(read.is_err() || out.is_empty(), "{head:?}: {out:?}");
        }
        assert!(server.received().is_empty());
    }

    fn find<'a, E: std::error::Error + 'static>(
        err: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a E> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }

    fn find_io<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
        find::<io::Error>(err)
    }
}
