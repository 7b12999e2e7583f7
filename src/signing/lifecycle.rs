//! Signing-key lifecycle in Postgres. Every change runs under one transaction-scoped advisory
//! lock, so two instances never rotate at once. The ID-token keys ([`super::id_token_key`]) move
//! with the access-token keys, in the same transactions.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::key_table::Signs;
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
    "revoked_at": null,
    "signs": "access_token"
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
    /// What the key signs: `access_token` or `id_token`.
    #[sqlx(try_from = "String")]
    pub signs: Signs,
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
    Signs::AccessToken.ensure(conn, ctx).await?;
    Signs::IdToken.ensure(conn, ctx).await
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
    let mut published = OffsetDateTime::UNIX_EPOCH;
    for table in Signs::ALL {
        let at = match table.next_published_at(conn).await? {
            Some(at) => at,
            None => {
                table.ensure(conn, ctx).await?;
                ctx.now
            }
        };
        published = published.max(at);
    }
    let not_before = published + ctx.config.jwks_max_age;
    Ok((not_before > ctx.now).then_some(not_before))
}

async fn rotate_locked(conn: &mut PgConnection, ctx: &Ctx<'_>) -> Result<String> {
    let publish_until = ctx.now + ctx.config.max_access_token_ttl() + RETIRE_LEEWAY;
    // ID tokens live no longer than access tokens (their `exp` is the access token's).
    Signs::IdToken.rotate(conn, ctx, publish_until).await?;
    Signs::AccessToken.rotate(conn, ctx, publish_until).await
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
    let next_since = Signs::AccessToken.next_published_at(&mut tx).await?;
    let Some(id_next_since) = Signs::IdToken.next_published_at(&mut tx).await? else {
        // No next ID-token key (a database from before they rotated): made now, it may sign one
        // JWKS max-age from now at the earliest.
        Signs::IdToken.ensure(&mut tx, ctx).await?;
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

/// Revokes a key, of access tokens or of ID tokens: out of the JWKS at once, every token it signed
/// inactive (an ID token's key: its `id_token_hint`s no longer read), an event published. Revoking
/// an active key promotes the next one. Revoking a revoked key again changes nothing.
///
/// Returns what the key signed.
///
/// # Errors
/// [`Error::NotFound`] when neither table holds `kid`.
pub async fn revoke(ctx: &Ctx<'_>, kid: &str, actor: &Actor) -> Result<Signs> {
    let mut tx = ctx.db.begin().await?;
    lock(&mut tx).await?;
    let mut found = None;
    for table in Signs::ALL {
        if let Some(state) = table.state_of(&mut tx, kid).await? {
            found = Some((table, state));
            break;
        }
    }
    let Some((table, state)) = found else {
        tx.rollback().await?;
        return Err(Error::NotFound("signing key"));
    };
    if state == "revoked" {
        // Ended here rather than dropped, so the lock goes with it (see `rotate_if_due`).
        tx.rollback().await?;
        return Ok(table);
    }
    table.revoke(&mut tx, kid, ctx.now).await?;
    ensure_locked(&mut tx, ctx).await?;
    let mut ev = NewRevocation::new(Kind::SigningKey, kid, ctx.now).reason("revoked by admin");
    ev.kid = Some(kid.to_owned());
    revocation::record(&mut tx, &ev).await?;
    let details = json!({"previous_state": state, "signs": table});
    audit::record(&mut tx, ctx.now, actor, "signing_key.revoke", "signing_key", kid, details).await?;
    events::signing_key(&mut tx, EventType::SigningKeyRevoked, kid, ctx.now).await?;
    tx.commit().await?;
    crate::metrics::revocation("signing_key");
    Ok(table)
}

/// Every key that signs `signs`, newest first.
pub async fn list(db: &PgPool, signs: Signs) -> Result<Vec<KeyInfo>> {
    signs.list(db).await
}

/// Parses an algorithm stored in the table.
pub fn alg_of(s: &str) -> Option<SigningAlg> {
    SigningAlg::parse(s)
}
