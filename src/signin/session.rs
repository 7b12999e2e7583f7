//! Browser sign-in sessions: the cookie holds 256 random bits, Postgres only their keyed hash
//! (HMAC-SHA-256), so a database reader cannot sign in as anyone. A session ends after
//! `TESSERA_SESSION_IDLE_TTL` without use, `TESSERA_SESSION_ABSOLUTE_TTL` after the password was
//! checked, at sign-out, or when its user is deleted.

use ring::hmac;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    error::Result,
    secrets::{self, keyed_hash},
};

/// A live session.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Session id.
    pub id: Uuid,
    /// The signed-in user.
    pub user_id: Uuid,
    /// When the user entered their password.
    pub auth_time: OffsetDateTime,
}

/// A new session and the cookie value that names it (shown once, to the browser).
pub struct NewSession {
    /// The session.
    pub session: Session,
    /// The cookie's value. `Debug` does not show it.
    pub cookie: String,
    /// Seconds the cookie may be kept (the absolute lifetime).
    pub max_age: u64,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession").field("session", &self.session).field("cookie", &"[redacted]").finish()
    }
}

/// Longest cookie value looked up (ours are 43 characters).
const MAX_COOKIE: usize = 128;

/// Starts a session for `user_id`, signed in at `now`.
pub async fn create(
    db: &PgPool,
    key: &hmac::Key,
    user_id: Uuid,
    now: OffsetDateTime,
    absolute: std::time::Duration,
) -> Result<NewSession> {
    let cookie = secrets::random_base62(43);
    let hash = keyed_hash(key, cookie.as_bytes());
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO signin_sessions (id, token_hash, user_id, auth_time, last_seen_at, absolute_expires_at)
         VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(id)
    .bind(&hash[..])
    .bind(user_id)
    .bind(now)
    .bind(now + absolute)
    .execute(db)
    .await?;
    Ok(NewSession { session: Session { id, user_id, auth_time: now }, cookie, max_age: absolute.as_secs() })
}

/// The live session `cookie` names, marked used now (which extends its idle lifetime).
pub async fn find(
    db: &PgPool,
    key: &hmac::Key,
    cookie: &str,
    now: OffsetDateTime,
    idle: std::time::Duration,
) -> Result<Option<Session>> {
    if cookie.is_empty() || cookie.len() > MAX_COOKIE {
        return Ok(None);
    }
    let hash = keyed_hash(key, cookie.as_bytes());
    let row: Option<(Uuid, Uuid, OffsetDateTime)> = sqlx::query_as(
        "UPDATE signin_sessions s SET last_seen_at = $2
         FROM users u
         WHERE s.token_hash = $1 AND s.ended_at IS NULL AND s.last_seen_at > $2 - $3::interval
           AND s.absolute_expires_at > $2 AND u.id = s.user_id AND u.deleted_at IS NULL
         RETURNING s.id, s.user_id, s.auth_time",
    )
    .bind(&hash[..])
    .bind(now)
    .bind(time::Duration::try_from(idle).unwrap_or(time::Duration::HOUR))
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id, user_id, auth_time)| Session { id, user_id, auth_time }))
}

/// Ends the session `cookie` names, if any; `true` when one was live.
pub async fn end(db: &PgPool, key: &hmac::Key, cookie: &str, now: OffsetDateTime) -> Result<bool> {
    if cookie.is_empty() || cookie.len() > MAX_COOKIE {
        return Ok(false);
    }
    let hash = keyed_hash(key, cookie.as_bytes());
    let done = sqlx::query("UPDATE signin_sessions SET ended_at = $2 WHERE token_hash = $1 AND ended_at IS NULL")
        .bind(&hash[..])
        .bind(now)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Forgets sessions and codes that can no longer be used (kept a day, like spent refresh tokens,
/// so a late second use of a code is still recognised).
pub async fn purge(db: &PgPool, now: OffsetDateTime) -> Result<u64> {
    let horizon = now - time::Duration::days(1);
    let sessions = sqlx::query("DELETE FROM signin_sessions WHERE absolute_expires_at < $1 OR ended_at < $1")
        .bind(horizon)
        .execute(db)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM authorization_codes WHERE expires_at < $1").bind(horizon).execute(db).await?;
    Ok(sessions)
}
