//! `PATCH /v1/admin/users/{id}`: a user's scopes and `key_scopes`. Narrowing `key_scopes` narrows
//! the user's existing API keys on every instance (see [`crate::apikeys::store::owner_changed`]).

use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{view_from_row, UserView, ViewRow, VIEW_COLUMNS};
use crate::{
    apikeys::policy,
    audit::{self, Actor},
    error::{Error, Result},
    scopes,
};

/// `PATCH /v1/admin/users/{id}` body: only the fields given change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"key_scopes": ["deploy"]}))]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Scopes the user may be granted.
    #[serde(default, deserialize_with = "crate::patch::scopes")]
    #[schema(nullable = false)]
    pub scopes: Option<Vec<String>>,
    /// Scopes the user may put on API keys: `null` = any scope that is not reserved, a list = only
    /// those, `[]` = none; absent = unchanged. Existing keys are narrowed to it at once.
    #[serde(default, deserialize_with = "policy::present")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub key_scopes: Option<Option<Vec<String>>>,
}

/// What a user change did: the user as it is now, and the API keys whose cached records every
/// instance must drop (this one too, after the commit).
#[derive(Debug)]
pub struct Updated {
    /// The user after the change.
    pub user: UserView,
    /// Keys affected by a `key_scopes` change.
    pub changed_keys: Vec<Uuid>,
}

/// Applies `patch` to a live user, audited; 404 for an unknown or deleted user.
pub async fn update(db: &PgPool, id: Uuid, patch: UserPatch, now: OffsetDateTime, actor: &Actor) -> Result<Updated> {
    let scopes = patch.scopes.as_deref().map(|s| scopes::validate_list("scopes", s)).transpose()?;
    let key_scopes = patch.key_scopes.map(|k| policy::validate_key_scopes("key_scopes", k.as_deref())).transpose()?;
    let mut tx = db.begin().await?;
    let old: Option<Option<Vec<String>>> =
        sqlx::query_scalar("SELECT key_scopes FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let old = old.ok_or(Error::NotFound("user"))?;
    let row: ViewRow = sqlx::query_as(&format!(
        "UPDATE users SET scopes = COALESCE($2, scopes), key_scopes = CASE WHEN $3 THEN $4 ELSE key_scopes END
         WHERE id = $1 RETURNING {VIEW_COLUMNS}"
    ))
    .bind(id)
    .bind(&scopes)
    .bind(key_scopes.is_some())
    .bind(key_scopes.clone().flatten())
    .fetch_one(&mut *tx)
    .await?;
    let mut changed_keys = Vec::new();
    let mut narrowed = false;
    if let Some(new) = key_scopes.as_ref().filter(|new| **new != old) {
        narrowed = policy::narrows(old.as_deref(), new.as_deref());
        changed_keys = crate::apikeys::store::owner_changed(&mut tx, &id.to_string(), now, narrowed).await?;
    }
    let mut details = json!({"api_keys_changed": changed_keys.len(), "key_scopes_narrowed": narrowed});
    if let Some(s) = &scopes {
        details["scopes"] = json!(s);
    }
    if let Some(k) = &key_scopes {
        details["key_scopes"] = json!({"from": old, "to": k});
    }
    audit::record(&mut tx, now, actor, "user.update", "user", &id.to_string(), details).await?;
    tx.commit().await?;
    Ok(Updated { user: view_from_row(row), changed_keys })
}
