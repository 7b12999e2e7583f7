//! Users: registration, changes ([`update`]), deletion (which revokes their refresh tokens and API
//! keys), and password authentication with lockout ([`login`]). Wrong password, unknown user and
//! locked account look the same.

pub mod login;
mod service;
pub mod update;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

pub use service::Users;
pub use update::UserPatch;

use crate::{
    apikeys::policy,
    audit::{self, Actor},
    error::{Error, Result},
    passwords,
    revocation::{self, Kind, NewRevocation},
    scopes,
};

/// `POST /v1/admin/users` body.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "username": "ada.lovelace",
    "password": "correct-horse-battery-staple",
    "scopes": ["keys:read", "keys:write"]
}))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name (case-insensitive, unique among live users).
    #[schema(pattern = r"^[A-Za-z0-9._@+-]{1,128}$", min_length = 1, max_length = 128)]
    pub username: String,
    /// Password, 8 to 1024 characters. Stored only as an Argon2id hash.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    /// Scopes the user may be granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes the user may put on API keys: absent or null = any scope that is not reserved, a
    /// list = only those, `[]` = none. Never a reserved scope (400 `SCOPE_RESERVED`).
    #[serde(default)]
    pub key_scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser").field("username", &self.username).field("password", &"[redacted]").finish()
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({
    "id": "01a1f805-f370-74f8-996d-a763b7a969b1",
    "username": "ada.lovelace",
    "scopes": ["keys:read", "keys:write"],
    "created_at": "2026-11-20T08:15:02Z"
}))]
pub struct User {
    /// Id (UUID v7); the `sub` of the user's tokens.
    pub id: Uuid,
    /// Login name.
    pub username: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A user as the admin API shows it: the user, and what their API keys may carry.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01a1f805-f370-74f8-996d-a763b7a969b1",
    "username": "ada.lovelace",
    "scopes": ["keys:read", "keys:write"],
    "created_at": "2026-11-20T08:15:02Z",
    "key_scopes": ["deploy", "payments:read"]
}))]
pub struct UserView {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Scopes the user may put on API keys: null = any scope that is not reserved, `[]` = none.
    pub key_scopes: Option<Vec<String>>,
}

type ViewRow = (Uuid, String, Vec<String>, OffsetDateTime, Option<Vec<String>>);

/// The columns of a [`ViewRow`].
const VIEW_COLUMNS: &str = "id, username, scopes, created_at, key_scopes";

fn view_from_row((id, username, scopes, created_at, key_scopes): ViewRow) -> UserView {
    UserView { user: User { id, username, scopes, created_at }, key_scopes }
}

fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 128
        && u.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

/// Registers a user.
pub async fn create(db: &PgPool, new: NewUser, now: OffsetDateTime, actor: &Actor) -> Result<UserView> {
    if !valid_username(&new.username) {
        return Err(Error::invalid("username: 1-128 characters of A-Z a-z 0-9 . _ - @ +"));
    }
    let len = new.password.chars().count();
    if !(8..=1024).contains(&len) {
        return Err(Error::invalid("password: must be 8 to 1024 characters"));
    }
    let scopes = scopes::validate_list("scopes", &new.scopes)?;
    let key_scopes = policy::validate_key_scopes("key_scopes", new.key_scopes.as_deref())?;
    let hash = passwords::hash(new.password).await?;
    let user = User { id: Uuid::now_v7(), username: new.username, scopes, created_at: now };
    let mut tx = db.begin().await?;
    let res = sqlx::query(
        "INSERT INTO users (id, username, password_hash, scopes, created_at, key_scopes) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user.id)
    .bind(&user.username)
    .bind(hash)
    .bind(&user.scopes)
    .bind(now)
    .bind(&key_scopes)
    .execute(&mut *tx)
    .await;
    match res {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            return Err(Error::Conflict(format!("username {:?} is taken", user.username)))
        }
        other => other?,
    };
    let details = json!({"username": user.username, "key_scopes": key_scopes});
    audit::record(&mut tx, now, actor, "user.create", "user", &user.id.to_string(), details).await?;
    tx.commit().await?;
    Ok(UserView { user, key_scopes })
}

/// A live user.
pub async fn get(db: &PgPool, id: Uuid) -> Result<UserView> {
    let row: Option<ViewRow> =
        sqlx::query_as(&format!("SELECT {VIEW_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL"))
            .bind(id)
            .fetch_optional(db)
            .await?;
    row.map(view_from_row).ok_or(Error::NotFound("user"))
}

/// Live users, oldest first (ids are UUIDv7), optionally only the one called `username`, after the id
/// `after`; at most `limit + 1` (one more than asked, so the caller knows whether a next page exists).
pub async fn list(db: &PgPool, username: Option<&str>, after: Option<Uuid>, limit: i64) -> Result<Vec<UserView>> {
    let rows: Vec<ViewRow> = sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM users
         WHERE deleted_at IS NULL AND ($1::text IS NULL OR lower(username) = lower($1)) AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(username)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(view_from_row).collect())
}

/// The id of the live user called `username`; `NotFound` when there is none.
pub async fn id_of(db: &PgPool, username: &str) -> Result<Uuid> {
    sqlx::query_scalar("SELECT id FROM users WHERE lower(username) = lower($1) AND deleted_at IS NULL")
        .bind(username)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("user"))
}

/// Deletes a user: their refresh families and API keys are revoked, events published.
pub async fn delete(db: &PgPool, id: Uuid, now: OffsetDateTime, actor: &Actor) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query("UPDATE users SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::NotFound("user"));
    }
    let families: Vec<(Uuid, OffsetDateTime)> = sqlx::query_as(
        "UPDATE refresh_families SET revoked_at = $2, revoked_reason = 'user deleted'
         WHERE user_id = $1 AND revoked_at IS NULL RETURNING id, absolute_expires_at",
    )
    .bind(id)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let keys: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = $2, revoked_reason = 'owner deleted'
         WHERE owner = $1 AND revoked_at IS NULL RETURNING id",
    )
    .bind(id.to_string())
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    revocation::record(&mut tx, &NewRevocation::new(Kind::User, id.to_string(), now).reason("user deleted")).await?;
    revocation::record_families(&mut tx, &families, now, "user deleted").await?;
    for key in &keys {
        revocation::record(&mut tx, &NewRevocation::new(Kind::ApiKey, key.to_string(), now).reason("owner deleted"))
            .await?;
    }
    crate::webhooks::events::api_keys_revoked(&mut tx, &keys, now, "owner deleted").await?;
    audit::record(
        &mut tx,
        now,
        actor,
        "user.delete",
        "user",
        &id.to_string(),
        json!({"refresh_families_revoked": families.len(), "api_keys_revoked": keys.len()}),
    )
    .await?;
    tx.commit().await?;
    crate::metrics::revocation("user");
    Ok(keys)
}
