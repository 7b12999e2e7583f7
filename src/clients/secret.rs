//! How client secrets are stored and checked.
//!
//! Secrets the service generates carry 256 random bits: guessing one is hopeless, so a slow hash
//! adds nothing but a way for anonymous callers to burn CPU. They are stored as HMAC-SHA-256 of
//! `client_id NUL secret` under a key derived from the master key, marked [`KEYED_PREFIX`].
//! Secrets chosen by an operator (the bootstrap `admin` secret) may be weak and stay Argon2id PHC
//! strings (`$argon2id$…`), as do secrets stored before keyed hashes existed.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::hmac;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::{get, CreatedClient};
use crate::{
    audit::{self, Actor},
    error::{Error, Result},
    secrets::{self, constant_time_eq, keyed_hash},
};

/// Marks a stored keyed hash; no PHC string starts with it (PHC ids are `[a-z0-9-]`).
pub const KEYED_PREFIX: &str = "$tessera-hmac-sha256$v1$";

fn tag(key: &hmac::Key, client_id: &str, secret: &str) -> [u8; 32] {
    let mut material = Vec::with_capacity(client_id.len() + 1 + secret.len());
    material.extend_from_slice(client_id.as_bytes());
    material.push(0);
    material.extend_from_slice(secret.as_bytes());
    keyed_hash(key, &material)
}

/// The stored form of a generated secret.
pub fn keyed(key: &hmac::Key, client_id: &str, secret: &str) -> String {
    format!("{KEYED_PREFIX}{}", URL_SAFE_NO_PAD.encode(tag(key, client_id, secret)))
}

/// The keyed hash in `stored`, if that is what it holds (else it is an Argon2 PHC string).
pub fn keyed_part(stored: &str) -> Option<&str> {
    stored.strip_prefix(KEYED_PREFIX)
}

/// Whether `secret` matches the keyed hash `encoded` (the part after the prefix), in constant time.
pub fn verify_keyed(key: &hmac::Key, client_id: &str, secret: &str, encoded: &str) -> bool {
    let expected = URL_SAFE_NO_PAD.decode(encoded).unwrap_or_default();
    constant_time_eq(&tag(key, client_id, secret), &expected)
}

/// Gives a confidential client a new generated secret, returned here once; the old one stops
/// working at once on this instance and, on others, once their client record expires (seconds).
/// Errors: `NotFound` for an unknown or disabled client, `Conflict` for a public one (it has none)
/// and for the bootstrap `admin` while `bootstrap_managed` (its secret is
/// `TESSERA_BOOTSTRAP_ADMIN_SECRET`, which the next start would put back).
pub async fn rotate(
    db: &PgPool,
    key: &hmac::Key,
    client_id: &str,
    bootstrap_managed: bool,
    now: OffsetDateTime,
    actor: &Actor,
) -> Result<CreatedClient> {
    if bootstrap_managed && client_id == "admin" {
        return Err(Error::Conflict(
            "the secret of client \"admin\" is TESSERA_BOOTSTRAP_ADMIN_SECRET: change that variable and restart \
             (every instance) to rotate it"
                .into(),
        ));
    }
    let client = get(db, client_id).await?.filter(|c| c.disabled_at.is_none()).ok_or(Error::NotFound("client"))?;
    if client.public {
        return Err(Error::Conflict(format!("client {client_id:?} is public: it has no secret to rotate")));
    }
    let secret = secrets::random_urlsafe(32);
    let mut tx = db.begin().await?;
    let updated = sqlx::query("UPDATE clients SET secret_hash = $2 WHERE client_id = $1 AND disabled_at IS NULL")
        .bind(client_id)
        .bind(keyed(key, client_id, &secret))
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::NotFound("client"));
    }
    audit::record(&mut tx, now, actor, "client.secret_rotate", "client", client_id, json!({})).await?;
    tx.commit().await?;
    Ok(CreatedClient { client, client_secret: Some(secret) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_hash_is_marked_bound_to_its_client_and_verifies_only_its_secret() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[9u8; 32]);
        let stored = keyed(&key, "app", "s3cret");
        let part = keyed_part(&stored).expect("marked");
        assert!(verify_keyed(&key, "app", "s3cret", part));
        assert!(!verify_keyed(&key, "app", "s3cret!", part));
        assert!(!verify_keyed(&key, "other", "s3cret", part), "bound to the client id");
        let other_key = hmac::Key::new(hmac::HMAC_SHA256, &[8u8; 32]);
        assert!(!verify_keyed(&other_key, "app", "s3cret", part));
        assert!(!verify_keyed(&key, "app", "s3cret", "not base64!"));
        assert!(keyed_part("$argon2id$v=19$m=19456,t=2,p=1$abc$def").is_none());
    }
}
