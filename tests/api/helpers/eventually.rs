//! Waiting for a condition instead of sleeping for a fixed time.

use std::time::Duration;

/// Awaits `condition` until it holds, checking every 10 ms; fails the test naming `what` once
/// `timeout` has passed without it. Use it instead of sleeping for a fixed time.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
