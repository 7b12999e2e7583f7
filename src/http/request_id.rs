//! Request ids: the client's own `X-Request-Id` when it is sane, else one made here; carried in a
//! task-local while the request runs (the audit log records it) and sent back on the response.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
};

/// The request id header, read from the client when sane and always sent back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; a longer or odd one is replaced (it ends up in the
/// audit log and in logs, so a client must not be able to write kilobytes there).
pub(super) const MAX_CLIENT_REQUEST_ID: usize = 128;

tokio::task_local! {
    /// The id of the request being handled, for handlers that record it (the audit log). Set
    /// around the request's future rather than written into its headers: inserting a header
    /// made hyper's header map grow on every request.
    pub(super) static CURRENT_REQUEST_ID: HeaderValue;
}

/// The id of the request this task is handling, if it runs inside the edge.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(|id| id.to_str().ok().map(str::to_owned)).ok().flatten()
}

/// Length of the random per-process part of generated request ids.
pub(super) const PREFIX_LEN: usize = 12;

/// Request ids without a syscall per request: a random per-process prefix (so ids stay unique
/// across instances and restarts) and a counter. A client's own id is kept when it is short and
/// printable, so a request can be followed across services.
#[derive(Clone)]
pub(super) struct RequestIds {
    prefix: [u8; PREFIX_LEN],
    pub(super) next: Arc<AtomicU64>,
}

impl RequestIds {
    pub(super) fn new() -> Self {
        let mut prefix = [b'0'; PREFIX_LEN];
        for (dst, src) in prefix.iter_mut().zip(crate::secrets::random_base62(PREFIX_LEN).bytes()) {
            *dst = src;
        }
        Self { prefix, next: Arc::new(AtomicU64::new(1)) }
    }

    /// The request's id: the client's own when sane, else a new one.
    pub(super) fn assign(&self, req: &Request) -> HeaderValue {
        if let Some(v) = req.headers().get(REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= MAX_CLIENT_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // prefix, '-', the counter in hex: written by hand, `format!` showed in profiles.
        let mut buf = [0u8; PREFIX_LEN + 1 + 16];
        buf[..PREFIX_LEN].copy_from_slice(&self.prefix);
        buf[PREFIX_LEN] = b'-';
        let digits = (16 - n.leading_zeros() as usize / 4).max(1);
        for i in 0..digits {
            buf[PREFIX_LEN + digits - i] = b"0123456789abcdef"[((n >> (4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf[..=PREFIX_LEN + digits]).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}
