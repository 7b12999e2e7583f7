//! Argon2id for low-entropy secrets (passwords, client secrets), with OWASP parameters
//! (m = 19 MiB, t = 2, p = 1). Runs on the blocking pool, bounded so a flood of logins cannot
//! starve everything else of CPU.

use std::sync::{Arc, OnceLock};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

fn argon2() -> Argon2<'static> {
    // argon2's defaults are the OWASP recommendation: Argon2id, 19456 KiB, 2 passes, 1 lane.
    Argon2::default()
}

/// One Argon2 run per core at a time. Each holds 19 MiB and keeps a core busy for ~14 ms, so more
/// at once only adds memory (measured: the benchmark's peak RSS fell by the difference) and
/// waiting inside the blocking pool instead of in this queue.
fn limiter() -> &'static Arc<Semaphore> {
    static SEM: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SEM.get_or_init(|| Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))))
}

/// Hashes a secret into a PHC string.
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

/// Verifies a secret against a PHC string; `None` checks against a dummy hash so the time taken
/// does not reveal whether the account exists. Returns `false` for the dummy.
pub async fn verify(phc: Option<String>, secret: String) -> Result<bool> {
    let _permit = limiter().acquire().await.map_err(|e| Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || match phc {
        Some(h) => verify_blocking(&h, &secret),
        None => {
            let _ = verify_blocking(dummy_hash(), &secret);
            false
        }
    })
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
}
