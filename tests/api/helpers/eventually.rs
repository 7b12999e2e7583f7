//! Waiting for a condition instead of sleeping for a fixed time.

use std::time::Duration;

/// What a condition polled by [`eventually`] answers: whether it holds, with the value the test
/// wants from it, and if not, what was seen instead (for the failure message).
pub trait Outcome {
    type Value;
    fn settled(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn settled(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

/// `Err(seen)`: not yet, and `seen` is what the failure message shows.
impl<T, E: std::fmt::Debug> Outcome for Result<T, E> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:?}"))
    }
}

/// Awaits `condition` until it holds, checking every 10 ms, and returns its value (`()` for a
/// `bool`, `T` for `Some(T)` or `Ok(T)`); fails the test naming `what` (and the last `Err` seen)
/// once `timeout` has passed without it. Use it instead of sleeping for a fixed time.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, condition: F) -> <Fut::Output as Outcome>::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
    Fut::Output: Outcome,
{
    match at_most(timeout, condition).await {
        Ok(value) => value,
        Err(seen) if seen.is_empty() => panic!("not within {timeout:?}: {what}"),
        Err(seen) => panic!("not within {timeout:?}: {what} (last seen: {seen})"),
    }
}

/// [`eventually`] without the failure: `Err` with what was last seen once `timeout` has passed,
/// for a wait that is a best effort (a head start) rather than something the test asserts.
pub async fn at_most<F, Fut>(timeout: Duration, mut condition: F) -> Result<<Fut::Output as Outcome>::Value, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
    Fut::Output: Outcome,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match condition().await.settled() {
            Ok(value) => return Ok(value),
            Err(seen) if tokio::time::Instant::now() >= deadline => return Err(seen),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
