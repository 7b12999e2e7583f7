//! `PATCH /v1/keys/{id}`: a key's name, scopes, metadata, expiry, allowed addresses, enabled state,
//! and its group's rate limit, credits and refill. One transaction with its audit row; a change that
//! narrows what the key may do is published as an `api_key_changed` event (through the outbox, so
//! every instance drops its cached record within a second, and verifiers outside Tessera learn it
//! too); any other change is notified at once, best effort. A revoked key stays revoked.

use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    credits,
    limits::{LimitsChange, RateLimit, Refill},
    manage::Requester,
    model::ApiKeyView,
    policy::OwnerPolicy,
    service::ApiKeys,
    store, validate,
};
use crate::{
    audit::{self, Actor},
    error::{Error, Result},
    revocation::{self, Kind},
    scopes,
};

/// `PATCH /v1/keys/{id}` body: only the fields given change; `null` removes an expiry or a limit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"enabled": false, "rate_limit": {"limit": 100, "window": 60}, "credits": 5000, "refill": null}))]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// Display name, 1 to 200 characters.
    #[serde(default, deserialize_with = "crate::patch::name")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// Scopes, within the owner's `key_scopes` (403 `SCOPE_NOT_ALLOWED`), never reserved (400 `SCOPE_RESERVED`).
    #[serde(default, deserialize_with = "crate::patch::scopes")]
    #[schema(nullable = false)]
    pub scopes: Option<Vec<String>>,
    /// Replaces the metadata (a JSON object, at most 4 KiB).
    #[serde(default, deserialize_with = "crate::patch::metadata")]
    #[schema(value_type = Object, nullable = false)]
    pub metadata: Option<Value>,
    /// Expiry, RFC 3339, in the future and within ten years; `null`: never. A rotated key's expiry
    /// (the end of its grace) may be brought forward, not pushed back.
    #[serde(default, deserialize_with = "expires_at")]
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// Expiry as seconds from now (instead of `expires_at`), 1 to 315360000.
    #[serde(default, deserialize_with = "crate::patch::expires_in")]
    #[schema(nullable = false)]
    pub expires_in: Option<i64>,
    /// Replaces the allow-list (`[]`: any address).
    #[serde(default, deserialize_with = "crate::patch::allowed_cidrs")]
    #[schema(nullable = false)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// `false` disables the key (it verifies as `DISABLED`), `true` enables it again.
    #[serde(default, deserialize_with = "crate::patch::enabled")]
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    /// Sets the rate limit of the key and its rotation successor or predecessor; `null` removes it.
    #[serde(default, deserialize_with = "crate::patch::nullable")]
    #[schema(value_type = Option<RateLimit>, nullable)]
    pub rate_limit: Option<Option<RateLimit>>,
    /// Sets the remaining credit balance (0 to 10^12); `null` removes credits (and the refill).
    #[serde(default, deserialize_with = "crate::patch::nullable")]
    #[schema(value_type = Option<i64>, nullable, minimum = 0, maximum = 1000000000000_i64)]
    pub credits: Option<Option<i64>>,
    /// Sets the refill, counted from now; `null` removes it.
    #[serde(default, deserialize_with = "crate::patch::nullable")]
    #[schema(value_type = Option<Refill>, nullable)]
    pub refill: Option<Option<Refill>>,
}

fn expires_at<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

/// A [`KeyPatch`] whose values passed every rule that needs no database.
#[derive(Debug)]
struct Change {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    metadata: Option<Value>,
    expires_at: Option<Option<OffsetDateTime>>,
    allowed_cidrs: Option<Vec<String>>,
    enabled: Option<bool>,
    limits: LimitsChange,
}

impl Change {
    fn new(p: KeyPatch, now: OffsetDateTime) -> Result<Self> {
        if let Some(n) = &p.name {
            validate::name(n)?;
        }
        Ok(Self {
            scopes: p.scopes.as_deref().map(|s| scopes::validate_key_list("scopes", s)).transpose()?,
            metadata: p.metadata.map(|m| validate::metadata(Some(m))).transpose()?,
            expires_at: validate::expiry(p.expires_in, p.expires_at, now)?,
            allowed_cidrs: p.allowed_cidrs.as_deref().map(validate::cidrs).transpose()?,
            enabled: p.enabled,
            limits: LimitsChange { rate_limit: p.rate_limit, credits: p.credits, refill: p.refill }.checked()?,
            name: p.name,
        })
    }

    /// Whether it may refuse a verification that `old` would have passed (or, for its limits,
    /// admitted): what an instance that still caches `old` must not go on serving.
    fn narrows(&self, old: &ApiKeyView) -> bool {
        let disabled = self.enabled == Some(false) && old.enabled;
        let scopes = self.scopes.as_ref().is_some_and(|new| old.scopes.iter().any(|s| !new.contains(s)));
        let expiry = match (self.expires_at, old.expires_at) {
            (Some(Some(new)), Some(was)) => new < was,
            (Some(Some(_)), None) => true,
            _ => false,
        };
        let cidrs = self.allowed_cidrs.as_ref().is_some_and(|new| !new.is_empty() && *new != old.allowed_cidrs);
        let rate = match (self.limits.rate_limit, old.rate_limit) {
            (Some(Some(new)), Some(was)) => new.limit < was.limit || new.window > was.window,
            (Some(Some(_)), None) => true,
            _ => false,
        };
        let metered = old.limits.credits.is_none()
            && (matches!(self.limits.credits, Some(Some(_))) || matches!(self.limits.refill, Some(Some(_))));
        disabled || scopes || expiry || cidrs || rate || metered
    }

    /// The audit record's details: each field changed, with its new value (metadata: only that it changed).
    fn details(&self, narrowed: bool) -> Value {
        let mut d = json!({"narrowed": narrowed});
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                d[k] = v;
            }
        };
        put("name", self.name.as_ref().map(|n| json!(n)));
        put("scopes", self.scopes.as_ref().map(|s| json!(s)));
        put("metadata", self.metadata.as_ref().map(|_| json!("changed")));
        put("expires_at", self.expires_at.map(|e| json!(e.map(OffsetDateTime::unix_timestamp))));
        put("allowed_cidrs", self.allowed_cidrs.as_ref().map(|c| json!(c)));
        put("enabled", self.enabled.map(|e| json!(e)));
        put("rate_limit", self.limits.rate_limit.map(|r| json!(r)));
        put("credits", self.limits.credits.map(|c| json!(c)));
        put("refill", self.limits.refill.map(|r| json!(r)));
        d
    }
}

impl ApiKeys {
    /// Applies `patch` to key `id`, if the requester may see it: 404 otherwise, 409 `KEY_REVOKED`
    /// for a revoked key. Returns the key as it is now.
    pub async fn update(&self, who: Requester<'_>, id: Uuid, patch: KeyPatch, actor: &Actor) -> Result<ApiKeyView> {
        let now = self.clock.now();
        let change = Change::new(patch, now)?;
        let mut tx = self.db.begin().await?;
        let old = store::lock(&mut tx, id).await?.filter(|k| who.sees(k)).ok_or(Error::NotFound("API key"))?;
        if old.revoked_at.is_some() {
            return Err(Error::KeyRevoked);
        }
        if let Some(scopes) = &change.scopes {
            // Under the owner's lock, as at creation: a concurrent change of its `key_scopes` is
            // either seen here or lists this key.
            store::lock_owner(&mut tx, &old.owner).await?;
            OwnerPolicy::load(&mut *tx, &old.owner).await?.check("scopes", scopes)?;
        }
        if old.rotated_to.is_some() {
            let later = match (change.expires_at, old.expires_at) {
                (Some(None), _) => true,
                (Some(Some(new)), Some(was)) => new > was,
                _ => false,
            };
            if later {
                return Err(Error::Conflict(
                    "expires_at: a rotated key is valid until its grace ends at the latest; it can be brought forward only"
                        .into(),
                ));
            }
        }
        store::update(
            &mut tx,
            id,
            &store::KeyChange {
                name: change.name.as_deref(),
                scopes: change.scopes.as_deref(),
                metadata: change.metadata.as_ref(),
                expires_at: change.expires_at,
                allowed_cidrs: change.allowed_cidrs.as_deref(),
                enabled: change.enabled,
            },
        )
        .await?;
        credits::set_limits(&mut tx, old.limit_group, &change.limits, now).await?;
        if let Some(expires_at) = change.expires_at {
            crate::webhooks::expiry::arm(&mut tx, id, expires_at, now).await?;
        }
        // The limits belong to the group: every key of it changes.
        let keys = if change.limits.is_empty() {
            vec![(id, change.expires_at.unwrap_or(old.expires_at))]
        } else {
            store::group_members(&mut tx, old.limit_group).await?
        };
        let narrowed = change.narrows(&old);
        let ids: Vec<Uuid> = keys.iter().map(|(k, _)| *k).collect();
        if narrowed {
            let events: Vec<(String, Option<OffsetDateTime>)> = keys.iter().map(|(k, e)| (k.to_string(), *e)).collect();
            revocation::record_all(&mut tx, Kind::ApiKeyChanged, &events, now, "api key changed").await?;
        } else {
            store::notify_changed(&mut tx, &ids).await?;
        }
        audit::record(&mut tx, now, actor, "api_key.update", "api_key", &id.to_string(), change.details(narrowed))
            .await?;
        tx.commit().await?;
        self.forget(&ids);
        self.get(who, id).await
    }
}
