//! Signing-key lifecycle in Postgres. Every change runs under one transaction-scoped advisory
//! lock, so two instances never rotate at once. The ID-token keys ([`super::id_token_key`]) move
//! with the access-token keys, in the same transactions.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::{id_token_key, material};
use crate::{
    audit::{self, Actor},
    config::{Config, SigningAlg},
    error::{Error, Result},
    revocation::{self, Kind, NewRevocation},
    secrets::Sealer,
    webhooks::{events, EventType},
};

/// Advisory lock key for signing-key changes ("tesssig").
pub const SIGNING_LOCK: i64 = 0x0074_6573_7373_6967;
/// Extra time a retired key stays published beyond the longest token lifetime.
pub const RETIRE_LEEWAY: Duration = Duration::from_secs(300);

/// A signing key as the admin API shows it: never any private part.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({
    "kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
    "alg": "ES256",
    "state": "active",
    "created_at": "2026-11-10T03:00:00Z",
    "activated_at": "2026-11-17T03:00:00Z",
    "retired_at": null,
    "revoked_at": null
}))]
pub struct KeyInfo {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// `next`, `active`, `retired` or `revoked`.
    pub state: String,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Became active.
    #[serde(with = "time::serde::rfc3339::option")]
    pub activated_at: Option<OffsetDateTime>,
    /// Retired.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    /// Revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// What a key-management call needs.
pub struct Ctx<'a> {
    /// Pool.
    pub db: &'a PgPool,
    /// Configuration (algorithm, lifetimes).
    pub config: &'a Config,
    /// Seals private keys (under the current master key).
    pub sealer: &'a Sealer,
    /// Now.
    pub now: OffsetDateTime,
}

async fn lock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SIGNING_LOCK).execute(conn).await?;
    Ok(())
}

async fn insert_key(conn: &mut PgConnection, ctx: &Ctx<'_>, state: &str) -> Result<String> {
    let alg = ctx.config.signing_alg;
    // RSA generation takes a while: keep it off the async workers.
    let generated = tokio::task::spawn_blocking(move || material::generate(alg))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let sealed = ctx.sealer.seal(generated.kid.as_bytes(), &generated.pkcs8);
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, state, private_key_enc, public_jwk, created_at, activated_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $3 = 'active' THEN $6 END)",
    )
    .bind(&generated.kid)
    .bind(alg.as_str())
    .bind(state)
    .bind(sealed)
    .bind(&generated.jwk)
    .bind(ctx.now)
    .execute(conn)
    .await?;
    Ok(generated.kid)
}

async fn state_count(conn: &mut PgConnection, state: &str) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE state = $1").bind(state).fetch_one(conn).await?)
}

/// Makes sure an active and a next key exist, for access tokens and for ID tokens (first start,
/// or after a revocation).
pub async fn ensure(ctx: &Ctx<'_>) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    lock(&mut tx).await?;
    ensure_locked(&mut tx, ctx).await?;
    tx.commit().await?;
    Ok(())
}

async fn ensure_locked(conn: &mut PgConnection, ctx: &Ctx<'_>) -> Result<()> {
    if state_count(conn, "active").await? == 0 {
        if state_count(conn, "next").await? > 0 {
            promote_next(conn, ctx.now).await?;
        } else {
            insert_key(conn, ctx, "active").await?;
        }
    }
    if state_count(conn, "next").await? == 0 {
        insert_key(conn, ctx, "next").await?;
    }
    id_token_key::ensure_locked(conn, ctx.sealer, ctx.now).await
}

async fn promote_next(conn: &mut PgConnection, now: OffsetDateTime) -> Result<()> {
    sqlx::query("UPDATE signing_keys SET state = 'active', activated_at = $1 WHERE state = 'next'")
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// The pre-published next key becomes active, the active one retires (published until its tokens
/// expire), and a new next key is made; the ID-token keys move the same way. Returns the new
/// active (access-token) kid.
///
/// Unless `force`, refuses with [`Error::NextKeyTooNew`] while the next key has been published for
/// less than the JWKS max-age: a verifier that fetched the JWKS just before the key appeared may
/// cache it that long, and would meet the new `kid` as unknown. `force` is for emergencies (the
/// active key is suspected), where some verifiers refetching is the lesser harm.
pub async fn rotate(ctx: &Ctx<'_>, actor: &Actor, force: bool) -> Result<String> {
    let mut tx = ctx.db.begin().await?;
    lock(&mut tx).await?;
    if !force {
        if let Some(not_before) = next_key_not_before(&mut tx, ctx).await? {
            // Keeps a next key made just now (there was none), so the wait it names is real.
            tx.commit().await?;
            let wait = (not_before - ctx.now).as_seconds_f64().ceil().max(1.0);
            return Err(Error::NextKeyTooNew { not_before, retry_after: wait as u64 });
        }
    }
    let kid = rotate_locked(&mut tx, ctx).await?;
    audit::record(&mut tx, ctx.now, actor, "signing_key.rotate", "signing_key", &kid, json!({"force": force})).await?;
    events::signing_key(&mut tx, EventType::SigningKeyRotated, &kid, ctx.now).await?;
    tx.commit().await?;
    Ok(kid)
}

/// When both next keys (access tokens, ID tokens) will have been published for the JWKS max-age,
/// if that is still ahead. Makes a next key where there is none (it would otherwise be made and
/// activated at once).
async fn next_key_not_before(conn: &mut PgConnection, ctx: &Ctx<'_>) -> Result<Option<OffsetDateTime>> {
    let published: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT created_at FROM signing_keys WHERE state = 'next'")
            .fetch_optional(&mut *conn)
            .await?;
    let published = match published {
        Some(at) => at,
        None => {
            insert_key(conn, ctx, "next").await?;
            ctx.now
        }
    };
    let id_published = match id_token_key::next_published_at(conn).await? {
        Some(at) => at,
        None => {
            id_token_key::ensure_locked(conn, ctx.sealer, ctx.now).await?;
            ctx.now
        }
    };
    let not_before = published.max(id_published) + ctx.config.jwks_max_age;
    Ok((not_before > ctx.now).then_some(not_before))
}

async fn rotate_locked(conn: &mut PgConnection, ctx: &Ctx<'_>) -> Result<String> {
    let publish_until = ctx.now + ctx.config.max_access_token_ttl() + RETIRE_LEEWAY;
    sqlx::query(
        "UPDATE signing_keys SET state = 'retired', retired_at = $1, publish_until = $2 WHERE state = 'active'",
    )
    .bind(ctx.now)
    .bind(publish_until)
    .execute(&mut *conn)
    .await?;
    if state_count(conn, "next").await? == 0 {
        insert_key(conn, ctx, "next").await?;
    }
    promote_next(conn, ctx.now).await?;
    insert_key(conn, ctx, "next").await?;
    // ID tokens live no longer than access tokens (their `exp` is the access token's).
    id_token_key::rotate_locked(conn, ctx.sealer, ctx.now, publish_until).await?;
    let kid: String =
        sqlx::query_scalar("SELECT kid FROM signing_keys WHERE state = 'active'").fetch_one(&mut *conn).await?;
    Ok(kid)
}

/// Scheduled rotation: runs only when the active key is older than the rotation period and both
/// next keys (access tokens, ID tokens) have been published for at least the JWKS max-age. Only
/// one instance gets the lock.
pub async fn rotate_if_due(ctx: &Ctx<'_>) -> Result<Option<String>> {
    let mut tx = ctx.db.begin().await?;
    let got: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(SIGNING_LOCK).fetch_one(&mut *tx).await?;
    if !got {
        tx.rollback().await?;
        return Ok(None);
    }
    let active_since: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT activated_at FROM signing_keys WHERE state = 'active'")
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    let next_since: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT created_at FROM signing_keys WHERE state = 'next'").fetch_optional(&mut *tx).await?;
    let Some(id_next_since) = id_token_key::next_published_at(&mut tx).await? else {
        // No next ID-token key (a database from before they rotated): made now, it may sign one
        // JWKS max-age from now at the earliest.
        id_token_key::ensure_locked(&mut tx, ctx.sealer, ctx.now).await?;
        tx.commit().await?;
        return Ok(None);
    };
    let published = |at: OffsetDateTime| at + ctx.config.jwks_max_age <= ctx.now;
    let due = active_since.is_some_and(|a| a + ctx.config.signing_key_rotation <= ctx.now)
        && next_since.is_some_and(published)
        && published(id_next_since);
    if !due {
        // Ended here, not by dropping `tx`: a dropped transaction is rolled back by a task the
        // pool spawns when the connection comes back, so for a moment after this returned the lock
        // would still be held, and a try right after (another instance's, or this one's) skip.
        tx.rollback().await?;
        return Ok(None);
    }
    let kid = rotate_locked(&mut tx, ctx).await?;
    audit::record(
        &mut tx,
        ctx.now,
        &Actor::system(),
        "signing_key.rotate",
        "signing_key",
        &kid,
        json!({"scheduled": true}),
    )
    .await?;
    events::signing_key(&mut tx, EventType::SigningKeyRotated, &kid, ctx.now).await?;
    tx.commit().await?;
    Ok(Some(kid))
}

/// Revokes a key: out of the JWKS at once, every token it signed inactive, an event published.
/// Revoking the active key promotes the next one.
pub async fn revoke(ctx: &Ctx<'_>, kid: &str, actor: &Actor) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    lock(&mut tx).await?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM signing_keys WHERE kid = $1").bind(kid).fetch_optional(&mut *tx).await?;
    match state.as_deref() {
        None => return Err(Error::NotFound("signing key")),
        Some("revoked") => return Ok(()),
        Some(_) => {}
    }
    sqlx::query("UPDATE signing_keys SET state = 'revoked', revoked_at = $2 WHERE kid = $1")
        .bind(kid)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
    ensure_locked(&mut tx, ctx).await?;
    let mut ev = NewRevocation::new(Kind::SigningKey, kid, ctx.now).reason("revoked by admin");
    ev.kid = Some(kid.to_owned());
    revocation::record(&mut tx, &ev).await?;
    audit::record(&mut tx, ctx.now, actor, "signing_key.revoke", "signing_key", kid, json!({"previous_state": state}))
        .await?;
    events::signing_key(&mut tx, EventType::SigningKeyRevoked, kid, ctx.now).await?;
    tx.commit().await?;
    crate::metrics::revocation("signing_key");
    Ok(())
}

/// Every key, newest first.
pub async fn list(db: &PgPool) -> Result<Vec<KeyInfo>> {
    Ok(sqlx::query_as(
        "SELECT kid, alg, state, created_at, activated_at, retired_at, revoked_at FROM signing_keys ORDER BY created_at DESC",
    )
    .fetch_all(db)
    .await?)
}

/// Parses an algorithm stored in the table.
pub fn alg_of(s: &str) -> Option<SigningAlg> {
    SigningAlg::parse(s)
}
