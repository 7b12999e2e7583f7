//! The RS256 keys that sign ID tokens. OpenID Connect Core §15.1 makes RS256 the algorithm every
//! relying party supports, so ID tokens are always RS256 while access tokens use
//! `TESSERA_SIGNING_ALG`. The keys are sealed under the master key like the others, published in
//! the JWKS next to the access-token keys, and kept out of the access-token verifiers: a token they
//! signed is never accepted as an access token.
//!
//! They follow the access-token keys' lifecycle, `next → active → retired`, and move with them:
//! every rotation of the access-token keys, scheduled or asked for, rotates these in the same
//! transaction. The next key is published at least `TESSERA_JWKS_MAX_AGE` before it signs (a
//! scheduled rotation waits for both next keys), and a retired key stays published as long as the
//! ID tokens it signed live, so a relying party that cached the JWKS never meets an unknown `kid`.
//! Every function here runs under the caller's signing-key advisory lock.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::material;
use crate::{
    config::SigningAlg,
    error::{Error, Result},
    secrets::Sealer,
};

/// A published key: kid, state (`next`, `active` or `retired`), sealed PKCS#8 and public JWK.
pub type IdKeyRow = (String, String, Vec<u8>, serde_json::Value);

async fn insert(conn: &mut PgConnection, sealer: &Sealer, now: OffsetDateTime, state: &str) -> Result<String> {
    // RSA generation takes a while: keep it off the async workers.
    let generated = tokio::task::spawn_blocking(|| material::generate(SigningAlg::Rs256))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let sealed = sealer.seal(generated.kid.as_bytes(), &generated.pkcs8);
    sqlx::query(
        "INSERT INTO id_token_signing_keys (kid, state, private_key_enc, public_jwk, created_at, activated_at)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $2 = 'active' THEN $5 END)",
    )
    .bind(&generated.kid)
    .bind(state)
    .bind(sealed)
    .bind(&generated.jwk)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(generated.kid)
}

async fn exists(conn: &mut PgConnection, state: &str) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM id_token_signing_keys WHERE state = $1)")
        .bind(state)
        .fetch_one(conn)
        .await?)
}

async fn promote_next(conn: &mut PgConnection, now: OffsetDateTime) -> Result<()> {
    sqlx::query("UPDATE id_token_signing_keys SET state = 'active', activated_at = $1 WHERE state = 'next'")
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes sure an active and a next key exist (first start, or a database from before rotation).
pub async fn ensure_locked(conn: &mut PgConnection, sealer: &Sealer, now: OffsetDateTime) -> Result<()> {
    if !exists(conn, "active").await? {
        if exists(conn, "next").await? {
            promote_next(conn, now).await?;
        } else {
            insert(conn, sealer, now, "active").await?;
        }
    }
    if !exists(conn, "next").await? {
        insert(conn, sealer, now, "next").await?;
    }
    Ok(())
}

/// When the next key was published, if there is one.
pub async fn next_published_at(conn: &mut PgConnection) -> Result<Option<OffsetDateTime>> {
    Ok(sqlx::query_scalar("SELECT created_at FROM id_token_signing_keys WHERE state = 'next'")
        .fetch_optional(conn)
        .await?)
}

/// The next key becomes active, the active one retires (published until `publish_until`, when
/// the last ID token it signed has expired), and a new next key is made. Returns the new active kid.
pub async fn rotate_locked(
    conn: &mut PgConnection,
    sealer: &Sealer,
    now: OffsetDateTime,
    publish_until: OffsetDateTime,
) -> Result<String> {
    sqlx::query(
        "UPDATE id_token_signing_keys SET state = 'retired', retired_at = $1, publish_until = $2 WHERE state = 'active'",
    )
    .bind(now)
    .bind(publish_until)
    .execute(&mut *conn)
    .await?;
    if !exists(conn, "next").await? {
        insert(conn, sealer, now, "next").await?;
    }
    promote_next(conn, now).await?;
    insert(conn, sealer, now, "next").await?;
    Ok(sqlx::query_scalar("SELECT kid FROM id_token_signing_keys WHERE state = 'active'").fetch_one(&mut *conn).await?)
}

/// The published keys (next, active, and retired ones still within `publish_until`), the active
/// one first, then the next, then the retired, newest first.
pub async fn load(db: &PgPool, now: OffsetDateTime) -> Result<Vec<IdKeyRow>> {
    Ok(sqlx::query_as(
        "SELECT kid, state, private_key_enc, public_jwk FROM id_token_signing_keys
         WHERE state IN ('next', 'active') OR (state = 'retired' AND publish_until > $1)
         ORDER BY CASE state WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, created_at DESC",
    )
    .bind(now)
    .fetch_all(db)
    .await?)
}
