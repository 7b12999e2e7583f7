//! A request body that must arrive whole by a deadline (`TESSERA_BODY_TIMEOUT`).
//!
//! A client that sends headers and then trickles or stalls its body holds a connection and a
//! handler. The deadline is for the whole body, not per chunk, so a byte every few seconds does
//! not keep it alive. Requests without a body (an SSE subscription is a `GET`) never meet it.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a late body ends with (the edge answers 408 for it).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// `inner`, ending in [`BodyTimeout`] if it has not ended by `deadline`; `expired` is set then, so
/// the edge knows to answer 408 whatever the handler made of the error.
pub struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Armed only once the body has to be waited for: most bodies arrive with their headers.
    timer: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, deadline: Instant, expired: Arc<AtomicBool>) -> Self {
        Self { inner, deadline, timer: None, expired }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_at_the_deadline_and_says_so() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let expired = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let body = DeadlineBody::new(Body::from_stream(rx), start + Duration::from_secs(1), Arc::clone(&expired));
        tx.try_send(Ok(Bytes::from_static(b"part"))).expect("send");
        let err = axum::body::to_bytes(Body::new(body), usize::MAX).await.expect_err("stalls");
        assert!(expired.load(Ordering::Relaxed));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(err.to_string().contains("did not arrive in time"), "{err}");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_in_time_is_read_whole() {
        let expired = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody::new(Body::from("whole"), Instant::now(), Arc::clone(&expired));
        let bytes = axum::body::to_bytes(Body::new(body), usize::MAX).await.expect("body");
        assert_eq!(&bytes[..], b"whole");
        assert!(!expired.load(Ordering::Relaxed));
    }
}
