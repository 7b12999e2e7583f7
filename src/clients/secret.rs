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
    secrets::{self, constant_time_eq, keyed_hash, Keyring, VersionedKey},
};

/// Marks a stored keyed hash; no PHC string starts with it (PHC ids are `[a-z0-9-]`). Then
/// `v2$<key id hex>$<tag>` names the HMAC key; `v1$<tag>` (before key ids) names none.
pub const KEYED_PREFIX: &str = "$tessera-hmac-sha256$";

fn tag(key: &hmac::Key, client_id: &str, secret: &str) -> [u8; 32] {
    let mut material = Vec::with_capacity(client_id.len() + 1 + secret.len());
    material.extend_from_slice(client_id.as_bytes());
    material.push(0);
    material.extend_from_slice(secret.as_bytes());
    keyed_hash(key, &material)
}

/// The stored form of a generated secret, under `key`.
pub fn keyed(key: &VersionedKey, client_id: &str, secret: &str) -> String {
    format!("{KEYED_PREFIX}v2${}${}", key.id_hex(), URL_SAFE_NO_PAD.encode(tag(key.key(), client_id, secret)))
}

/// Whether `stored` is a keyed hash (else it is an Argon2 PHC string).
pub fn is_keyed(stored: &str) -> bool {
    stored.starts_with(KEYED_PREFIX)
}

/// The key id (hex) a stored keyed hash names; `None` for Argon2 and for `v1` hashes.
pub fn key_id_of(stored: &str) -> Option<&str> {
    stored.strip_prefix(KEYED_PREFIX)?.strip_prefix("v2$")?.split_once('$').map(|(id, _)| id)
}

/// Whether `secret` matches the keyed hash `stored`, in constant time: under the key a `v2` hash
/// names (if it is still accepted), or under each accepted key for a `v1` hash.
pub fn verify_keyed(ring: &Keyring, client_id: &str, secret: &str, stored: &str) -> bool {
    let Some(rest) = stored.strip_prefix(KEYED_PREFIX) else {
        return false;
    };
    let check = |key: &VersionedKey, encoded: &str| {
        let expected = URL_SAFE_NO_PAD.decode(encoded).unwrap_or_default();
        constant_time_eq(&tag(key.key(), client_id, secret), &expected)
    };
    if let Some(v2) = rest.strip_prefix("v2$") {
        let Some((id_hex, encoded)) = v2.split_once('$') else {
            return false;
        };
        return ring.accepted().find(|k| k.id_hex() == id_hex).is_some_and(|k| check(k, encoded));
    }
    rest.strip_prefix("v1$").is_some_and(|encoded| ring.accepted().any(|k| check(k, encoded)))
}

/// Gives a confidential client a new generated secret, returned here once; the old one stops
/// working at once on this instance and, on others, once their client record expires (seconds).
/// Errors: `NotFound` for an unknown or disabled client, `Conflict` for a public one (it has none)
/// and for the bootstrap `admin` while `bootstrap_managed` (its secret is
/// `TESSERA_BOOTSTRAP_ADMIN_SECRET`, which the next start would put back).
pub async fn rotate(
    db: &PgPool,
    key: &VersionedKey,
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
    fn a_keyed_hash_names_its_key_is_bound_to_its_client_and_verifies_only_its_secret() {
        let key = VersionedKey::new(&[9u8; 32]);
        let ring = Keyring::new(key.clone(), None);
        let stored = keyed(&key, "app", "s3cret");
        assert!(is_keyed(&stored));
        assert_eq!(key_id_of(&stored), Some(key.id_hex().as_str()));
        assert!(verify_keyed(&ring, "app", "s3cret", &stored));
        assert!(!verify_keyed(&ring, "app", "s3cret!", &stored));
        assert!(!verify_keyed(&ring, "other", "s3cret", &stored), "bound to the client id");
        let other = Keyring::new(VersionedKey::new(&[8u8; 32]), None);
        assert!(!verify_keyed(&other, "app", "s3cret", &stored));
        assert!(!verify_keyed(&ring, "app", "s3cret", "$tessera-hmac-sha256$v2$zz$not base64!"));
        assert!(!is_keyed("$argon2id$v=19$m=19456,t=2,p=1$abc$def"));
    }

    #[test]
    fn a_hash_under_the_previous_key_verifies_until_that_key_is_dropped() {
        let (old, new) = (VersionedKey::new(&[1u8; 32]), VersionedKey::new(&[2u8; 32]));
        let stored = keyed(&old, "app", "s3cret");
        assert!(verify_keyed(&Keyring::new(new.clone(), Some(old.clone())), "app", "s3cret", &stored));
        assert!(!verify_keyed(&Keyring::new(new.clone(), None), "app", "s3cret", &stored));
        // A v1 hash (no key id) is tried under every accepted key.
        let v1 = format!("{KEYED_PREFIX}v1${}", URL_SAFE_NO_PAD.encode(tag(old.key(), "app", "s3cret")));
        assert!(verify_keyed(&Keyring::new(new, Some(old)), "app", "s3cret", &v1));
    }
}
