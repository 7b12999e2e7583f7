//! One connection as the server sees it: when its bytes last moved, whether a request's headers
//! are awaited and since when, and how many requests are being handled. The server closes it
//! when its headers are late or it has been idle too long (see [`super::server`]).
//!
//! Deadlines are counted from the traffic itself rather than from hyper's states: the headers of
//! a request from the connection's start or from the first byte after the previous response (so
//! a client that sends half a request line is cut after `TESSERA_HEADER_TIMEOUT`), and idleness
//! from the last byte either way with nothing in flight (so a keep-alive connection lives
//! `TESSERA_IDLE_TIMEOUT`, not the header timeout). A request being handled is bounded by the
//! request timeout, not here.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
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
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Notify,
    time::Instant,
};
use tower::Service;

use super::AppService;
use crate::config::ConnectionLimits;

/// "Not waiting for a request's headers."
const NONE: u64 = u64::MAX;

/// What is known of one connection's traffic, in milliseconds since it was accepted.
pub(super) struct Activity {
    start: Instant,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// When the request whose headers are awaited began (its first byte, or the connection's
    /// start for the first request); [`NONE`] while a request is being handled or nothing has
    /// arrived since the last one.
    head_since: AtomicU64,
    /// Requests handed to the service whose response has not been produced yet.
    in_flight: AtomicUsize,
    /// Wakes the watchdog when the deadline that applies changes kind (a header starts arriving,
    /// a request ends), once per request rather than per byte.
    changed: Notify,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes on a quiet connection: a new request has begun, its headers are timed.
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
    }

    fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_io.store(self.now(), Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Resolves when the connection has broken a limit, with which one.
    pub(super) async fn expired(&self, limits: ConnectionLimits) -> &'static str {
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
pub(super) struct Watched {
    pub(super) inner: TcpStream,
    pub(super) activity: Arc<Activity>,
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
pub(super) struct ConnService {
    pub(super) app: AppService,
    pub(super) peer: SocketAddr,
    pub(super) activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Tracked<<AppService as Service<Request>>::Future>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // The edge is always ready (see its `poll_ready`).
        let inner = self.app.clone().call(req);
        Tracked { inner, activity: Some(Arc::clone(&self.activity)) }
    }
}

/// A request's future that reports its end to the connection, however it ends.
pub(super) struct Tracked<F> {
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
