//! SQL for `api_keys`. Changes that must happen once (rotation, revocation) are conditional
//! UPDATEs, never read-then-write, so concurrent callers cannot both win.

use serde_json::Value;
use sqlx::{postgres::PgArguments, PgConnection, PgPool, Postgres};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    format::{KeyHashes, HASH_VERSION, HASH_VERSION_IMPORTED},
    model::ApiKeyView,
};
use crate::{
    error::{Error, Result},
    revocation::{self, Kind},
    secrets::KeyId,
};

/// What [`ApiKeyView`] reads, from [`VIEW_FROM`].
pub(crate) const VIEW_COLUMNS: &str =
    "k.id, k.start, k.name, k.scopes, k.environment, k.expires_at, k.allowed_cidrs, k.metadata, k.created_at,
     k.owner, k.revoked_at, k.revoked_reason, k.rotated_from, k.rotated_to, lu.at AS last_used_at, lu.ip AS last_used_ip,
     k.enabled, COALESCE(k.limit_group, k.id) AS limit_group, l.rate_limit, l.rate_window, l.credits,
     l.refill_amount, l.refill_interval, l.refill_from, l.refilled_periods";

macro_rules! key_from {
    () => {
        "api_keys k LEFT JOIN api_key_limits l ON l.group_id = COALESCE(k.limit_group, k.id)"
    };
}

/// A key (`k`) with its limit group's row (`l`). No column of `api_key_limits` shares a name with
/// one of `api_keys`, so conditions may name the key's columns unqualified.
pub(crate) const KEY_FROM: &str = key_from!();

/// [`KEY_FROM`] and the key's last use (`lu`: the row's own `last_used_*` is written at most
/// hourly, the newest usage row has the rest; migration 0016), which costs two index probes: for
/// what is shown, not for verification. `lu`'s columns (`at`, `ip`) are not names of `k` or `l`.
pub(crate) const VIEW_FROM: &str =
    concat!(key_from!(), " CROSS JOIN LATERAL key_last_use(k.id, k.last_used_at, k.last_used_ip) lu");

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
    /// Id of the HMAC key `hash` was made with.
    pub hmac_key_id: KeyId,
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
    /// Whether it verifies (a successor inherits its predecessor's state).
    pub enabled: bool,
    /// Its limit group: its own id, or its predecessor's group.
    pub limit_group: Uuid,
}

/// Inserts a key and returns it as shown (its derived fields not filled in yet).
pub async fn insert(conn: &mut PgConnection, row: &NewRow<'_>) -> Result<ApiKeyView> {
    sqlx::query(
        "INSERT INTO api_keys (id, owner, name, key_hash, hash_version, start, environment, scopes, allowed_cidrs,
                               metadata, created_at, expires_at, rotated_from, enabled, limit_group, hmac_key_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
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
    .bind(row.enabled)
    .bind(row.limit_group)
    .bind(&row.hmac_key_id[..])
    .execute(&mut *conn)
    .await?;
    get_in(conn, row.id).await?.ok_or_else(|| Error::Internal(format!("key {} vanished after its insert", row.id)))
}

/// One key as shown, read in the caller's transaction.
pub async fn get_in(conn: &mut PgConnection, id: Uuid) -> Result<Option<ApiKeyView>> {
    Ok(sqlx::query_as(&format!("SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE k.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// One key as shown, its row locked for the rest of the transaction (a PATCH).
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<ApiKeyView>> {
    Ok(sqlx::query_as(&format!("SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE k.id = $1 FOR UPDATE OF k"))
        .bind(id)
        .fetch_optional(conn)
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

/// What a PATCH changes on a key's own row: `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct KeyChange<'a> {
    /// Name.
    pub name: Option<&'a str>,
    /// Scopes.
    pub scopes: Option<&'a [String]>,
    /// Metadata.
    pub metadata: Option<&'a Value>,
    /// Expiry (`Some(None)`: never).
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// Canonical CIDRs.
    pub allowed_cidrs: Option<&'a [String]>,
    /// Enabled state.
    pub enabled: Option<bool>,
}

/// Applies `change` to key `id` (locked by the caller).
pub async fn update(conn: &mut PgConnection, id: Uuid, change: &KeyChange<'_>) -> Result<()> {
    sqlx::query(
        "UPDATE api_keys SET name = COALESCE($2, name), scopes = COALESCE($3, scopes), metadata = COALESCE($4, metadata),
             expires_at = CASE WHEN $5 THEN $6 ELSE expires_at END, allowed_cidrs = COALESCE($7, allowed_cidrs),
             enabled = COALESCE($8, enabled)
         WHERE id = $1",
    )
    .bind(id)
    .bind(change.name)
    .bind(change.scopes)
    .bind(change.metadata)
    .bind(change.expires_at.is_some())
    .bind(change.expires_at.flatten())
    .bind(change.allowed_cidrs)
    .bind(change.enabled)
    .execute(conn)
    .await?;
    Ok(())
}

/// The keys of limit group `group` that are not revoked, with their expiry.
pub async fn group_members(conn: &mut PgConnection, group: Uuid) -> Result<Vec<(Uuid, Option<OffsetDateTime>)>> {
    Ok(sqlx::query_as(
        "SELECT id, expires_at FROM api_keys WHERE (limit_group = $1 OR id = $1) AND revoked_at IS NULL ORDER BY id",
    )
    .bind(group)
    .fetch_all(conn)
    .await?)
}

/// Tells every instance, on commit and best effort, to drop what it cached of `ids` (a change that
/// only widens what they may do: a missed notification is bounded by the cache TTL).
pub async fn notify_changed(conn: &mut PgConnection, ids: &[Uuid]) -> Result<()> {
    if !ids.is_empty() {
        sqlx::query("SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id")
            .bind(revocation::API_KEY_CHANGED_CHANNEL)
            .bind(ids)
            .execute(conn)
            .await?;
    }
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
    Ok(sqlx::query_as(&format!("SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE k.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// SQL condition matching a key (`k`) by either of its stored hashes; [`bind_hashes`] binds
/// `$1`–`$4`. Two probes of the `key_hash` index in one statement (a BitmapOr).
pub(crate) const BY_EITHER_HASH: &str =
    "((k.key_hash = $1 AND k.hash_version = $2) OR (k.key_hash = $3 AND k.hash_version = $4))";

/// Binds `h` to a query whose first parameters are those of [`BY_EITHER_HASH`].
pub(crate) fn bind_hashes<'q, O>(
    q: sqlx::query::QueryAs<'q, Postgres, O, PgArguments>,
    h: &'q KeyHashes,
) -> sqlx::query::QueryAs<'q, Postgres, O, PgArguments> {
    q.bind(&h.created[..]).bind(HASH_VERSION).bind(&h.imported[..]).bind(HASH_VERSION_IMPORTED)
}

/// The key stored under either of `hashes`, as shown (admin look-up; verification uses
/// [`super::record::find_by_hash`]).
pub async fn get_by_hash(db: &PgPool, hashes: &KeyHashes) -> Result<Option<ApiKeyView>> {
    let sql = format!("SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE {BY_EITHER_HASH}");
    Ok(bind_hashes(sqlx::query_as(&sql), hashes).fetch_optional(db).await?)
}

/// Moves a key found under the previous HMAC key to the current one (`old`, its hashes under the
/// previous key → `new`, version 1, made with the key `kid`), so that it no longer depends on the
/// previous secret. A no-op if another instance already did it.
pub async fn rehash(db: &PgPool, id: Uuid, old: &KeyHashes, new: &[u8; 32], kid: KeyId) -> Result<()> {
    let old: [&[u8]; 2] = [&old.created, &old.imported];
    sqlx::query(
        "UPDATE api_keys SET key_hash = $3, hmac_key_id = $4, hash_version = $5 WHERE id = $1 AND key_hash = ANY($2)",
    )
    .bind(id)
    .bind(&old[..])
    .bind(&new[..])
    .bind(&kid[..])
    .bind(HASH_VERSION)
    .execute(db)
    .await?;
    Ok(())
}

/// Every key of `owner`, oldest first.
pub async fn list(db: &PgPool, owner: &str) -> Result<Vec<ApiKeyView>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE k.owner = $1 ORDER BY k.created_at, k.id"
    ))
    .bind(owner)
    .fetch_all(db)
    .await?)
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
    /// Whether it verifies.
    pub enabled: bool,
    /// Its limit group, which the successor joins.
    pub limit_group: Uuid,
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
         RETURNING k.owner, k.name, k.environment, k.scopes, k.allowed_cidrs, k.metadata, o.expires_at, k.enabled,
                   COALESCE(k.limit_group, k.id) AS limit_group",
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
    } else {
        notify_changed(conn, &ids).await?;
    }
    Ok(ids)
}
