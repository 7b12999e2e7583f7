//! What verification knows about one key ([`KeyRecord`], what the cache holds) and the one query
//! that reads it: the key with its owner's policy and its limit group, in one statement.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    format::{HASH_VERSION, HASH_VERSION_IMPORTED},
    limits::LimitsRow,
    policy::{OwnerPolicy, OWNER_COLUMNS, OWNER_JOIN},
    store::VIEW_FROM,
    validate::parse_cidr,
};
use crate::error::Result;

/// What verification needs to know about one key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Key id.
    pub id: Uuid,
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// `live` or `test` (no allocation per cached key).
    pub environment: &'static str,
    /// Effective scopes: the key's own scopes that its owner's `key_scopes` still allow, never a
    /// reserved one (see [`super::policy::OwnerPolicy::effective`]). What verification grants and shows.
    pub effective_scopes: Box<[String]>,
    /// The owner was disabled (client) or deleted (user) when the record was read.
    pub owner_gone: bool,
    /// Whether the key is limited to some addresses at all.
    pub restricted: bool,
    /// The addresses it is limited to (an unreadable stored entry matches nothing).
    pub allowed: Box<[IpNet]>,
    /// Metadata.
    pub metadata: Value,
    /// Expiry (a rotated key's grace end).
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// Successor, once rotated.
    pub rotated_to: Option<Uuid>,
    /// `false` while disabled.
    pub enabled: bool,
    /// Its limit group (shared with its rotation predecessor or successor).
    pub limit_group: Uuid,
    /// Its group's rate limit.
    pub rate_limit: Option<crate::ratelimit::Rule>,
    /// Whether its group has a credit balance (read from Postgres at each verification).
    pub metered: bool,
}

impl KeyRecord {
    /// Whether `ip` may use this key.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !self.restricted || self.allowed.iter().any(|n| n.contains(&ip))
    }
}

/// What verification reads of a key, with its owner's policy and its limit group.
#[derive(sqlx::FromRow)]
struct RecordRow {
    id: Uuid,
    owner: String,
    name: String,
    environment: String,
    scopes: Vec<String>,
    allowed_cidrs: Vec<String>,
    metadata: Value,
    expires_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    rotated_to: Option<Uuid>,
    enabled: bool,
    limit_group: Uuid,
    rate_limit: Option<i32>,
    rate_window: Option<i32>,
    metered: bool,
    key_scopes: Option<Vec<String>>,
    owner_gone: bool,
}

/// The key with keyed hash `hash` (version 1) or, imported by its SHA-256, `imported` (version 2),
/// as verification needs it, with its owner's policy and its limit group read in the same statement
/// (so the effective scopes, the owner's state and the limits are as current as the key). One
/// round trip: two probes of the `key_hash` index (a BitmapOr).
pub async fn find_by_hash(db: &PgPool, hash: &[u8; 32], imported: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>> {
    let row: Option<RecordRow> = sqlx::query_as(&format!(
        "SELECT k.id, k.owner, k.name, k.environment, k.scopes, k.allowed_cidrs, k.metadata, k.expires_at,
                k.revoked_at, k.rotated_to, k.enabled, COALESCE(k.limit_group, k.id) AS limit_group,
                l.rate_limit, l.rate_window, (l.credits IS NOT NULL) IS TRUE AS metered, {OWNER_COLUMNS}
         FROM {VIEW_FROM} {OWNER_JOIN}
         WHERE (k.key_hash = $1 AND k.hash_version = $2) OR (k.key_hash = $3 AND k.hash_version = $4)"
    ))
    .bind(&hash[..])
    .bind(HASH_VERSION)
    .bind(&imported[..])
    .bind(HASH_VERSION_IMPORTED)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        let policy = OwnerPolicy { key_scopes: r.key_scopes, gone: r.owner_gone };
        let id = r.id;
        let allowed: Vec<ipnet::IpNet> = r
            .allowed_cidrs
            .iter()
            .filter_map(|c| {
                let net = parse_cidr(c).map(|n| n.trunc());
                if net.is_none() {
                    tracing::warn!(key_id = %id, "unreadable stored CIDR ignored (it matches no address)");
                }
                net
            })
            .collect();
        let limits = LimitsRow { rate_limit: r.rate_limit, rate_window: r.rate_window, ..Default::default() };
        Arc::new(KeyRecord {
            id,
            owner: r.owner,
            name: r.name,
            environment: super::Environment::parse(&r.environment).map_or("unknown", |e| e.as_str()),
            effective_scopes: policy.effective(&r.scopes).into_boxed_slice(),
            owner_gone: policy.gone,
            restricted: !r.allowed_cidrs.is_empty(),
            allowed: allowed.into_boxed_slice(),
            metadata: r.metadata,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            rotated_to: r.rotated_to,
            enabled: r.enabled,
            limit_group: r.limit_group,
            rate_limit: limits.rule(),
            metered: r.metered,
        })
    }))
}
