//! Webhook endpoints: create (the secret shown once, sealed at rest), read, edit, delete, test,
//! and the delivery log. An endpoint made with scope `admin` receives every event; any other
//! receives the events of the keys its creator owns.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    events::{self, Event, EventType},
    sign::EndpointSecret,
    ssrf, Webhooks,
};
use crate::{
    apikeys::manage::Requester,
    audit::{self, Actor},
    error::{Error, Result},
};

/// Most endpoints one owner may have.
pub const MAX_PER_OWNER: i64 = 50;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"url": "https://hooks.example.com/tessera", "events": ["api_key.revoked", "api_key.leaked"],
    "description": "security team"}))]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where deliveries go: an `http` or `https` URL (at most 2 048 characters).
    #[schema(example = "https://hooks.example.com/tessera")]
    pub url: String,
    /// Event types to receive (at least one; see the list of types).
    #[schema(example = json!(["api_key.revoked", "api_key.leaked"]))]
    pub events: Vec<String>,
    /// Free text, at most 256 characters.
    pub description: Option<String>,
}

/// `PATCH /v1/webhooks/{id}`: only the fields given change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"enabled": true, "events": ["api_key.revoked", "api_key.expiring", "api_key.expired"]}))]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// New destination.
    pub url: Option<String>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// Pause (`false`) or resume (`true`) deliveries; resuming clears a disable after `410 Gone`.
    pub enabled: Option<bool>,
    /// New description.
    pub description: Option<String>,
}

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"id": "01a2f3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "url": "https://hooks.example.com/tessera",
    "events": ["api_key.revoked", "api_key.leaked"], "description": "security team", "enabled": true,
    "owner": "01a1f805-f370-74f8-996d-a763b7a969b1", "admin": false,
    "created_at": "2026-11-30T09:00:00Z", "updated_at": "2026-11-30T09:00:00Z"}))]
pub struct EndpointView {
    /// Id.
    pub id: Uuid,
    /// Destination.
    pub url: String,
    /// Event types it receives.
    pub events: Vec<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why the service disabled it (`410 Gone`), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Its creator; a non-admin endpoint receives the events of this owner's keys.
    pub owner: String,
    /// Whether it receives every event (created with scope `admin`).
    pub admin: bool,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A new endpoint with its secret: the only time the secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "01a2f3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "url": "https://hooks.example.com/tessera",
    "events": ["api_key.revoked", "api_key.leaked"], "description": "security team", "enabled": true,
    "owner": "01a1f805-f370-74f8-996d-a763b7a969b1", "admin": false,
    "created_at": "2026-11-30T09:00:00Z", "updated_at": "2026-11-30T09:00:00Z",
    "secret": "whsec_Vt0yV2qQ2vYQm4m0p4nU8a1Yx3bJ6lHc9wq5r7s8t0A="}))]
pub struct CreatedEndpoint {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` + base64 of 32 bytes: signs every delivery. Shown this once.
    #[schema(example = "whsec_Vt0yV2qQ2vYQm4m0p4nU8a1Yx3bJ6lHc9wq5r7s8t0A=")]
    pub secret: String,
}

impl std::fmt::Debug for CreatedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedEndpoint").field("endpoint", &self.endpoint).field("secret", &"[redacted]").finish()
    }
}

/// One line of an endpoint's delivery log, newest first.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"id": "01a2f3d0-0c1d-7e2f-8a3b-4c5d6e7f8a9b", "webhook_id": "01a2f3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b",
    "message_id": "msg_01a2f3cf2b1a7c3d9e8f7a6b5c4d3e2f", "type": "api_key.revoked", "attempt": 2,
    "status": "delivered", "response_code": 204, "at": "2026-11-30T09:00:07Z"}))]
pub struct DeliveryLogEntry {
    /// Id of this line (the cursor of the next page).
    pub id: Uuid,
    /// The endpoint.
    pub webhook_id: Uuid,
    /// The `webhook-id` header of the delivery: the same on every attempt of one event.
    pub message_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Attempt number, from 1 (0: not attempted yet).
    pub attempt: i32,
    /// `pending` (will be tried, or tried again), `delivered` or `failed` (given up).
    pub status: String,
    /// HTTP status the receiver answered, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<i32>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

const VIEW: &str = "id, url, events, description, enabled, disabled_reason, owner, admin, created_at, updated_at";

fn event_types(events: &[String]) -> Result<Vec<String>> {
    if events.is_empty() {
        return Err(Error::invalid("events: name at least one event type"));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        let t = EventType::parse(e).ok_or_else(|| {
            Error::invalid(format!("events: unknown event type {:?}", e.chars().take(64).collect::<String>()))
        })?;
        if !out.iter().any(|o| o == t.as_str()) {
            out.push(t.as_str().to_owned());
        }
    }
    Ok(out)
}

fn description(d: Option<String>) -> Result<Option<String>> {
    match d {
        Some(d) if d.chars().count() > 256 => Err(Error::invalid("description: at most 256 characters")),
        Some(d) if d.contains('\0') => Err(Error::invalid("description: must not contain NUL")),
        other => Ok(other),
    }
}

impl Webhooks {
    async fn checked_url(&self, raw: &str) -> Result<String> {
        let allow = self.config.webhooks.allow_private;
        let url = ssrf::check_url(raw, allow)?;
        ssrf::check_resolved(&url, allow).await?;
        Ok(url.to_string())
    }

    /// Creates an endpoint for the requester; the secret is in the result and nowhere else.
    pub async fn create(&self, who: Requester<'_>, body: NewEndpoint, actor: &Actor) -> Result<CreatedEndpoint> {
        let events = event_types(&body.events)?;
        let description = description(body.description)?;
        let url = self.checked_url(&body.url).await?;
        let now = self.clock.now();
        let id = Uuid::now_v7();
        let secret = EndpointSecret::generate();
        let sealed = self.sealer.seal(id.as_bytes(), secret.bytes());
        let mut tx = self.db.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1))")
            .bind(who.sub)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE owner = $1")
            .bind(who.sub)
            .fetch_one(&mut *tx)
            .await?;
        if count >= MAX_PER_OWNER {
            return Err(Error::LimitExceeded(format!("at most {MAX_PER_OWNER} webhook endpoints per owner")));
        }
        let endpoint: EndpointView = sqlx::query_as(&format!(
            "INSERT INTO webhook_endpoints (id, owner, admin, url, events, description, secret_sealed, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {VIEW}"
        ))
        .bind(id)
        .bind(who.sub)
        .bind(who.admin)
        .bind(&url)
        .bind(&events)
        .bind(&description)
        .bind(&sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            now,
            actor,
            "webhook.create",
            "webhook",
            &id.to_string(),
            json!({"url": url, "events": events}),
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedEndpoint { endpoint, secret: secret.display() })
    }

    /// The requester's endpoints (an admin: every endpoint), oldest first: at most `limit`, after
    /// the endpoint `after` (the cursor of the previous page).
    pub async fn list(&self, who: Requester<'_>, after: Option<Uuid>, limit: i64) -> Result<Vec<EndpointView>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VIEW} FROM webhook_endpoints WHERE ($1::text IS NULL OR owner = $1)
               AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(who.owner_filter())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await?)
    }

    /// One endpoint, if the requester may see it.
    pub async fn get(&self, who: Requester<'_>, id: Uuid) -> Result<EndpointView> {
        sqlx::query_as(&format!(
            "SELECT {VIEW} FROM webhook_endpoints WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
        ))
        .bind(id)
        .bind(who.owner_filter())
        .fetch_optional(&self.db)
        .await?
        .ok_or(Error::NotFound("webhook"))
    }

    /// Changes an endpoint's `url`, `events`, `enabled` or `description`.
    pub async fn update(
        &self,
        who: Requester<'_>,
        id: Uuid,
        patch: EndpointPatch,
        actor: &Actor,
    ) -> Result<EndpointView> {
        let events = patch.events.as_deref().map(event_types).transpose()?;
        let url = match &patch.url {
            Some(u) => Some(self.checked_url(u).await?),
            None => None,
        };
        let description = description(patch.description)?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let view: EndpointView = sqlx::query_as(&format!(
            "UPDATE webhook_endpoints SET url = COALESCE($3, url), events = COALESCE($4, events),
                 enabled = COALESCE($5, enabled), description = COALESCE($6, description),
                 disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END, updated_at = $7
             WHERE id = $1 AND ($2::text IS NULL OR owner = $2) RETURNING {VIEW}"
        ))
        .bind(id)
        .bind(who.owner_filter())
        .bind(&url)
        .bind(&events)
        .bind(patch.enabled)
        .bind(&description)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
        let details = json!({"url": url, "events": events, "enabled": patch.enabled});
        audit::record(&mut tx, now, actor, "webhook.update", "webhook", &id.to_string(), details).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Deletes an endpoint and its pending deliveries.
    pub async fn delete(&self, who: Requester<'_>, id: Uuid, actor: &Actor) -> Result<()> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let gone = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND ($2::text IS NULL OR owner = $2)")
            .bind(id)
            .bind(who.owner_filter())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(Error::NotFound("webhook"));
        }
        audit::record(&mut tx, now, actor, "webhook.delete", "webhook", &id.to_string(), json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a `webhook.test` event for one endpoint (whatever it subscribes to).
    pub async fn test(&self, who: Requester<'_>, id: Uuid) -> Result<()> {
        let endpoint = self.get(who, id).await?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let event = Event {
            kind: EventType::Test,
            owner: Some(endpoint.owner),
            at: now,
            data: json!({"webhook_id": id, "message": "a test event from Tessera"}),
        };
        events::enqueue_to(&mut tx, id, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An endpoint's delivery log, newest first: one line per attempt, and one for each delivery
    /// not attempted yet. `after` is the id of the last line of the previous page.
    pub async fn deliveries(
        &self,
        who: Requester<'_>,
        id: Uuid,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<DeliveryLogEntry>> {
        self.get(who, id).await?;
        Ok(sqlx::query_as(
            "WITH log AS (
                SELECT a.id, a.endpoint_id AS webhook_id, 'msg_' || replace(a.delivery_id::text, '-', '') AS message_id,
                       a.event_type, a.attempt, a.status, a.response_code, a.at
                  FROM webhook_attempts a WHERE a.endpoint_id = $1
                UNION ALL
                SELECT d.id, d.endpoint_id, 'msg_' || replace(d.id::text, '-', ''), d.event_type, 0, d.status, NULL,
                       d.created_at
                  FROM webhook_deliveries d WHERE d.endpoint_id = $1 AND d.attempts = 0)
             SELECT * FROM log
             WHERE $2::uuid IS NULL OR (at, id) < (SELECT at, id FROM log WHERE id = $2)
             ORDER BY at DESC, id DESC LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await?)
    }
}

/// The `webhook-id` of a delivery: `msg_` and its id without dashes, the same on every attempt.
pub fn message_id(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}
