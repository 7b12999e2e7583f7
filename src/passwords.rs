//! Argon2id for low-entropy secrets (passwords, operator-chosen client secrets), with OWASP
//! parameters (m = 19 MiB, t = 2, p = 1). Runs on the blocking pool, bounded so a flood of logins
//! cannot starve everything else of CPU.
//!
//! Checks that anonymous callers can cause (sign-in, client authentication) go through a [`Pool`]:
//! `TESSERA_ARGON2_WORKERS` runs at once, waiters served round-robin by source address, and a
//! waiter that gets no worker within [`POOL_WAIT`] gives up with [`Error::Saturated`].

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use tokio::sync::Semaphore;

use crate::{
    error::{Error, Result},
    throttle::fair::FairPool,
};

/// How long a check waits for a worker before the request is refused (503 with `Retry-After`).
pub const POOL_WAIT: Duration = Duration::from_secs(2);
/// `Retry-After` seconds when no worker came free.
const SATURATED_RETRY_AFTER: u64 = 2;

/// The bounded Argon2 pool for checks on behalf of callers; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    fair: FairPool<Option<IpAddr>>,
    runs: Arc<AtomicU64>,
}

impl Pool {
    /// `workers` Argon2 runs at once; each waiter gives up after [`POOL_WAIT`].
    pub fn new(workers: usize) -> Self {
        Self::with_wait(workers, POOL_WAIT)
    }

    /// As [`Pool::new`] with another wait (tests).
    pub fn with_wait(workers: usize, wait: Duration) -> Self {
        Self { fair: FairPool::new(workers.max(1), wait), runs: Arc::default() }
    }

    /// Argon2 verifications this pool has run (dummy checks included).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Checks waiting for a worker right now.
    pub fn waiting(&self) -> usize {
        self.fair.waiting()
    }

    /// Verifies `secret` against a PHC string for a caller at `source` (`None`: a dummy check, so
    /// the time taken does not reveal whether the account exists; returns `false`).
    /// `Err(Error::Saturated)` when no worker came free in time.
    pub async fn verify(&self, source: Option<IpAddr>, phc: Option<String>, secret: String) -> Result<bool> {
        let permit = self.fair.acquire(source).await.map_err(|_| Error::Saturated(SATURATED_RETRY_AFTER))?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        // The permit travels with the work: a caller that disconnects does not free a worker
        // that is still hashing.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            check(phc.as_deref(), &secret)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    }
}

fn check(phc: Option<&str>, secret: &str) -> bool {
    match phc {
        Some(h) => verify_blocking(h, secret),
        None => {
            let _ = verify_blocking(dummy_hash(), secret);
            false
        }
    }
}

fn argon2() -> Argon2<'static> {
    // argon2's defaults are the OWASP recommendation: Argon2id, 19456 KiB, 2 passes, 1 lane.
    Argon2::default()
}

/// Hashing for admin operations and start-up (not reachable anonymously): one Argon2 run per
/// core at a time. Each holds 19 MiB and keeps a core busy for ~14 ms, so more
/// at once only adds memory (measured: the benchmark's peak RSS fell by the difference) and
/// waiting inside the blocking pool instead of in this queue.
fn limiter() -> &'static Arc<Semaphore> {
    static SEM: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SEM.get_or_init(|| Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))))
}

/// Hashes a secret into a PHC string (admin operations, start-up).
pub async fn hash(secret: String) -> Result<String> {
    let _permit = limiter().acquire().await.map_err(|e| Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || hash_blocking(&secret)).await.map_err(|e| Error::Internal(e.to_string()))?
}

/// Hashes on the current thread (CLI, start-up).
pub fn hash_blocking(secret: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// Verifies a secret against a PHC string outside any request (start-up); `None` checks
/// against a dummy hash and returns `false`.
pub async fn verify(phc: Option<String>, secret: String) -> Result<bool> {
    let _permit = limiter().acquire().await.map_err(|e| Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || check(phc.as_deref(), &secret))
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Verifies on the current thread.
pub fn verify_blocking(phc: &str, secret: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("tessera-dummy-secret-for-timing").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking(&h, "correct horse"));
        assert!(!verify_blocking(&h, "wrong horse"));
    }

    #[tokio::test]
    async fn a_check_that_finds_no_worker_within_the_wait_is_refused_as_saturated() {
        let pool = Pool::with_wait(1, Duration::from_millis(50));
        let h = hash_blocking("correct horse").unwrap();
        // Hold the only worker.
        let held = pool.fair.acquire(None).await.unwrap();
        let refused = pool.verify(Some([127, 0, 0, 9].into()), Some(h.clone()), "correct horse".into()).await;
        assert!(matches!(refused, Err(Error::Saturated(2))), "{refused:?}");
        drop(held);
        assert!(pool.verify(Some([127, 0, 0, 9].into()), Some(h), "correct horse".into()).await.unwrap());
        assert!(!pool.verify(None, None, "anything".into()).await.unwrap());
    }
}
