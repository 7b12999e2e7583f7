//! Verification, in the contract's order: MALFORMED (checksum, no lookup), NOT_FOUND, REVOKED (the
//! key, or its owner disabled or deleted), EXPIRED, IP_NOT_ALLOWED, INSUFFICIENT_SCOPE (against the
//! effective scopes, see [`super::policy`]). Served from the cache when it can be; never writes to
//! Postgres; every outcome is counted in memory for usage statistics.

use std::{net::IpAddr, sync::Arc};

use serde::{ser::Serializer, Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    cache::{Cached, KeyRecord},
    format::{self, ApiKeySecret},
    service::ApiKeys,
    store,
};
use crate::{
    error::{Error, Result},
    scopes,
};

/// `POST /v1/keys/verify` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"key": "tsk_live_3FqV0d8mYk2QwJr5LzXc1pNa7TbHs9Ue3svXdk", "scopes": ["payments:write"], "ip": "203.0.113.7"}))]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The presented key.
    #[schema(value_type = String)]
    pub key: ApiKeySecret,
    /// Scopes the key must grant.
    pub scopes: Option<Vec<String>>,
    /// The address the key was presented from (default: the caller's own).
    pub ip: Option<String>,
}

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Wrong shape or checksum.
    Malformed,
    /// No such key.
    NotFound,
    /// Revoked.
    Revoked,
    /// Past its expiry (or a rotated key past its grace).
    Expired,
    /// Presented from an address outside its CIDRs.
    IpNotAllowed,
    /// Lacks a required scope.
    InsufficientScope,
}

impl Denied {
    /// The contract's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "MALFORMED",
            Self::NotFound => "NOT_FOUND",
            Self::Revoked => "REVOKED",
            Self::Expired => "EXPIRED",
            Self::IpNotAllowed => "IP_NOT_ALLOWED",
            Self::InsufficientScope => "INSUFFICIENT_SCOPE",
        }
    }
}

/// The answer to a verification.
#[derive(Debug, Clone)]
pub enum Verification {
    /// The key may be used.
    Valid {
        /// The key.
        key: Arc<KeyRecord>,
        /// It has a successor and is within its grace.
        rotating: bool,
    },
    /// Refused.
    Invalid(Denied),
}

impl Verification {
    /// The code, or `VALID`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Valid { .. } => "VALID",
            Self::Invalid(d) => d.code(),
        }
    }
}

/// The response body as documented (the handler serializes [`Verification`] to this shape).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "valid": true,
    "key_id": "01a1feff-a810-7c70-a12b-7a0646f92279",
    "owner": "01a1f805-f370-74f8-996d-a763b7a969b1",
    "name": "checkout-service production",
    "scopes": ["payments:read", "payments:write"],
    "environment": "live",
    "expires_at": "2027-02-19T16:45:30Z",
    "metadata": {"team": "payments", "ticket": "OPS-1432"},
    "rotating": false
}))]
pub struct VerifyResponse {
    /// Whether the key may be used.
    pub valid: bool,
    /// Why not: MALFORMED, NOT_FOUND, REVOKED, EXPIRED, IP_NOT_ALLOWED or INSUFFICIENT_SCOPE (invalid only).
    pub code: Option<String>,
    /// Key id (valid only).
    pub key_id: Option<Uuid>,
    /// Owner (valid only).
    pub owner: Option<String>,
    /// Name (valid only).
    pub name: Option<String>,
    /// Effective scopes granted: the key's scopes within its owner's `key_scopes`, never a reserved one (valid only).
    pub scopes: Option<Vec<String>>,
    /// `live` or `test` (valid only).
    pub environment: Option<String>,
    /// Expiry, RFC 3339, or null (valid only).
    pub expires_at: Option<String>,
    /// Metadata (valid only).
    #[schema(value_type = Object, required = false)]
    pub metadata: Option<Value>,
    /// Replaced by a rotation and within its grace (valid only).
    pub rotating: Option<bool>,
}

#[derive(Serialize)]
struct ValidBody<'a> {
    valid: bool,
    key_id: Uuid,
    owner: &'a str,
    name: &'a str,
    scopes: &'a [String],
    environment: &'a str,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    metadata: &'a Value,
    rotating: bool,
}

#[derive(Serialize)]
struct InvalidBody {
    valid: bool,
    code: &'static str,
}

impl Serialize for Verification {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Valid { key, rotating } => ValidBody {
                valid: true,
                key_id: key.id,
                owner: &key.owner,
                name: &key.name,
                scopes: &key.effective_scopes,
                environment: key.environment,
                expires_at: key.expires_at,
                metadata: &key.metadata,
                rotating: *rotating,
            }
            .serialize(s),
            Self::Invalid(d) => InvalidBody { valid: false, code: d.code() }.serialize(s),
        }
    }
}

impl ApiKeys {
    /// Verifies a presented key for a caller at `caller_ip`. Errors are request errors (bad scope
    /// names, an unreadable `ip`) or storage failures.
    pub async fn verify(&self, req: &VerifyRequest, caller_ip: IpAddr) -> Result<Verification> {
        let required = scopes::validate_list("scopes", req.scopes.as_deref().unwrap_or_default())?;
        // The source, for the CIDR check, statistics and anomalies: the given `ip`, else the caller.
        // An unreadable `ip` is refused whatever the key, rather than silently replaced by the caller.
        let source = match req.ip.as_deref() {
            Some(raw) => raw.parse::<IpAddr>().map(|ip| ip.to_canonical()).map_err(|_| {
                let shown: String = raw.chars().take(64).collect();
                Error::invalid(format!("ip: {shown:?} is not an IPv4 or IPv6 address"))
            })?,
            None => caller_ip.to_canonical(),
        };
        let now = self.clock.now();

        if format::parse(req.key.expose()).is_none() {
            return Ok(self.refused_unknown(source, now, Denied::Malformed));
        }
        let hash = req.key.hash(&self.hmac);
        let found = match self.cache.get(&hash) {
            Cached::Key(rec) => {
                crate::metrics::key_cache(true);
                Some(rec)
            }
            Cached::Missing => {
                crate::metrics::key_cache(true);
                None
            }
            Cached::Unknown => {
                crate::metrics::key_cache(false);
                let generation = self.cache.generation();
                let found = store::find_by_hash(&self.db, &hash).await?;
                self.cache.fill(hash, found.clone(), generation);
                found
            }
        };
        let Some(key) = found else {
            return Ok(self.refused_unknown(source, now, Denied::NotFound));
        };

        // The owner's state lives in this instance's revocation set, which every instance updates from
        // the `client` / `user` events within a second, so a cached record cannot outlive it.
        let owner_revoked = self.revoked.client_revoked(&key.owner) || self.revoked.user_revoked(&key.owner);
        let outcome = decide(&key, owner_revoked, now, source, &required);
        let denied = match outcome {
            Verification::Invalid(d) => Some(d.code()),
            Verification::Valid { .. } => None,
        };
        self.usage.record_key(key.id, denied, source, now);
        crate::metrics::key_verification(outcome.code());
        Ok(outcome)
    }

    fn refused_unknown(&self, source: IpAddr, now: OffsetDateTime, why: Denied) -> Verification {
        self.usage.record_unknown(source, why.code(), now);
        crate::metrics::key_verification(why.code());
        Verification::Invalid(why)
    }
}

fn decide(
    key: &Arc<KeyRecord>,
    owner_revoked: bool,
    now: OffsetDateTime,
    source: IpAddr,
    required: &[String],
) -> Verification {
    // A disabled client's or deleted user's keys are refused as revoked, whatever their own row says.
    if key.revoked_at.is_some() || key.owner_gone || owner_revoked {
        return Verification::Invalid(Denied::Revoked);
    }
    if key.expires_at.is_some_and(|t| t <= now) {
        return Verification::Invalid(Denied::Expired);
    }
    if key.restricted && !key.allows(source) {
        return Verification::Invalid(Denied::IpNotAllowed);
    }
    // Effective scopes only: the owner's current `key_scopes`, never a reserved scope.
    if !scopes::is_subset(required, &key.effective_scopes) {
        return Verification::Invalid(Denied::InsufficientScope);
    }
    Verification::Valid { key: Arc::clone(key), rotating: key.rotated_to.is_some() }
}
