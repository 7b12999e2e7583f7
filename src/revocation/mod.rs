//! Revocations: the outbox row written with every revocation, the in-memory view each instance
//! keeps of what is revoked, the relay that sequences and publishes, and the consumer that applies.

pub mod bus;
pub mod consumer;
mod feed;
pub mod relay;
mod revoked;
pub mod stream;

pub use feed::{Cursor, Feed};
pub use revoked::RevokedSet;

/// Notified (payload: the key id) in the transaction that changes an API key in a way that is not a
/// revocation — a rotation cuts the old key's validity to the grace period — so every instance drops
/// its cached record at once instead of serving it until the cache TTL. Not an outbox event: a
/// listener that was disconnected at that moment clears every cached key when it reconnects.
pub const API_KEY_CHANGED_CHANNEL: &str = "tessera_api_key_changed";
/// Payload on [`API_KEY_CHANGED_CHANNEL`] (instead of a key id) after an import added keys: every
/// instance forgets the hashes it remembers as unknown.
pub const KEYS_ADDED: &str = "keys_added";

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::error::Result;

/// What was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = "api_key")]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One access token, by `jti`.
    AccessToken,
    /// Every refresh token of one login, and the access tokens issued from it.
    RefreshFamily,
    /// One API key.
    ApiKey,
    /// Not a revocation: what one API key may do was narrowed (its owner's `key_scopes`, ...);
    /// drop what is cached about it and ask again.
    ApiKeyChanged,
    /// One signing key and every token it signed.
    SigningKey,
    /// A client, its refresh tokens and its access tokens.
    Client,
    /// A user, their refresh tokens and API keys.
    User,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::RefreshFamily => "refresh_family",
            Self::ApiKey => "api_key",
            Self::ApiKeyChanged => "api_key_changed",
            Self::SigningKey => "signing_key",
            Self::Client => "client",
            Self::User => "user",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "access_token" => Self::AccessToken,
            "refresh_family" => Self::RefreshFamily,
            "api_key" => Self::ApiKey,
            "api_key_changed" => Self::ApiKeyChanged,
            "signing_key" => Self::SigningKey,
            "client" => Self::Client,
            "user" => Self::User,
            _ => return None,
        })
    }
}

/// A revocation about to be written to the outbox.
#[derive(Debug, Clone)]
pub struct NewRevocation {
    /// What was revoked.
    pub kind: Kind,
    /// Its id (jti, family id, key id, kid, client id or user id).
    pub id: String,
    /// For access tokens.
    pub jti: Option<String>,
    /// For signing keys.
    pub kid: Option<String>,
    /// When what was revoked would have expired anyway.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why, when known.
    pub reason: Option<String>,
}

impl NewRevocation {
    /// A revocation of `kind` for `id` at `at`.
    pub fn new(kind: Kind, id: impl Into<String>, at: OffsetDateTime) -> Self {
        Self { kind, id: id.into(), jti: None, kid: None, expires_at: None, revoked_at: at, reason: None }
    }
    /// With a reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    /// With an expiry.
    pub fn expires(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }
}

/// A published revocation event, exactly as the contract shapes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[schema(example = json!({
    "seq": 4183,
    "kind": "api_key",
    "id": "01a1feff-a810-7c70-a12b-7a0646f92279",
    "expires_at": "2027-02-19T16:45:30Z",
    "revoked_at": "2026-11-24T10:58:12Z",
    "reason": "leaked in a CI log"
}))]
pub struct RevocationEvent {
    /// Strictly increasing position in the event log.
    pub seq: i64,
    /// What was revoked.
    pub kind: Kind,
    /// Its id.
    pub id: String,
    /// For access tokens.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub jti: Option<String>,
    /// For signing keys.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kid: Option<String>,
    /// When it would have expired anyway.
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// Writes a revocation to the outbox, inside the caller's transaction.
pub async fn record(conn: &mut PgConnection, r: &NewRevocation) -> Result<()> {
    sqlx::query(
        "INSERT INTO revocation_events (kind, subject_id, jti, kid, expires_at, revoked_at, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(r.kind.as_str())
    .bind(&r.id)
    .bind(&r.jti)
    .bind(&r.kid)
    .bind(r.expires_at)
    .bind(r.revoked_at)
    .bind(&r.reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records one `refresh_family` event per family (id, absolute expiry) in a single statement, for
/// revocations that end many families at once (client disabled, user deleted).
pub async fn record_families(
    conn: &mut PgConnection,
    families: &[(uuid::Uuid, OffsetDateTime)],
    revoked_at: OffsetDateTime,
    reason: &str,
) -> Result<()> {
    if families.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = families.iter().map(|(id, _)| id.to_string()).collect();
    let expiries: Vec<OffsetDateTime> = families.iter().map(|(_, exp)| *exp).collect();
    sqlx::query(
        "INSERT INTO revocation_events (kind, subject_id, expires_at, revoked_at, reason)
         SELECT $1, f.id, f.exp, $4, $5 FROM unnest($2::text[], $3::timestamptz[]) AS f(id, exp)",
    )
    .bind(Kind::RefreshFamily.as_str())
    .bind(&ids)
    .bind(&expiries)
    .bind(revoked_at)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records one event of `kind` per (id, expiry) in a single statement, for changes that touch many
/// keys at once (an owner's `key_scopes` narrowed, a client disabled).
pub async fn record_all(
    conn: &mut PgConnection,
    kind: Kind,
    events: &[(String, Option<OffsetDateTime>)],
    revoked_at: OffsetDateTime,
    reason: &str,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    let expiries: Vec<Option<OffsetDateTime>> = events.iter().map(|(_, exp)| *exp).collect();
    sqlx::query(
        "INSERT INTO revocation_events (kind, subject_id, expires_at, revoked_at, reason)
         SELECT $1, e.id, e.exp, $4, $5 FROM unnest($2::text[], $3::timestamptz[]) AS e(id, exp)",
    )
    .bind(kind.as_str())
    .bind(&ids)
    .bind(&expiries)
    .bind(revoked_at)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) type EventRow =
    (i64, String, String, Option<String>, Option<String>, Option<OffsetDateTime>, OffsetDateTime, Option<String>);

pub(crate) fn from_row(r: EventRow) -> Option<RevocationEvent> {
    Some(RevocationEvent {
        seq: r.0,
        kind: Kind::parse(&r.1)?,
        id: r.2,
        jti: r.3,
        kid: r.4,
        expires_at: r.5,
        revoked_at: r.6,
        reason: r.7,
    })
}

/// Sequenced events after `after`, in order, at most `limit`.
pub async fn events_after(db: &PgPool, after: i64, limit: i64) -> Result<Vec<RevocationEvent>> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, kind, subject_id, jti, kid, expires_at, revoked_at, reason FROM revocation_events
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Highest sequenced event.
pub async fn last_seq(db: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, Option<i64>>("SELECT max(seq) FROM revocation_events").fetch_one(db).await?.unwrap_or(0))
}
