//! SQL for `api_keys`. Changes that must happen once (rotation, revocation) are conditional
//! UPDATEs, never read-then-write, so concurrent callers cannot both win.

use std::sync::Arc;

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    cache::KeyRecord,
    format::HASH_VERSION,
    model::ApiKeyView,
    policy::{OwnerPolicy, OWNER_COLUMNS, OWNER_JOIN},
    validate::parse_cidr,
};
use crate::{
    error::{Error, Result},
    revocation::{self, Kind},
};

pub(crate) const VIEW_COLUMNS: &str =
    "id, start, name, scopes, environment, expires_at, allowed_cidrs, metadata, created_at, owner,
     revoked_at, revoked_reason, rotated_from, rotated_to, last_used_at, last_used_ip";

/// Second half of the two-key advisory lock that serialises key creation per owner ("tk").
const OWNER_LOCK_CLASS: i32 = 0x746b;

/// A row about to be inserted.
pub struct NewRow<'a> {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner: &'a str,
    /// Name.
    pub name: &'a str,
    /// Keyed hash of the key.
    pub hash: [u8; 32],
    /// First characters of the key.
    pub start: &'a str,
    /// `live` or `test`.
    pub environment: &'a str,
    /// Scopes.
    pub scopes: &'a [String],
    /// Canonical CIDRs.
    pub allowed_cidrs: &'a [String],
    /// Metadata object.
    pub metadata: &'a Value,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Predecessor, for a rotation.
    pub rotated_from: Option<Uuid>,
}

/// Inserts a key and returns it as shown.
pub async fn insert(conn: &mut PgConnection, row: &NewRow<'_>) -> Result<ApiKeyView> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, owner, name, key_hash, hash_version, start, environment, scopes, allowed_cidrs,
                               metadata, created_at, expires_at, rotated_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {VIEW_COLUMNS}"
    ))
    .bind(row.id)
    .bind(row.owner)
    .bind(row.name)
    .bind(&row.hash[..])
    .bind(HASH_VERSION)
    .bind(row.start)
    .bind(row.environment)
    .bind(row.scopes)
    .bind(row.allowed_cidrs)
    .bind(row.metadata)
    .bind(row.created_at)
    .bind(row.expires_at)
    .bind(row.rotated_from)
    .fetch_one(conn)
    .await?)
}

/// Takes the owner's creation lock for the rest of the transaction, then counts the owner's live
/// keys (not revoked, not expired, not replaced by a rotation), stopping at `limit`: the answer is
/// exact below the limit and `limit` at or above it, so the cost is bounded by the limit and the
/// partial index `api_keys_owner_live` keeps dead keys out of the walk.
pub async fn lock_and_count_live(conn: &mut PgConnection, owner: &str, now: OffsetDateTime, limit: i64) -> Result<i64> {
    lock_owner(conn, owner).await?;
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM api_keys WHERE owner = $1 AND revoked_at IS NULL AND rotated_to IS NULL
           AND (expires_at IS NULL OR expires_at > $2) LIMIT $3) AS live",
    )
    .bind(owner)
    .bind(now)
    .bind(limit)
    .fetch_one(conn)
    .await?)
}

/// Takes `owner`'s key-creation lock for the rest of the transaction: key creation and changes to
/// the owner's `key_scopes` take turns.
pub async fn lock_owner(conn: &mut PgConnection, owner: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(OWNER_LOCK_CLASS)
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes every key of `owner` not revoked yet; returns each with its expiry, for the events.
pub async fn revoke_owned(
    conn: &mut PgConnection,
    owner: &str,
    now: OffsetDateTime,
    reason: &str,
) -> Result<Vec<(Uuid, Option<OffsetDateTime>)>> {
    Ok(sqlx::query_as(
        "UPDATE api_keys SET revoked_at = $2, revoked_reason = $3
         WHERE owner = $1 AND revoked_at IS NULL RETURNING id, expires_at",
    )
    .bind(owner)
    .bind(now)
    .bind(reason)
    .fetch_all(conn)
    .await?)
}

/// One key as shown.
pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<ApiKeyView>> {
    Ok(sqlx::query_as(&format!("SELECT {VIEW_COLUMNS} FROM api_keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// The key with this keyed hash, as shown (admin look-up; verification uses [`find_by_hash`]).
pub async fn get_by_hash(db: &PgPool, hash: &[u8; 32]) -> Result<Option<ApiKeyView>> {
    Ok(sqlx::query_as(&format!("SELECT {VIEW_COLUMNS} FROM api_keys WHERE key_hash = $1 AND hash_version = $2"))
        .bind(&hash[..])
        .bind(HASH_VERSION)
        .fetch_optional(db)
        .await?)
}

/// Every key of `owner`, oldest first.
pub async fn list(db: &PgPool, owner: &str) -> Result<Vec<ApiKeyView>> {
    Ok(sqlx::query_as(&format!("SELECT {VIEW_COLUMNS} FROM api_keys WHERE owner = $1 ORDER BY created_at, id"))
        .bind(owner)
        .fetch_all(db)
        .await?)
}

type RecordRow = (
    Uuid,
    String,
    String,
    String,
    Vec<String>,
    Vec<String>,
    Value,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<Uuid>,
    Option<Vec<String>>,
    bool,
);

/// The key with this keyed hash, as verification needs it, with its owner's policy read in the
/// same statement (so the effective scopes and the owner's state are as current as the key).
pub async fn find_by_hash(db: &PgPool, hash: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>> {
    let row: Option<RecordRow> = sqlx::query_as(&format!(
        "SELECT k.id, k.owner, k.name, k.environment, k.scopes, k.allowed_cidrs, k.metadata, k.expires_at,
                k.revoked_at, k.rotated_to, {OWNER_COLUMNS}
         FROM api_keys k {OWNER_JOIN} WHERE k.key_hash = $1 AND k.hash_version = $2"
    ))
    .bind(&hash[..])
    .bind(HASH_VERSION)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        let (id, owner, name, environment, scopes, cidrs, metadata, expires_at, revoked_at, rotated_to, ks, gone) = r;
        let policy = OwnerPolicy { key_scopes: ks, gone };
        let allowed: Vec<ipnet::IpNet> = cidrs
            .iter()
            .filter_map(|c| {
                let net = parse_cidr(c).map(|n| n.trunc());
                if net.is_none() {
                    tracing::warn!(key_id = %id, "unreadable stored CIDR ignored (it matches no address)");
                }
                net
            })
            .collect();
        Arc::new(KeyRecord {
            id,
            owner,
            name,
            environment: super::Environment::parse(&environment).map_or("unknown", |e| e.as_str()),
            effective_scopes: policy.effective(&scopes).into_boxed_slice(),
            owner_gone: policy.gone,
            restricted: !cidrs.is_empty(),
            allowed: allowed.into_boxed_slice(),
            metadata,
            expires_at,
            revoked_at,
            rotated_to,
        })
    }))
}

/// What a rotated key hands down to its successor.
#[derive(Debug, sqlx::FromRow)]
pub struct Inherited {
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// `live` or `test`.
    pub environment: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// CIDRs.
    pub allowed_cidrs: Vec<String>,
    /// Metadata.
    pub metadata: Value,
    /// The old key's expiry before the rotation (the successor's expiry).
    pub expires_at: Option<OffsetDateTime>,
}

/// Marks `id` rotated to `successor`, ending its validity at `grace_until` at the latest — only if it
/// is live and, when `owner` is given, owned by them. `None` when nothing was changed.
pub async fn mark_rotated(
    conn: &mut PgConnection,
    id: Uuid,
    owner: Option<&str>,
    successor: Uuid,
    now: OffsetDateTime,
    grace_until: OffsetDateTime,
) -> Result<Option<Inherited>> {
    // The self-join keeps the expiry as it was before this statement, which RETURNING alone cannot.
    Ok(sqlx::query_as(
        "UPDATE api_keys k SET rotated_to = $3,
             expires_at = CASE WHEN k.expires_at IS NULL OR k.expires_at > $5 THEN $5 ELSE k.expires_at END
         FROM (SELECT id, expires_at FROM api_keys WHERE id = $1) o
         WHERE k.id = o.id AND k.rotated_to IS NULL AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > $4) AND ($2::text IS NULL OR k.owner = $2)
         RETURNING k.owner, k.name, k.environment, k.scopes, k.allowed_cidrs, k.metadata, o.expires_at",
    )
    .bind(id)
    .bind(owner)
    .bind(successor)
    .bind(now)
    .bind(grace_until)
    .fetch_optional(conn)
    .await?)
}

/// Marks `id` revoked, if it is not already and (when `owner` is given) is theirs. Returns its expiry.
pub async fn mark_revoked(
    conn: &mut PgConnection,
    id: Uuid,
    owner: Option<&str>,
    now: OffsetDateTime,
    reason: Option<&str>,
) -> Result<Option<Option<OffsetDateTime>>> {
    Ok(sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = $3, revoked_reason = $4
         WHERE id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR owner = $2) RETURNING expires_at",
    )
    .bind(id)
    .bind(owner)
    .bind(now)
    .bind(reason)
    .fetch_optional(conn)
    .await?)
}

/// Why a key cannot be rotated: not there (or not the caller's), revoked, already rotated, or expired.
pub async fn why_not_rotatable(
    conn: &mut PgConnection,
    id: Uuid,
    owner: Option<&str>,
    now: OffsetDateTime,
) -> Result<Error> {
    type State = (String, Option<OffsetDateTime>, Option<Uuid>, Option<OffsetDateTime>);
    let row: Option<State> =
        sqlx::query_as("SELECT owner, revoked_at, rotated_to, expires_at FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        None => Error::NotFound("API key"),
        Some((o, ..)) if owner.is_some_and(|w| w != o) => Error::NotFound("API key"),
        Some((_, Some(_), ..)) => Error::Conflict("the key is revoked and cannot be rotated".into()),
        Some((_, _, Some(to), _)) => Error::Conflict(format!("the key has already been rotated (to {to})")),
        Some((_, _, _, Some(exp))) if exp <= now => Error::Conflict("the key has expired and cannot be rotated".into()),
        // It changed between the two statements; the caller may simply try again.
        Some(_) => Error::Conflict("the key changed during rotation; try again".into()),
    })
}

/// Called in the transaction that changed `owner`'s `key_scopes`: takes the owner's key-creation
/// lock (so a key created concurrently is either checked against the new value or listed here),
/// then tells every instance to drop what it cached about each of the owner's usable keys. A change
/// that `narrowed` what they may do is written to the revocation outbox (kind `api_key_changed`, one
/// event per key, so verifiers outside Tessera learn it too) and reaches every instance within a
/// second even across a lost notification; a widening only needs the fast, best-effort
/// notification (a missed one is bounded by the cache TTL). Returns the keys, for this instance to
/// forget after commit.
pub async fn owner_changed(
    conn: &mut PgConnection,
    owner: &str,
    now: OffsetDateTime,
    narrowed: bool,
) -> Result<Vec<Uuid>> {
    lock_owner(conn, owner).await?;
    let keys: Vec<(Uuid, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT id, expires_at FROM api_keys
         WHERE owner = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(owner)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = keys.iter().map(|(id, _)| *id).collect();
    if narrowed {
        let events: Vec<(String, Option<OffsetDateTime>)> =
            keys.into_iter().map(|(id, exp)| (id.to_string(), exp)).collect();
        revocation::record_all(conn, Kind::ApiKeyChanged, &events, now, "owner key_scopes narrowed").await?;
    } else if !ids.is_empty() {
        sqlx::query("SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id")
            .bind(revocation::API_KEY_CHANGED_CHANNEL)
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
    }
    Ok(ids)
}
