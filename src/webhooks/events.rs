//! Events and the outbox. [`enqueue`] runs inside the transaction of the change that causes the
//! event and writes one delivery per endpoint that wants it, so an event commits (or not) with its
//! change and is never lost to a crash between the two.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Channel notified (on commit) when deliveries are written, so dispatchers wake at once.
pub const CHANNEL: &str = "tessera_webhooks";

/// The event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    /// A key was created.
    #[serde(rename = "api_key.created")]
    KeyCreated,
    /// A key was rotated (data: the old key).
    #[serde(rename = "api_key.rotated")]
    KeyRotated,
    /// A key was revoked.
    #[serde(rename = "api_key.revoked")]
    KeyRevoked,
    /// A key was reported leaked.
    #[serde(rename = "api_key.leaked")]
    KeyLeaked,
    /// A key expires in 7 days, or in 1 day.
    #[serde(rename = "api_key.expiring")]
    KeyExpiring,
    /// A key expired (or a rotated key's grace ended).
    #[serde(rename = "api_key.expired")]
    KeyExpired,
    /// An anomaly was recorded.
    #[serde(rename = "anomaly.detected")]
    AnomalyDetected,
    /// A spent refresh token was presented again; its family was revoked.
    #[serde(rename = "refresh_token.reuse_detected")]
    RefreshReuse,
    /// Signing keys rotated.
    #[serde(rename = "signing_key.rotated")]
    SigningKeyRotated,
    /// A signing key was revoked.
    #[serde(rename = "signing_key.revoked")]
    SigningKeyRevoked,
    /// `POST /v1/webhooks/{id}/test`.
    #[serde(rename = "webhook.test")]
    Test,
}

impl EventType {
    /// Every type, in the contract's order.
    pub const ALL: [Self; 11] = [
        Self::KeyCreated,
        Self::KeyRotated,
        Self::KeyRevoked,
        Self::KeyLeaked,
        Self::KeyExpiring,
        Self::KeyExpired,
        Self::AnomalyDetected,
        Self::RefreshReuse,
        Self::SigningKeyRotated,
        Self::SigningKeyRevoked,
        Self::Test,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "api_key.created",
            Self::KeyRotated => "api_key.rotated",
            Self::KeyRevoked => "api_key.revoked",
            Self::KeyLeaked => "api_key.leaked",
            Self::KeyExpiring => "api_key.expiring",
            Self::KeyExpired => "api_key.expired",
            Self::AnomalyDetected => "anomaly.detected",
            Self::RefreshReuse => "refresh_token.reuse_detected",
            Self::SigningKeyRotated => "signing_key.rotated",
            Self::SigningKeyRevoked => "signing_key.revoked",
            Self::Test => "webhook.test",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One event about to be written: its type, the owner whose endpoints also receive it (admin
/// endpoints receive every event), its time and its `data`.
#[derive(Debug, Clone)]
pub struct Event {
    /// Type.
    pub kind: EventType,
    /// Owner of the key concerned; `None`: admin endpoints only.
    pub owner: Option<String>,
    /// When it happened.
    pub at: OffsetDateTime,
    /// The body's `data` (never a secret).
    pub data: Value,
}

impl Event {
    /// The body every endpoint receives: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> Result<String> {
        let ts = self
            .at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Internal(e.to_string()))?;
        serde_json::to_string(&json!({"type": self.kind.as_str(), "timestamp": ts, "data": self.data}))
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

/// Writes `event` to the outbox for every enabled endpoint that subscribes to it and may see it,
/// inside the caller's transaction. Returns how many deliveries were written.
pub async fn enqueue(conn: &mut PgConnection, event: &Event) -> Result<u64> {
    let endpoints: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints
         WHERE enabled AND $1 = ANY(events) AND (admin OR owner = $2) ORDER BY id",
    )
    .bind(event.kind.as_str())
    .bind(&event.owner)
    .fetch_all(&mut *conn)
    .await?;
    insert(conn, event, &endpoints).await
}

/// Writes `event` for one endpoint only, whatever it subscribes to (the test event).
pub async fn enqueue_to(conn: &mut PgConnection, endpoint: Uuid, event: &Event) -> Result<u64> {
    insert(conn, event, &[endpoint]).await
}

async fn insert(conn: &mut PgConnection, event: &Event, endpoints: &[Uuid]) -> Result<u64> {
    if endpoints.is_empty() {
        return Ok(0);
    }
    let body = event.body()?;
    let ids: Vec<Uuid> = endpoints.iter().map(|_| Uuid::now_v7()).collect();
    let n = sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_type, body, next_attempt_at, created_at)
         SELECT d.id, d.endpoint, $3, $4, $5, $5 FROM unnest($1::uuid[], $2::uuid[]) AS d(id, endpoint)",
    )
    .bind(&ids)
    .bind(endpoints)
    .bind(event.kind.as_str())
    .bind(&body)
    .bind(event.at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut *conn).await?;
    Ok(n)
}

/// An `api_key.*` event about key `id`, read inside the caller's transaction:
/// `{"key_id", "owner", "name", "start", "environment", "expires_at"}` plus `extra` members
/// (`reason`, `url`, `source`). Nothing is written when the key does not exist.
pub async fn api_key(
    conn: &mut PgConnection,
    kind: EventType,
    id: Uuid,
    at: OffsetDateTime,
    extra: Value,
) -> Result<u64> {
    let row: Option<(String, String, String, String, Option<OffsetDateTime>)> =
        sqlx::query_as("SELECT owner, name, start, environment, expires_at FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((owner, name, start, environment, expires_at)) = row else {
        return Ok(0);
    };
    let expires_at = expires_at.and_then(|e| e.format(&time::format_description::well_known::Rfc3339).ok());
    let mut data = json!({"key_id": id, "owner": owner, "name": name, "start": start,
                          "environment": environment, "expires_at": expires_at});
    if let (Some(d), Value::Object(extra)) = (data.as_object_mut(), extra) {
        d.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
    }
    enqueue(conn, &Event { kind, owner: Some(owner), at, data }).await
}

/// A `signing_key.*` event about `kid` (`{"kid", "alg", "state"}`), for admin endpoints, read
/// inside the caller's transaction.
pub async fn signing_key(conn: &mut PgConnection, kind: EventType, kid: &str, at: OffsetDateTime) -> Result<u64> {
    let row: Option<(String, String)> = sqlx::query_as("SELECT alg, state FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((alg, state)) = row else {
        return Ok(0);
    };
    enqueue(conn, &Event { kind, owner: None, at, data: json!({"kid": kid, "alg": alg, "state": state}) }).await
}

/// `api_key.revoked` for each of `ids`, revoked together with their owner (a user deleted, a
/// client disabled), inside the caller's transaction.
pub async fn api_keys_revoked(conn: &mut PgConnection, ids: &[Uuid], at: OffsetDateTime, reason: &str) -> Result<()> {
    for id in ids {
        api_key(conn, EventType::KeyRevoked, *id, at, json!({"reason": reason})).await?;
    }
    Ok(())
}
