//! What the keys API takes and shows. The plaintext key appears in [`CreatedKey`] only; no type
//! here ever carries the stored hash.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    format::{self, ApiKeySecret, Environment},
    limits::{LimitsRow, RateLimit, Refill},
    policy::OwnerPolicy,
};

/// `POST /v1/keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "name": "checkout-service production",
    "scopes": ["payments:read", "payments:write"],
    "environment": "live",
    "expires_in": 7776000,
    "allowed_cidrs": ["203.0.113.0/24"],
    "metadata": {"team": "payments", "ticket": "OPS-1432"},
    "rate_limit": {"limit": 100, "window": 60},
    "credits": 10000,
    "refill": {"amount": 10000, "interval": 2592000}
}))]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Scopes the key grants (at most 50, each `[A-Za-z0-9:._-]{1,64}`): never a reserved scope
    /// (400 `SCOPE_RESERVED`), and only those its owner's `key_scopes` allow (403 `SCOPE_NOT_ALLOWED`).
    pub scopes: Vec<String>,
    /// `live` or `test`; part of the key's prefix.
    pub environment: Environment,
    /// Lifetime in seconds (1 to 315360000); none means it does not expire.
    pub expires_in: Option<i64>,
    /// Expiry, RFC 3339, in the future and within ten years (instead of `expires_in`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// Addresses the key may be used from (at most 20 CIDRs, IPv4 or IPv6; a bare address is one host).
    #[schema(example = json!(["203.0.113.0/24"]))]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Free-form JSON object, at most 4 KiB serialized.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// At most `limit` verifications in any `window` seconds, across every instance.
    pub rate_limit: Option<RateLimit>,
    /// Starting credit balance (0 to 10^12); each verification takes its `cost` from it.
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    pub credits: Option<i64>,
    /// Sets the balance back to `amount` every `interval` seconds (the balance starts at `amount`
    /// when `credits` is not given).
    pub refill: Option<Refill>,
}

/// A key's status, derived from its row in the order verification checks it: `revoked`, then
/// `disabled`, then `expired`, then `rotating` (superseded, within its grace), else `active`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = "active")]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Usable.
    #[default]
    Active,
    /// Disabled by a PATCH: verifies as `DISABLED` until enabled again.
    Disabled,
    /// Superseded by a rotation, still valid until its grace ends.
    Rotating,
    /// Past its expiry (or its rotation grace).
    Expired,
    /// Revoked.
    Revoked,
}

impl Status {
    /// The status of `key` at `now`.
    pub fn of(key: &ApiKeyView, now: OffsetDateTime) -> Self {
        if key.revoked_at.is_some() {
            Self::Revoked
        } else if !key.enabled {
            Self::Disabled
        } else if key.expires_at.is_some_and(|t| t <= now) {
            Self::Expired
        } else if key.rotated_to.is_some() {
            Self::Rotating
        } else {
            Self::Active
        }
    }
}

/// `POST /v1/keys/{id}/rotate` body (may be empty JSON `{}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"grace_period": 86400}))]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key stays valid, in seconds (0 to 2592000, default 86400), never past its own expiry.
    #[schema(minimum = 0, maximum = 2592000)]
    pub grace_period: Option<i64>,
}

/// `POST /v1/keys/{id}/revoke` body (may be empty JSON `{}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"reason": "leaked in a CI log"}))]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// Why (at most 500 characters); recorded and published with the revocation event.
    pub reason: Option<String>,
}

/// An API key as shown after creation: never the key itself, never its hash.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({
    "id": "01a1feff-a810-7c70-a12b-7a0646f92279",
    "start": "tsk_live_3Fq",
    "name": "checkout-service production",
    "scopes": ["payments:read", "payments:write"],
    "effective_scopes": ["payments:read", "payments:write"],
    "environment": "live",
    "expires_at": "2027-02-19T16:45:30Z",
    "allowed_cidrs": ["203.0.113.0/24"],
    "metadata": {"team": "payments", "ticket": "OPS-1432"},
    "created_at": "2026-11-21T16:45:30Z",
    "owner": "01a1f805-f370-74f8-996d-a763b7a969b1",
    "revoked_at": null,
    "revoked_reason": null,
    "rotated_from": null,
    "rotated_to": null,
    "last_used_at": "2026-11-24T10:41:07Z",
    "last_used_ip": "203.0.113.7",
    "enabled": true,
    "status": "active",
    "rate_limit": {"limit": 100, "window": 60},
    "credits": 9412,
    "refill": {"amount": 10000, "interval": 2592000}
}))]
pub struct ApiKeyView {
    /// Key id (UUID v7).
    pub id: Uuid,
    /// First 12 characters of the key, for display.
    #[schema(example = "tsk_live_3Fq")]
    pub start: String,
    /// Display name.
    pub name: String,
    /// Scopes as stored on the key.
    pub scopes: Vec<String>,
    /// What the key grants now: `scopes` within its owner's current `key_scopes`, never a reserved
    /// scope (empty once its owner is disabled or deleted). Verification grants these only.
    #[sqlx(skip)]
    pub effective_scopes: Vec<String>,
    /// `live` or `test`.
    #[schema(example = "live")]
    pub environment: String,
    /// When it stops verifying; null if never. A rotated key's grace ends here.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Addresses it may be used from (empty: any).
    pub allowed_cidrs: Vec<String>,
    /// Free-form metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Owner: the `sub` of the token that created it.
    pub owner: String,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// The key this one replaced.
    pub rotated_from: Option<Uuid>,
    /// The key that replaced this one.
    pub rotated_to: Option<Uuid>,
    /// Last verification of this key (any result), as flushed from every instance.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Source address of that verification.
    pub last_used_ip: Option<String>,
    /// `false` while disabled: it then verifies as `DISABLED`.
    pub enabled: bool,
    /// `active`, `disabled`, `rotating`, `expired` or `revoked`.
    #[sqlx(skip)]
    pub status: Status,
    /// Its rate limit (shared with its rotation predecessor or successor), or null.
    #[sqlx(skip)]
    pub rate_limit: Option<RateLimit>,
    /// Remaining credit balance (shared likewise), or null when it has none.
    #[sqlx(skip)]
    pub credits: Option<i64>,
    /// Its refill, or null.
    #[sqlx(skip)]
    pub refill: Option<Refill>,
    /// Its limit group, as stored.
    #[sqlx(flatten)]
    #[serde(skip)]
    #[schema(ignore)]
    pub limits: LimitsRow,
    /// The id of its limit group: its first predecessor's id, or its own.
    #[serde(skip)]
    #[schema(ignore)]
    pub limit_group: Uuid,
}

impl ApiKeyView {
    /// Fills in what is derived rather than stored: effective scopes under its owner's `policy`,
    /// status, limits and the credit balance at `now`.
    pub fn complete(&mut self, policy: &OwnerPolicy, now: OffsetDateTime) {
        self.effective_scopes = policy.effective(&self.scopes);
        self.status = Status::of(self, now);
        self.rate_limit = self.limits.rate_limit();
        self.credits = self.limits.balance_at(now);
        self.refill = self.limits.refill();
    }
}

/// A key as returned by create and rotate: the plaintext `key`, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "key": "tsk_live_3FqV0d8mYk2QwJr5LzXc1pNa7TbHs9Ue3svXdk",
    "id": "01a1feff-a810-7c70-a12b-7a0646f92279",
    "start": "tsk_live_3Fq",
    "name": "checkout-service production",
    "scopes": ["payments:read", "payments:write"],
    "effective_scopes": ["payments:read", "payments:write"],
    "environment": "live",
    "expires_at": "2027-02-19T16:45:30Z",
    "allowed_cidrs": ["203.0.113.0/24"],
    "metadata": {"team": "payments", "ticket": "OPS-1432"},
    "created_at": "2026-11-21T16:45:30Z",
    "owner": "01a1f805-f370-74f8-996d-a763b7a969b1",
    "revoked_at": null,
    "revoked_reason": null,
    "rotated_from": null,
    "rotated_to": null,
    "last_used_at": null,
    "last_used_ip": null,
    "enabled": true,
    "status": "active",
    "rate_limit": {"limit": 100, "window": 60},
    "credits": 10000,
    "refill": null
}))]
pub struct CreatedKey {
    /// The key. Store it now: it cannot be shown again.
    #[serde(serialize_with = "format::expose")]
    #[schema(value_type = String, example = "tsk_live_3FqV0d8mYk2QwJr5LzXc1pNa7TbHs9Ue3svXdk")]
    pub key: ApiKeySecret,
    /// Everything else about it.
    #[serde(flatten)]
    pub view: ApiKeyView,
}
