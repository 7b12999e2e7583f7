//! SQL of a key import ([`super::import`]): a whole batch in a handful of statements, whatever its
//! size (UNNEST arrays, never one statement per key).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    format::HASH_VERSION_IMPORTED,
    policy::{OwnerPolicy, OWNER_COLUMNS, OWNER_JOIN},
    validate::ValidKey,
};
use crate::{
    error::{Error, Result},
    revocation::{API_KEY_CHANGED_CHANNEL, KEYS_ADDED},
    secrets::KeyId,
};

/// One key about to be inserted.
pub struct Row<'a> {
    /// New id (also its limit group).
    pub id: Uuid,
    /// Owner.
    pub owner: &'a str,
    /// What is shown of the key.
    pub start: &'a str,
    /// Keyed hash, version 2, under the current HMAC key.
    pub hash: [u8; 32],
    /// Everything else, checked.
    pub key: &'a ValidKey,
}

/// The owner's policy, or `None` when `owner` is neither a user nor a client.
pub async fn owner_policy(conn: &mut PgConnection, owner: &str) -> Result<Option<OwnerPolicy>> {
    let row: (Option<Vec<String>>, bool, bool) = sqlx::query_as(&format!(
        "SELECT {OWNER_COLUMNS}, (u.id IS NOT NULL OR c.client_id IS NOT NULL) AS known
         FROM (SELECT $1::text AS owner) k {OWNER_JOIN}"
    ))
    .bind(owner)
    .fetch_one(conn)
    .await?;
    Ok(row.2.then_some(OwnerPolicy { key_scopes: row.0, gone: row.1 }))
}

/// The index of one of `current` (or, during a change of secret, of `previous`: the same keys
/// under the previous HMAC key) already stored as an imported key. `= ANY` of an array keeps the
/// plan on the `key_hash` index whatever the statistics say (a seq scan would be costed per
/// element and row).
pub async fn first_present(
    conn: &mut PgConnection,
    current: &[[u8; 32]],
    previous: &[[u8; 32]],
) -> Result<Option<usize>> {
    let all: Vec<&[u8]> = current.iter().chain(previous).map(|h| &h[..]).collect();
    let found: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE key_hash = ANY($1::bytea[]) AND hash_version = $2")
            .bind(&all)
            .bind(HASH_VERSION_IMPORTED)
            .fetch_all(conn)
            .await?;
    Ok(all.iter().position(|h| found.iter().any(|f| f.as_slice() == *h)).map(|i| i % current.len().max(1)))
}

/// Inserts every row with one statement, then their limits and expiry notices (one statement each,
/// when any key has them). A hash stored meanwhile by a concurrent import is a conflict.
pub async fn insert(conn: &mut PgConnection, rows: &[Row<'_>], kid: KeyId, now: OffsetDateTime) -> Result<()> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let owners: Vec<&str> = rows.iter().map(|r| r.owner).collect();
    let names: Vec<&str> = rows.iter().map(|r| r.key.name.as_str()).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| &r.hash[..]).collect();
    let starts: Vec<&str> = rows.iter().map(|r| r.start).collect();
    let envs: Vec<&str> = rows.iter().map(|r| r.key.environment.as_str()).collect();
    // Scopes and canonical CIDRs never hold a space: one string per key, split in SQL (UNNEST
    // cannot take an array of arrays of different lengths).
    let scopes: Vec<String> = rows.iter().map(|r| r.key.scopes.join(" ")).collect();
    let cidrs: Vec<String> = rows.iter().map(|r| r.key.allowed_cidrs.join(" ")).collect();
    let metadata: Vec<String> = rows.iter().map(|r| r.key.metadata.to_string()).collect();
    let expiries: Vec<Option<OffsetDateTime>> = rows.iter().map(|r| r.key.expires_at).collect();
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, owner, name, key_hash, hash_version, start, environment, scopes, allowed_cidrs,
                               metadata, created_at, expires_at, rotated_from, enabled, limit_group, hmac_key_id)
         SELECT t.id, t.owner, t.name, t.hash, $11, t.start, t.env, string_to_array(t.scopes, ' '),
                string_to_array(t.cidrs, ' '), t.metadata::jsonb, $12, t.exp, NULL, true, t.id, $13
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::text[], $10::timestamptz[]) AS t(id, owner, name, hash, start, env, scopes, cidrs, metadata, exp)",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&names)
    .bind(&hashes)
    .bind(&starts)
    .bind(&envs)
    .bind(&scopes)
    .bind(&cidrs)
    .bind(&metadata)
    .bind(&expiries)
    .bind(HASH_VERSION_IMPORTED)
    .bind(now)
    .bind(&kid[..])
    .execute(&mut *conn)
    .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(Error::Conflict("keys: a key with one of these hashes was stored meanwhile; try again".into()))
        }
        other => other?,
    };
    limits(conn, rows).await?;
    notices(conn, rows, now).await
}

/// The rate limits and balances of the rows that have them.
async fn limits(conn: &mut PgConnection, rows: &[Row<'_>]) -> Result<()> {
    let limited: Vec<&Row<'_>> =
        rows.iter().filter(|r| r.key.limits.rate_limit.is_some() || r.key.limits.credits.is_some()).collect();
    if limited.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = limited.iter().map(|r| r.id).collect();
    let rate = |r: &&Row<'_>| r.key.limits.rate_limit.flatten();
    let limit: Vec<Option<i32>> = limited.iter().map(|r| rate(r).and_then(|l| i32::try_from(l.limit).ok())).collect();
    let window: Vec<Option<i32>> = limited.iter().map(|r| rate(r).and_then(|l| i32::try_from(l.window).ok())).collect();
    let credits: Vec<Option<i64>> = limited.iter().map(|r| r.key.limits.credits.flatten()).collect();
    sqlx::query(
        "INSERT INTO api_key_limits (group_id, rate_limit, rate_window, credits, refilled_periods)
         SELECT * , 0 FROM unnest($1::uuid[], $2::int[], $3::int[], $4::bigint[])",
    )
    .bind(&ids)
    .bind(&limit)
    .bind(&window)
    .bind(&credits)
    .execute(conn)
    .await?;
    Ok(())
}

/// The expiry notices of the rows that expire (as [`crate::webhooks::expiry::arm`] sets them for
/// one key): 7 days and 1 day before, and at the expiry, those still ahead.
async fn notices(conn: &mut PgConnection, rows: &[Row<'_>], now: OffsetDateTime) -> Result<()> {
    let (ids, expiries): (Vec<Uuid>, Vec<OffsetDateTime>) =
        rows.iter().filter_map(|r| r.key.expires_at.map(|e| (r.id, e))).unzip();
    crate::webhooks::expiry::arm_new(conn, &ids, &expiries, now).await
}

/// Tells every instance, on commit, that keys were added.
pub async fn notify_added(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(API_KEY_CHANGED_CHANNEL).bind(KEYS_ADDED).execute(conn).await?;
    Ok(())
}
