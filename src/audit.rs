//! The audit log: who did what to which client, user, key or signing key, when, from where.
//! Written in the same transaction as the change it describes.

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// Who acts, and from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// Token subject (user id or client id), or `system` / `cli`.
    pub id: String,
    /// Source address.
    pub ip: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
}

impl Actor {
    /// Actions taken by Tessera itself (scheduled rotation, bootstrap).
    pub fn system() -> Self {
        Self { id: "system".into(), ip: None, request_id: None }
    }
}

/// Records one action.
pub async fn record(
    conn: &mut PgConnection,
    at: OffsetDateTime,
    actor: &Actor,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, target_type, target_id, ip, request_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7())
    .bind(at)
    .bind(&actor.id)
    .bind(action)
    .bind(target_type)
    .bind(target_id)
    .bind(&actor.ip)
    .bind(&actor.request_id)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// One audit entry as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "01a20d34-c5a0-781f-b7a0-43a6f767e7c9",
    "at": "2026-11-24T10:58:12Z",
    "actor": "01a1f805-f370-74f8-996d-a763b7a969b1",
    "action": "api_key.revoke",
    "target_type": "api_key",
    "target_id": "01a1feff-a810-7c70-a12b-7a0646f92279",
    "ip": "198.51.100.23",
    "request_id": "k3Xq9LmZ2bNw-1a4f",
    "details": {"reason": "leaked in a CI log"}
}))]
pub struct AuditEntry {
    /// Entry id.
    pub id: Uuid,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// What, e.g. `api_key.revoke`.
    pub action: String,
    /// Kind of target: `client`, `user`, `api_key`, `signing_key`.
    pub target_type: String,
    /// Target id.
    pub target_id: String,
    /// Source address.
    pub ip: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Extra facts.
    pub details: Value,
}

/// Filters for listing.
#[derive(Debug, Default)]
pub struct AuditQuery {
    /// Entries at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this target id.
    pub target_id: Option<String>,
    /// Only this target type.
    pub target_type: Option<String>,
    /// Entries after this one (the id of the last entry of the previous page), in (at, id) order.
    pub after: Option<Uuid>,
    /// Page size.
    pub limit: i64,
}

/// Lists entries, oldest first.
pub async fn list(db: &PgPool, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
    Ok(sqlx::query_as(
        "SELECT id, at, actor, action, target_type, target_id, ip, request_id, details FROM audit_log
         WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::text IS NULL OR actor = $2)
           AND ($3::text IS NULL OR target_id = $3) AND ($4::text IS NULL OR target_type = $4)
           AND ($6::uuid IS NULL OR (at, id) > (SELECT at, id FROM audit_log WHERE id = $6))
         ORDER BY at, id LIMIT $5",
    )
    .bind(q.since)
    .bind(&q.actor)
    .bind(&q.target_id)
    .bind(&q.target_type)
    .bind(q.limit)
    .bind(q.after)
    .fetch_all(db)
    .await?)
}

/// Reads the audit log (`GET /v1/admin/audit`); entries are written by the services, each in the
/// transaction of the change it records ([`record`]).
#[derive(Clone)]
pub struct Audit {
    db: PgPool,
}

impl Audit {
    /// The audit log of `db`.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Entries matching `q`, oldest first.
    pub async fn list(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        list(&self.db, q).await
    }
}
