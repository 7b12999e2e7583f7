//! Creating, reading, rotating and revoking keys. Each change is one transaction together with its
//! audit row (and, for a revocation, its outbox event); this instance's cache forgets the key as
//! soon as the change commits.

use serde_json::json;
use uuid::Uuid;

use super::{
    credits,
    format::{ApiKeySecret, Environment},
    model::{ApiKeyView, CreatedKey, NewKey, RevokeKey, RotateKey, Status},
    policy::OwnerPolicy,
    service::ApiKeys,
    store::{self, NewRow},
    validate,
};
use crate::{
    audit::{self, Actor},
    error::{Error, Result},
    revocation::{self, Kind, NewRevocation},
    webhooks::{events, expiry, EventType},
};

/// Who is asking: their token's subject, and whether they may act on anyone's keys.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// Token subject: the owner of the keys they create.
    pub sub: &'a str,
    /// Holds `admin`.
    pub admin: bool,
}

impl<'a> Requester<'a> {
    /// The owner a change is restricted to (none for an admin).
    pub(crate) fn owner_filter(&self) -> Option<&'a str> {
        (!self.admin).then_some(self.sub)
    }

    pub(super) fn sees(&self, key: &ApiKeyView) -> bool {
        self.admin || key.owner == self.sub
    }
}

impl ApiKeys {
    /// Creates a key owned by `owner`; the plaintext is in the result and nowhere else.
    pub async fn create(&self, owner: &str, body: NewKey, actor: &Actor) -> Result<CreatedKey> {
        let now = self.clock.now();
        let valid = validate::new_key(body, now)?;
        let secret = ApiKeySecret::generate(valid.environment);
        let id = Uuid::now_v7();
        let start = secret.start();
        let mut tx = self.db.begin().await?;
        let max = i64::from(self.config.max_keys_per_owner);
        let live = store::lock_and_count_live(&mut tx, owner, now, max).await?;
        // Read under the owner's lock, so a concurrent change of its `key_scopes` is either seen here
        // or sees this key (see store::owner_changed).
        let policy = OwnerPolicy::load(&mut *tx, owner).await?;
        if policy.gone {
            return Err(Error::Forbidden("the owner is disabled or deleted and cannot create API keys".into()));
        }
        policy.check("scopes", &valid.scopes)?;
        if live >= max {
            return Err(Error::LimitExceeded(format!(
                "the owner already has {max} live API keys, the most allowed; revoke one first"
            )));
        }
        let row = NewRow {
            id,
            owner,
            name: &valid.name,
            hash: secret.hash(self.hmac.current().key()),
            hmac_key_id: self.hmac.current().id(),
            start: &start,
            environment: valid.environment.as_str(),
            scopes: &valid.scopes,
            allowed_cidrs: &valid.allowed_cidrs,
            metadata: &valid.metadata,
            created_at: now,
            expires_at: valid.expires_at,
            rotated_from: None,
            enabled: true,
            limit_group: id,
        };
        store::insert(&mut tx, &row).await?;
        credits::set_limits(&mut tx, id, &valid.limits, now).await?;
        let mut view = store::get_in(&mut tx, id).await?.ok_or(Error::NotFound("API key"))?;
        view.complete(&policy, now);
        let mut details = json!({"owner": owner, "name": view.name, "environment": view.environment,
                             "scopes": view.scopes, "start": view.start});
        for (field, value) in
            [("rate_limit", json!(view.rate_limit)), ("credits", json!(view.credits)), ("refill", json!(view.refill))]
        {
            if !value.is_null() {
                details[field] = value;
            }
        }
        audit::record(&mut tx, now, actor, "api_key.create", "api_key", &id.to_string(), details).await?;
        expiry::arm(&mut tx, id, valid.expires_at, now).await?;
        events::api_key(&mut tx, EventType::KeyCreated, id, now, json!({})).await?;
        tx.commit().await?;
        Ok(CreatedKey { key: secret, view })
    }

    /// One key, if the requester may see it, with its effective scopes.
    pub async fn get(&self, who: Requester<'_>, id: Uuid) -> Result<ApiKeyView> {
        let mut key = store::get(&self.db, id).await?.filter(|k| who.sees(k)).ok_or(Error::NotFound("API key"))?;
        let policy = OwnerPolicy::load(&self.db, &key.owner).await?;
        key.complete(&policy, self.clock.now());
        Ok(key)
    }

    /// The requester's keys, or (admin only) `owner`'s; only those in `status` when it is given.
    pub async fn list(
        &self,
        who: Requester<'_>,
        owner: Option<&str>,
        status: Option<Status>,
    ) -> Result<Vec<ApiKeyView>> {
        let owner = match owner {
            Some(o) if o != who.sub && !who.admin => {
                return Err(Error::Forbidden("only an admin may list another owner's keys".into()))
            }
            // No owner id holds U+0000, and Postgres text cannot even be compared with it.
            Some(o) if o.contains('\0') => return Ok(Vec::new()),
            Some(o) => o,
            None => who.sub,
        };
        let mut keys = store::list(&self.db, owner).await?;
        let policy = OwnerPolicy::load(&self.db, owner).await?;
        let now = self.clock.now();
        for key in &mut keys {
            key.complete(&policy, now);
        }
        keys.retain(|k| status.is_none_or(|s| k.status == s));
        Ok(keys)
    }

    /// Replaces a live key with a new one carrying the same name, scopes, CIDRs, metadata, environment,
    /// expiry and state (enabled or not); the old key stays valid for the grace period (never past
    /// its own expiry). The new key joins the old one's limit group, so they share their rate limit
    /// and credits. Of concurrent rotations of one key exactly one succeeds; the others get a conflict.
    pub async fn rotate(&self, who: Requester<'_>, id: Uuid, body: RotateKey, actor: &Actor) -> Result<CreatedKey> {
        let grace = validate::grace_period(body.grace_period)?;
        let now = self.clock.now();
        let new_id = Uuid::now_v7();
        let mut tx = self.db.begin().await?;
        let Some(old) = store::mark_rotated(&mut tx, id, who.owner_filter(), new_id, now, now + grace).await? else {
            return Err(store::why_not_rotatable(&mut tx, id, who.owner_filter(), now).await?);
        };
        // The owner's lock, as for a creation: a concurrent change of the owner's `key_scopes` either
        // runs after this commit and lists the successor, or commits first and the successor is read
        // with it.
        store::lock_owner(&mut tx, &old.owner).await?;
        let env = Environment::parse(&old.environment)
            .ok_or_else(|| Error::Internal(format!("key {id} has an unknown environment")))?;
        let secret = ApiKeySecret::generate(env);
        let start = secret.start();
        let row = NewRow {
            id: new_id,
            owner: &old.owner,
            name: &old.name,
            hash: secret.hash(self.hmac.current().key()),
            hmac_key_id: self.hmac.current().id(),
            start: &start,
            environment: env.as_str(),
            scopes: &old.scopes,
            allowed_cidrs: &old.allowed_cidrs,
            metadata: &old.metadata,
            created_at: now,
            expires_at: old.expires_at,
            rotated_from: Some(id),
            enabled: old.enabled,
            limit_group: old.limit_group,
        };
        let mut view = store::insert(&mut tx, &row).await?;
        view.complete(&OwnerPolicy::load(&mut *tx, &view.owner).await?, now);
        let old_until = old.expires_at.map_or(now + grace, |e| e.min(now + grace));
        let details = json!({"rotated_to": new_id, "grace_period": grace.whole_seconds(),
                         "old_key_valid_until": old_until.unix_timestamp(), "start": view.start});
        audit::record(&mut tx, now, actor, "api_key.rotate", "api_key", &id.to_string(), details).await?;
        // The old key's validity was cut to the grace: a narrowing, published through the change
        // feed (every instance drops its cached record within a second, whatever notification it
        // missed), and notified at once on commit as well.
        let event = NewRevocation::new(Kind::ApiKeyChanged, id.to_string(), now).reason("rotated");
        revocation::record(&mut tx, &NewRevocation { expires_at: Some(old_until), ..event }).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::revocation::API_KEY_CHANGED_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        // The old key now expires at the end of its grace; the successor inherits the expiry.
        expiry::arm(&mut tx, id, Some(old_until), now).await?;
        expiry::arm(&mut tx, new_id, old.expires_at, now).await?;
        events::api_key(&mut tx, EventType::KeyRotated, id, now, json!({"rotated_to": new_id})).await?;
        tx.commit().await?;
        self.cache.forget(&id);
        Ok(CreatedKey { key: secret, view })
    }

    /// Revokes a key: refused from now on, on every instance. Revoking a revoked key changes nothing.
    pub async fn revoke(&self, who: Requester<'_>, id: Uuid, body: RevokeKey, actor: &Actor) -> Result<ApiKeyView> {
        let reason = validate::reason(body.reason)?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if let Some(expires_at) = store::mark_revoked(&mut tx, id, who.owner_filter(), now, reason.as_deref()).await? {
            let mut event = NewRevocation::new(Kind::ApiKey, id.to_string(), now);
            event.reason = reason.clone();
            event.expires_at = expires_at;
            revocation::record(&mut tx, &event).await?;
            audit::record(&mut tx, now, actor, "api_key.revoke", "api_key", &id.to_string(), json!({"reason": reason}))
                .await?;
            events::api_key(&mut tx, EventType::KeyRevoked, id, now, json!({"reason": reason})).await?;
            tx.commit().await?;
            crate::metrics::revocation("api_key");
            self.cache.forget(&id);
        } else {
            tx.rollback().await?;
        }
        self.get(who, id).await
    }
}
