//! Accepting and serving connections, with the limits that keep slow or idle clients from holding
//! the process's file descriptors: a cap on open connections, a deadline for each request's
//! headers, and an idle timeout. (The body deadline is the edge's: see [`super::edge`].)
//!
//! `axum::serve` has none of these: ~20 000 connections that sent half a request line and stopped
//! made an instance run out of descriptors (`Too many open files`). hyper's own
//! `header_read_timeout` is not enough either: it also runs while a keep-alive connection waits
//! for its next request, so idle connections would close after the header timeout, not the idle
//! one. So each connection is watched (see [`super::conn`]), from the bytes that cross its socket
//! and the requests that reach the service.
//!
//! HTTP/1.1 only, as under `axum::serve` with axum's default features.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
};

use super::{
    conn::{Activity, ConnService, Watched},
    AppService,
};
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
    let mut conn = std::pin::pin!(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
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
