//! Anomaly records: raised by the detector (and by refresh-token reuse), one per kind, subject and
//! window, each with its evidence.

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    error::Result,
    webhooks::{Event, EventType},
};

/// Kinds of anomaly.
pub mod kind {
    /// Use far above the key's own baseline.
    pub const RATE_SPIKE: &str = "RATE_SPIKE";
    /// A revoked key is still presented.
    pub const REVOKED_KEY_IN_USE: &str = "REVOKED_KEY_IN_USE";
    /// An expired key (or a rotated key past its grace) is still presented.
    pub const EXPIRED_KEY_IN_USE: &str = "EXPIRED_KEY_IN_USE";
    /// Many verifications refused for the source address.
    pub const IP_NOT_ALLOWED_BURST: &str = "IP_NOT_ALLOWED_BURST";
    /// Many source addresses never seen before for the key.
    pub const NEW_IP_BURST: &str = "NEW_IP_BURST";
    /// Many unknown or malformed keys from one source.
    pub const BRUTE_FORCE: &str = "BRUTE_FORCE";
    /// A spent refresh token was presented again.
    pub const REFRESH_TOKEN_REUSE: &str = "REFRESH_TOKEN_REUSE";
    /// The key was reported found in public (a leak report).
    pub const KEY_LEAKED: &str = "KEY_LEAKED";
}

/// A new anomaly.
pub struct NewAnomaly<'a> {
    /// Kind (see [`kind`]).
    pub kind: &'a str,
    /// The key concerned.
    pub key_id: Option<Uuid>,
    /// The client concerned.
    pub client_id: Option<&'a str>,
    /// What deduplicates it: one record per kind, subject and window.
    pub subject: String,
    /// Start of the window.
    pub window_start: OffsetDateTime,
    /// When detected.
    pub detected_at: OffsetDateTime,
    /// Evidence.
    pub details: Value,
}

/// Records an anomaly unless one is already open for the same kind, subject and window, and with
/// it (same transaction, when the caller has one) the `anomaly.detected` webhook: admin endpoints,
/// and the endpoints of the key's owner. Returns whether a new record was made.
pub async fn raise(conn: &mut PgConnection, a: &NewAnomaly<'_>) -> Result<bool> {
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO anomalies (id, kind, key_id, client_id, subject, window_start, detected_at, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (kind, subject, window_start) DO NOTHING",
    )
    .bind(id)
    .bind(a.kind)
    .bind(a.key_id)
    .bind(a.client_id)
    .bind(&a.subject)
    .bind(a.window_start)
    .bind(a.detected_at)
    .bind(&a.details)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if inserted {
        crate::metrics::anomaly(a.kind);
        let owner: Option<String> = match a.key_id {
            Some(k) => {
                sqlx::query_scalar("SELECT owner FROM api_keys WHERE id = $1")
                    .bind(k)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            None => None,
        };
        let data = serde_json::json!({"id": id, "kind": a.kind, "key_id": a.key_id, "client_id": a.client_id,
            "detected_at": a.detected_at.format(&time::format_description::well_known::Rfc3339).ok(),
            "details": a.details});
        let event = Event { kind: EventType::AnomalyDetected, owner, at: a.detected_at, data };
        crate::webhooks::events::enqueue(conn, &event).await?;
    }
    Ok(inserted)
}

/// An anomaly as the admin API shows it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "01a20d3a-ff60-719a-9595-d315eff75f5a",
    "kind": "REVOKED_KEY_IN_USE",
    "key_id": "01a1feff-a810-7c70-a12b-7a0646f92279",
    "detected_at": "2026-11-24T11:05:00Z",
    "details": {
        "refusals": 37,
        "code": "REVOKED",
        "window_minutes": 5,
        "rotated_to": null,
        "revoked_at": 1795517892,
        "expires_at": 1803055530
    }
}))]
pub struct Anomaly {
    /// Id.
    pub id: Uuid,
    /// Kind.
    pub kind: String,
    /// Key concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    /// Client concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// When detected.
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    /// Evidence.
    pub details: Value,
}

/// Anomalies detected at or after `since`, oldest first.
pub async fn list(
    db: &PgPool,
    since: Option<OffsetDateTime>,
    after: Option<Uuid>,
    kind: Option<&str>,
    key: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Anomaly>> {
    Ok(sqlx::query_as(
        "SELECT id, kind, key_id, client_id, detected_at, details FROM anomalies
         WHERE ($1::timestamptz IS NULL OR detected_at >= $1) AND ($2::text IS NULL OR kind = $2)
           AND ($4::uuid IS NULL OR (detected_at, id) > (SELECT detected_at, id FROM anomalies WHERE id = $4))
           AND ($5::uuid IS NULL OR key_id = $5)
         ORDER BY detected_at, id LIMIT $3",
    )
    .bind(since)
    .bind(kind)
    .bind(limit)
    .bind(after)
    .bind(key)
    .fetch_all(db)
    .await?)
}
