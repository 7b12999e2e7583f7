//! `PATCH /v1/admin/clients/{client_id}`: a client's name, scopes, `key_scopes` and redirect URIs. Narrowing
//! `key_scopes` narrows the client's existing API keys on every instance (see
//! [`crate::apikeys::store::owner_changed`]).

use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{from_row, redirects, Client, ClientRow, COLUMNS};
use crate::{
    apikeys::policy,
    audit::{self, Actor},
    error::{Error, Result},
    scopes,
};

/// `PATCH /v1/admin/clients/{client_id}` body: only the fields given change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Billing service", "key_scopes": ["payments:read"]}))]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    /// Display name, 1 to 200 characters.
    #[serde(default, deserialize_with = "crate::patch::name")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// Scopes the client may be granted.
    #[serde(default, deserialize_with = "crate::patch::scopes")]
    #[schema(nullable = false)]
    pub scopes: Option<Vec<String>>,
    /// Scopes the client may put on API keys: `null` = any scope that is not reserved, a list =
    /// only those, `[]` = none; absent = unchanged. Existing keys are narrowed to it at once.
    #[serde(default, deserialize_with = "policy::present")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub key_scopes: Option<Option<Vec<String>>>,
    /// Replaces the redirect URIs: absolute https URIs (http only to a loopback host), no fragment.
    #[serde(default, deserialize_with = "crate::patch::redirect_uris")]
    #[schema(nullable = false)]
    pub redirect_uris: Option<Vec<String>>,
    /// Replaces the post-logout redirect URIs; the same rules.
    #[serde(default, deserialize_with = "crate::patch::post_logout_redirect_uris")]
    #[schema(nullable = false)]
    pub post_logout_redirect_uris: Option<Vec<String>>,
}

/// What a client change did: the client as it is now, and the API keys whose cached records every
/// instance must drop (this one too, after the commit).
#[derive(Debug)]
pub struct Updated {
    /// The client after the change.
    pub client: Client,
    /// Keys affected by a `key_scopes` change.
    pub changed_keys: Vec<Uuid>,
}

/// Applies `patch` to a client (disabled or not), audited; 404 for an unknown client.
pub async fn update(
    db: &PgPool,
    client_id: &str,
    patch: ClientPatch,
    now: OffsetDateTime,
    actor: &Actor,
) -> Result<Updated> {
    let name = match patch.name.as_deref().map(str::trim) {
        Some(n) if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) => {
            return Err(Error::invalid("name: must be 1 to 200 characters, without control characters"))
        }
        other => other,
    };
    let scopes = patch.scopes.as_deref().map(|s| scopes::validate_list("scopes", s)).transpose()?;
    let key_scopes = patch.key_scopes.map(|k| policy::validate_key_scopes("key_scopes", k.as_deref())).transpose()?;
    let redirect_uris = patch.redirect_uris.as_deref().map(|u| redirects::validate("redirect_uris", u)).transpose()?;
    let post_logout = (patch.post_logout_redirect_uris.as_deref())
        .map(|u| redirects::validate("post_logout_redirect_uris", u))
        .transpose()?;
    let mut tx = db.begin().await?;
    let old: Option<Option<Vec<String>>> =
        sqlx::query_scalar("SELECT key_scopes FROM clients WHERE client_id = $1 FOR UPDATE")
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?;
    let old = old.ok_or(Error::NotFound("client"))?;
    let row: ClientRow = sqlx::query_as(&format!(
        "UPDATE clients SET name = COALESCE($2, name), scopes = COALESCE($3, scopes),
             key_scopes = CASE WHEN $4 THEN $5 ELSE key_scopes END,
             redirect_uris = COALESCE($6, redirect_uris),
             post_logout_redirect_uris = COALESCE($7, post_logout_redirect_uris)
         WHERE client_id = $1 RETURNING {COLUMNS}"
    ))
    .bind(client_id)
    .bind(name)
    .bind(&scopes)
    .bind(key_scopes.is_some())
    .bind(key_scopes.clone().flatten())
    .bind(&redirect_uris)
    .bind(&post_logout)
    .fetch_one(&mut *tx)
    .await?;
    let mut changed_keys = Vec::new();
    let mut narrowed = false;
    if let Some(new) = key_scopes.as_ref().filter(|new| **new != old) {
        narrowed = policy::narrows(old.as_deref(), new.as_deref());
        changed_keys = crate::apikeys::store::owner_changed(&mut tx, client_id, now, narrowed).await?;
    }
    let mut details = json!({"api_keys_changed": changed_keys.len(), "key_scopes_narrowed": narrowed});
    if let Some(n) = name {
        details["name"] = json!(n);
    }
    if let Some(s) = &scopes {
        details["scopes"] = json!(s);
    }
    if let Some(k) = &key_scopes {
        details["key_scopes"] = json!({"from": old, "to": k});
    }
    if let Some(u) = &redirect_uris {
        details["redirect_uris"] = json!(u);
    }
    if let Some(u) = &post_logout {
        details["post_logout_redirect_uris"] = json!(u);
    }
    audit::record(&mut tx, now, actor, "client.update", "client", client_id, details).await?;
    tx.commit().await?;
    Ok(Updated { client: from_row(row), changed_keys })
}
