//! The answer to `POST /v1/keys/verify` on the wire: [`Verification`] serializes to the shape the
//! contract gives, and [`VerifyResponse`] documents it. An invalid answer says only why, except
//! `RATE_LIMITED`, which also gives the window and when to try again.

use serde::{ser::Serializer, Serialize};
use serde_json::{value::RawValue, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::verify::{Denied, Verification};
use crate::ratelimit::Decision;

/// A key group's rate-limit window as a verification leaves it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"limit": 100, "remaining": 41, "reset": "2026-11-24T10:41:08Z"}))]
pub struct RateLimitState {
    /// The limit per window.
    pub limit: u32,
    /// Verifications still admissible now, after this one.
    pub remaining: u32,
    /// When the next slot frees, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub reset: OffsetDateTime,
}

impl From<&Decision> for RateLimitState {
    fn from(d: &Decision) -> Self {
        Self { limit: d.limit, remaining: d.remaining, reset: d.reset }
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
    "rotating": false,
    "rate_limit": {"limit": 100, "remaining": 41, "reset": "2026-11-24T10:41:08Z"},
    "credits_remaining": 9411
}))]
pub struct VerifyResponse {
    /// Whether the key may be used.
    pub valid: bool,
    /// Why not: MALFORMED, NOT_FOUND, REVOKED, DISABLED, EXPIRED, IP_NOT_ALLOWED, INSUFFICIENT_SCOPE,
    /// RATE_LIMITED or USAGE_EXCEEDED (invalid only; ignore codes you do not know).
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
    /// The key's rate-limit window after this verification (valid, when it has a rate limit; and
    /// RATE_LIMITED).
    pub rate_limit: Option<RateLimitState>,
    /// Its credit balance after this verification (valid, when it has credits).
    pub credits_remaining: Option<i64>,
    /// Whole seconds, at least 1, until the rate limit admits the key again (RATE_LIMITED only).
    pub retry_after: Option<u64>,
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
    metadata: &'a RawValue,
    rotating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimitState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits_remaining: Option<i64>,
}

#[derive(Serialize)]
struct InvalidBody {
    valid: bool,
    code: &'static str,
}

#[derive(Serialize)]
struct RateLimitedBody {
    valid: bool,
    code: &'static str,
    rate_limit: RateLimitState,
    retry_after: u64,
}

impl Serialize for Verification {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Valid { key, rotating, rate_limit, credits_remaining } => ValidBody {
                valid: true,
                key_id: key.id,
                owner: &key.owner,
                name: key.name(),
                scopes: &key.effective_scopes,
                environment: key.environment.map_or("unknown", |e| e.as_str()),
                expires_at: key.expires_at(),
                // Stored as the JSON text serde_json wrote, so checking it again cannot fail.
                metadata: serde_json::from_str(key.metadata_json()).map_err(serde::ser::Error::custom)?,
                rotating: *rotating,
                rate_limit: rate_limit.as_ref().map(RateLimitState::from),
                credits_remaining: *credits_remaining,
            }
            .serialize(s),
            Self::Invalid(d) => InvalidBody { valid: false, code: d.code() }.serialize(s),
            Self::RateLimited(window) => RateLimitedBody {
                valid: false,
                code: Denied::RateLimited.code(),
                rate_limit: RateLimitState::from(window),
                retry_after: window.retry_after,
            }
            .serialize(s),
        }
    }
}
