//! Accepting and serving connections, with the limits that keep slow or idle clients from holding
//! the process's file descriptors: a cap on open connections, a deadline for each request's
//! headers, and an idle timeout. (The body deadline is the edge's: see [`super::edge`].)
//!
//! `axum::serve` has none of these: ~20 000 connections that sent half a request line and stopped
//! made an instance run out of descriptors (`Too many open files`). hyper's own
//! `header_read_timeout` is not enough either: it runs while a keep-alive connection waits for its
//! next request (so idle connections would close after the header timeout, not the idle one), and
//! it does not cover the bytes `hyper-util` reads to tell HTTP/1 from HTTP/2. So each connection
//! is watched here, from the bytes that cross its socket and the requests that reach the service.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    response::Response,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tower::Service;

use super::AppService;
use crate::config::ConnectionLimits;

/// A source of connections: the listener, or a test's stand-in that fails on purpose.
pub trait Accept: Send {
    /// The next connection and its peer, or why none could be taken.
    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// Descriptors kept free for everything that is not a client connection (Postgres and Redis
/// pools, log files, the listener itself).
pub const RESERVED_FDS: u64 = 256;

/// Longest pause after a failed `accept` (doubling from 10 ms).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Raises the soft file-descriptor limit to the hard one and returns how many connections may be
/// open at once: `min(configured, limit − 256)`, at least 1. Logged, since it may be lower than
/// configured.
pub fn connection_cap(configured: u32) -> usize {
    let limit = raise_fd_limit();
    let cap = match limit {
        Some(limit) => u64::from(configured).min(limit.saturating_sub(RESERVED_FDS)).max(1),
        None => u64::from(configured),
    };
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    if cap < configured as usize {
        tracing::warn!(
            cap,
            configured,
            fd_limit = limit,
            "TESSERA_MAX_CONNECTIONS lowered to fit the file-descriptor limit (raise the hard limit, `ulimit -Hn`)"
        );
    } else {
        tracing::info!(cap, fd_limit = limit, "accepting at most this many connections");
    }
    cap
}

#[cfg(unix)]
fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the file-descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<u64> {
    None
}

/// Serves `app` on `listener` until `stop` resolves, then stops accepting, lets each connection
/// finish its request in flight, and returns when all are closed.
///
/// At most `cap` connections are open at once: past that the loop stops accepting, and new
/// connections wait in the kernel's listen backlog until one closes. A failed `accept` (EMFILE
/// and the like) is logged and retried after a pause; it never ends the loop.
pub async fn serve(
    listener: impl Accept,
    app: AppService,
    limits: ConnectionLimits,
    cap: usize,
    stop: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(cap));
    let (closing_tx, closing_rx) = watch::channel(());
    let mut listener = listener;
    let mut stop = std::pin::pin!(stop);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_closed) => break,
            },
            () = &mut stop => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(tcp, peer, app.clone(), limits, closing_rx.clone(), permit));
            }
            // The peer gave up before we took it: nothing to wait for.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: descriptors or memory run short. Pause so the loop does
                // not spin, then try again; connections that close meanwhile free what is needed.
                tracing::error!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; retrying");
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {},
                    () = &mut stop => break,
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
    drop(listener);
    drop(closing_rx);
    // Tell every connection to finish what it is doing, then wait until all are gone (each holds
    // one permit until it closes).
    drop(closing_tx);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// Serves one connection until it ends, breaks a limit, or the server stops.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: AppService,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: tcp, activity: Arc::clone(&activity) });
    let service = ConnService { app, peer, activity: Arc::clone(&activity) };
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut conn = std::pin::pin!(builder.serve_connection(io, service));
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = activity.expired(limits) => {
                // Dropping the connection closes the socket.
                tracing::debug!(%peer, why, "closing connection");
                return;
            }
            _ = closing.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// "Not waiting for a request's headers."
const NONE: u64 = u64::MAX;

/// What is known of one connection's traffic, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// When the request whose headers are awaited began (its first byte, or the connection's
    /// start for the first request); [`NONE`] while a request is being handled or nothing has
    /// arrived since the last one.
    head_since: AtomicU64,
    /// Requests handed to the service whose response has not been produced yet.
    in_flight: AtomicUsize,
    /// HTTP/2 multiplexes requests: there is no "between requests" to time a header from.
    h2: AtomicBool,
    /// Wakes the watchdog when the deadline that applies changes kind (a header starts arriving,
    /// a request ends), once per request rather than per byte.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes on a quiet HTTP/1 connection: a new request has begun, its headers are timed.
        if self.in_flight.load(Ordering::Relaxed) == 0
            && !self.h2.load(Ordering::Relaxed)
            && self.head_since.compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self, h2: bool) {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
    }

    fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_io.store(self.now(), Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Resolves when the connection has broken a limit, with which one.
    async fn expired(&self, limits: ConnectionLimits) -> &'static str {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE - 1);
        loop {
            let now = self.now();
            let head = self.head_since.load(Ordering::Relaxed);
            let (deadline, why) = if head != NONE {
                (head.saturating_add(ms(limits.header_timeout)), "headers did not arrive in time")
            } else if self.in_flight.load(Ordering::Relaxed) == 0 {
                (self.last_io.load(Ordering::Relaxed).saturating_add(ms(limits.idle_timeout)), "idle")
            } else {
                // A handler is working (bounded by the request timeout): look again later.
                (now.saturating_add(ms(limits.idle_timeout)), "")
            };
            if now >= deadline && !why.is_empty() {
                return why;
            }
            let wake = self.start + Duration::from_millis(deadline.max(now + 1));
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {},
                () = self.changed.notified() => {},
            }
        }
    }
}

/// The socket, noting each byte that crosses it.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The application as one connection's hyper service: adds the peer address (axum's
/// `ConnectInfo`, which [`super::extract::ClientIp`] reads) and tells the connection's
/// [`Activity`] when a request starts and when its response is ready.
#[derive(Clone)]
struct ConnService {
    app: AppService,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Tracked<<AppService as Service<Request>>::Future>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.activity.request_started(req.version() == hyper::Version::HTTP_2);
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // The edge is always ready (see its `poll_ready`).
        let inner = self.app.clone().call(req);
        Tracked { inner, activity: Some(Arc::clone(&self.activity)) }
    }
}

/// A request's future that reports its end to the connection, however it ends.
struct Tracked<F> {
    inner: F,
    activity: Option<Arc<Activity>>,
}

impl<F: Future + Unpin> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let out = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        if let Some(a) = self.activity.take() {
            a.request_done();
        }
        Poll::Ready(out)
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        if let Some(a) = self.activity.take() {
            a.request_done();
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{routing::get, Router};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A listener whose first `failures` accepts fail with EMFILE, as when descriptors run out.
    struct Exhausted {
        inner: TcpListener,
        failures: usize,
    }

    impl Accept for Exhausted {
        async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(io::Error::from_raw_os_error(24));
            }
            self.inner.accept().await
        }
    }

    fn limits() -> ConnectionLimits {
        let s = Duration::from_secs(5);
        ConnectionLimits { header_timeout: s, body_timeout: s, idle_timeout: s, max_connections: 4 }
    }

    #[tokio::test]
    async fn accept_errors_do_not_end_the_loop_and_stop_ends_it_after_connections_finish() {
        let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = inner.local_addr().expect("addr");
        let router = Router::new().route("/", get(|| async { "ok" }));
        let app = super::super::edge::Edge::new(router, Duration::from_secs(5), Default::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = stop_rx.await;
        };
        let server = tokio::spawn(serve(Exhausted { inner, failures: 5 }, app, limits(), 4, stop));

        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.expect("write");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut answer))
            .await
            .expect("served after the accept errors")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops").expect("no panic");
    }

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        let limit = raise_fd_limit();
        let cap = connection_cap(1_000_000);
        match limit {
            Some(limit) => assert_eq!(cap as u64, limit.saturating_sub(RESERVED_FDS).clamp(1, 1_000_000)),
            None => assert_eq!(cap, 1_000_000),
        }
        assert_eq!(connection_cap(2), 2);
    }
}
