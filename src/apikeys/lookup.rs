//! Admin look-ups across every owner: a paginated list of all keys with filters, and finding a key by
//! its plaintext (for someone holding a leaked key) without counting it as a use.

use std::collections::HashMap;

use sqlx::{PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    format::{self, ApiKeySecret},
    model::ApiKeyView,
    policy::OwnerPolicy,
};
use crate::{
    error::{Error, Result},
    secrets::Keyring,
};

pub use super::model::Status;

/// SQL condition selecting keys in `status` at `$now` (bound by the caller as the first parameter
/// pushed after it; see [`push_status`]). The same order as [`Status::of`].
fn condition(status: Status) -> &'static str {
    match status {
        Status::Revoked => "revoked_at IS NOT NULL",
        Status::Disabled => "revoked_at IS NULL AND NOT enabled",
        Status::Expired => "revoked_at IS NULL AND enabled AND expires_at IS NOT NULL AND expires_at <= ",
        Status::Rotating => {
            "revoked_at IS NULL AND enabled AND rotated_to IS NOT NULL AND (expires_at IS NULL OR expires_at > "
        }
        Status::Active => {
            "revoked_at IS NULL AND enabled AND rotated_to IS NULL AND (expires_at IS NULL OR expires_at > "
        }
    }
}

/// Adds ` AND <status condition>` to `q`.
fn push_status(q: &mut QueryBuilder<'_, Postgres>, status: Status, now: OffsetDateTime) {
    q.push(" AND ").push(condition(status));
    match status {
        Status::Revoked | Status::Disabled => {}
        Status::Expired => {
            q.push_bind(now);
        }
        Status::Rotating | Status::Active => {
            q.push_bind(now).push(")");
        }
    }
}

/// What to list. Filters combine; `after` is the last id of the previous page.
#[derive(Debug, Default)]
pub struct KeyFilter {
    /// Only this owner's keys.
    pub owner: Option<String>,
    /// Only `live` or `test` keys.
    pub environment: Option<String>,
    /// Only keys in this status.
    pub status: Option<Status>,
    /// Keys after this id (ids are UUIDv7: creation order).
    pub after: Option<Uuid>,
    /// Page size, 1–1000.
    pub limit: i64,
}

/// Keys of every owner matching `f`, oldest first, at most `f.limit + 1` (one more than asked, so
/// the caller knows whether there is a next page).
pub async fn list_all(db: &PgPool, f: &KeyFilter, now: OffsetDateTime) -> Result<Vec<ApiKeyView>> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {} FROM {} WHERE true", super::store::VIEW_COLUMNS, super::store::VIEW_FROM));
    if let Some(owner) = &f.owner {
        q.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some(env) = &f.environment {
        q.push(" AND environment = ").push_bind(env.clone());
    }
    if let Some(status) = f.status {
        push_status(&mut q, status, now);
    }
    if let Some(after) = f.after {
        q.push(" AND k.id > ").push_bind(after);
    }
    q.push(" ORDER BY k.id LIMIT ").push_bind(f.limit + 1);
    let mut keys: Vec<ApiKeyView> = q.build_query_as().fetch_all(db).await?;
    // Effective scopes depend on each owner's current key_scopes: one policy read per owner.
    let mut policies: HashMap<String, OwnerPolicy> = HashMap::new();
    for key in &mut keys {
        if !policies.contains_key(&key.owner) {
            policies.insert(key.owner.clone(), OwnerPolicy::load(db, &key.owner).await?);
        }
        if let Some(p) = policies.get(&key.owner) {
            key.complete(p, now);
        }
    }
    Ok(keys)
}

/// The key whose plaintext is `key` (created here, or imported by its SHA-256), as shown; `NotFound`
/// for a malformed key (checked without the database; a key in another system's format is looked
/// up only when `foreign` formats are accepted) or one that does not exist. Reads only: nothing is counted, `last_used_*` unchanged.
pub async fn by_plaintext(
    db: &PgPool,
    hmac: &Keyring,
    key: &ApiKeySecret,
    foreign: bool,
    now: OffsetDateTime,
) -> Result<ApiKeyView> {
    if format::parse(key.expose()).is_none() && !(foreign && format::is_foreign(key.expose())) {
        return Err(Error::NotFound("API key"));
    }
    let mut found = None;
    for k in hmac.accepted() {
        found = super::store::get_by_hash(db, &key.hashes(k.key())).await?;
        if found.is_some() {
            break;
        }
    }
    let mut view = found.ok_or(Error::NotFound("API key"))?;
    view.complete(&OwnerPolicy::load(db, &view.owner).await?, now);
    Ok(view)
}
