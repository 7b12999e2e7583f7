//! Verification, in the contract's order: MALFORMED (checksum, no lookup), NOT_FOUND, REVOKED (the
//! key, or its owner disabled or deleted), DISABLED, EXPIRED, IP_NOT_ALLOWED, INSUFFICIENT_SCOPE
//! (against the effective scopes, see [`super::policy`]) — none of these consumes anything — then
//! RATE_LIMITED (the key group's sliding window, [`crate::ratelimit`]; a refusal consumes nothing)
//! and USAGE_EXCEEDED (the group's credits, [`super::credits`]; it still counts toward the rate
//! limit). The key is served from the cache when it can be; only a key with credits writes to
//! Postgres (one UPDATE). Every outcome is counted in memory for usage statistics. The answer's
//! wire shape is in [`super::answer`].

use std::{net::IpAddr, sync::Arc};

use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    cache::{Cached, KeyRecord},
    credits::{self, Spend},
    format::{self, ApiKeySecret, KeyHashes},
    limits::{self, MAX_CREDITS},
    record,
    service::ApiKeys,
};
use crate::{
    error::{Error, Result},
    ratelimit::Decision,
    scopes,
};

/// `POST /v1/keys/verify` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"key": "tsk_live_3FqV0d8mYk2QwJr5LzXc1pNa7TbHs9Ue3svXdk", "scopes": ["payments:write"], "ip": "203.0.113.7", "cost": 1}))]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The presented key.
    #[schema(value_type = String)]
    pub key: ApiKeySecret,
    /// Scopes the key must grant.
    pub scopes: Option<Vec<String>>,
    /// The address the key was presented from (default: the caller's own).
    pub ip: Option<String>,
    /// Credits this verification takes from a key that has a balance (default 1; 0 always passes the
    /// credit check), 0 to 10^12. A key without credits ignores it.
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    pub cost: Option<i64>,
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
    /// Disabled by its owner or an admin.
    Disabled,
    /// Past its expiry (or a rotated key past its grace).
    Expired,
    /// Presented from an address outside its CIDRs.
    IpNotAllowed,
    /// Lacks a required scope.
    InsufficientScope,
    /// Its group's rate limit is reached (see [`Verification::RateLimited`]).
    RateLimited,
    /// Its group's credits do not cover the cost.
    UsageExceeded,
}

impl Denied {
    /// The contract's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "MALFORMED",
            Self::NotFound => "NOT_FOUND",
            Self::Revoked => "REVOKED",
            Self::Disabled => "DISABLED",
            Self::Expired => "EXPIRED",
            Self::IpNotAllowed => "IP_NOT_ALLOWED",
            Self::InsufficientScope => "INSUFFICIENT_SCOPE",
            Self::RateLimited => "RATE_LIMITED",
            Self::UsageExceeded => "USAGE_EXCEEDED",
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
        /// Its group's rate-limit window after this verification, when it has a rate limit.
        rate_limit: Option<Decision>,
        /// Its group's balance after this verification, when it has credits.
        credits_remaining: Option<i64>,
    },
    /// Refused.
    Invalid(Denied),
    /// Refused by the rate limit: the window, and when to try again.
    RateLimited(Decision),
}

impl Verification {
    /// The code, or `VALID`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Valid { .. } => "VALID",
            Self::Invalid(d) => d.code(),
            Self::RateLimited(_) => Denied::RateLimited.code(),
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
        let cost = req.cost.unwrap_or(1);
        limits::check("cost", cost, 0, MAX_CREDITS)?;
        let now = self.clock.now();

        if format::parse(req.key.expose()).is_none()
            && !(self.config.api_key_foreign_formats && format::is_foreign(req.key.expose()))
        {
            return Ok(self.refused_unknown(source, now, Denied::Malformed));
        }
        let current = self.hmac.current().key();
        let hash = req.key.hash(current);
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
                // One read per hash however many verifications of it arrive at once; a waiter
                // answered by another's read counts as a hit (the miss counter counts reads).
                let (found, read) = self
                    .cache
                    .load(hash, || async {
                        let hashes = KeyHashes { created: hash, imported: req.key.imported_hash(current) };
                        match record::find_by_hash(&self.db, &hashes, self.cache.interner()).await? {
                            Some(found) => Ok(Some(found)),
                            None => self.find_under_previous(&req.key, &hash).await,
                        }
                    })
                    .await?;
                crate::metrics::key_cache(!read);
                found
            }
        };
        let Some(key) = found else {
            return Ok(self.refused_unknown(source, now, Denied::NotFound));
        };

        // The owner's state lives in this instance's revocation set, which every instance updates from
        // the `client` / `user` events within a second, so a cached record cannot outlive it.
        let owner_revoked = self.revoked.client_revoked(&key.owner) || self.revoked.user_revoked(&key.owner);
        let outcome = match decide(&key, owner_revoked, now, source, &required) {
            Verification::Valid { key, rotating, .. } => self.meter(key, rotating, cost, now).await?,
            refused => refused,
        };
        let denied = match &outcome {
            Verification::Valid { .. } => None,
            refused => Some(refused.code()),
        };
        if !self.usage.record_key(key.id, denied, source, now, key.first_sighting_this_hour(source, now)) {
            key.forget_sighting();
        }
        crate::metrics::key_verification(outcome.code());
        Ok(outcome)
    }

    /// During a change of HMAC secret: the key hashed (or imported) under the previous secret, moved
    /// to the current one as hash version 1 (`current` is its hash under it) so the next look-up finds
    /// it at once.
    async fn find_under_previous(&self, key: &ApiKeySecret, current: &[u8; 32]) -> Result<Option<KeyRecord>> {
        let Some(previous) = self.hmac.previous() else {
            return Ok(None);
        };
        let old = key.hashes(previous.key());
        let found = record::find_by_hash(&self.db, &old, self.cache.interner()).await?;
        if let Some(rec) = &found {
            super::store::rehash(&self.db, rec.id, &old, current, self.hmac.current().id()).await?;
        }
        Ok(found)
    }

    /// The checks that consume: the rate limit (a refusal consumes nothing), then the credits (a
    /// refusal still counts toward the rate limit).
    async fn meter(&self, key: Arc<KeyRecord>, rotating: bool, cost: i64, now: OffsetDateTime) -> Result<Verification> {
        let rate_limit = match key.rate_limit() {
            Some(rule) => {
                let window = self.limiter.admit(&key.limit_group(), rule).await;
                if !window.admitted {
                    return Ok(Verification::RateLimited(window));
                }
                Some(window)
            }
            None => None,
        };
        let credits_remaining = if key.metered() {
            match credits::spend(&self.db, key.limit_group(), cost, now).await? {
                Spend::Charged(left) => Some(left),
                Spend::Exceeded => return Ok(Verification::Invalid(Denied::UsageExceeded)),
                Spend::Unmetered => None,
            }
        } else {
            None
        };
        Ok(Verification::Valid { key, rotating, rate_limit, credits_remaining })
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
    if key.revoked || key.owner_gone || owner_revoked {
        return Verification::Invalid(Denied::Revoked);
    }
    if !key.enabled {
        return Verification::Invalid(Denied::Disabled);
    }
    if key.expired_at(now) {
        return Verification::Invalid(Denied::Expired);
    }
    if !key.allows(source) {
        return Verification::Invalid(Denied::IpNotAllowed);
    }
    // Effective scopes only: the owner's current `key_scopes`, never a reserved scope.
    if !scopes::is_subset(required, &key.effective_scopes) {
        return Verification::Invalid(Denied::InsufficientScope);
    }
    Verification::Valid { key: Arc::clone(key), rotating: key.rotating, rate_limit: None, credits_remaining: None }
}
