//! Expiry notices: `api_key.expiring` 7 days and 1 day before a key's `expires_at`, and
//! `api_key.expired` at it (a rotated key's expiry is its grace end). [`arm`] runs in the
//! transaction that sets an expiry; the scheduler sends each due notice once, on whichever
//! instance claims it (`FOR UPDATE SKIP LOCKED`), by the application clock.

use std::time::Duration;

use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{events, EventType, Webhooks};
use crate::error::Result;

/// The notices of one expiry: kind and how long before it.
const NOTICES: [(&str, time::Duration); 3] =
    [("expiring_7d", time::Duration::days(7)), ("expiring_1d", time::Duration::DAY), ("expired", time::Duration::ZERO)];
const TICK: Duration = Duration::from_secs(1);

/// Arms the notices of new keys `ids` expiring at `expiries` (same order), set at `now`, inside the
/// caller's transaction, in one statement: those whose moment is still ahead (a bulk import).
pub async fn arm_new(
    conn: &mut PgConnection,
    ids: &[Uuid],
    expiries: &[OffsetDateTime],
    now: OffsetDateTime,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = NOTICES.iter().map(|(k, _)| *k).collect();
    let before: Vec<i64> = NOTICES.iter().map(|(_, b)| b.whole_seconds()).collect();
    sqlx::query(
        "INSERT INTO api_key_notices (key_id, kind, due_at, expires_at)
         SELECT k.id, n.kind, k.exp - make_interval(secs => n.before), k.exp
         FROM unnest($1::uuid[], $2::timestamptz[]) AS k(id, exp)
         CROSS JOIN unnest($3::text[], $4::bigint[]) AS n(kind, before)
         WHERE k.exp - make_interval(secs => n.before) > $5",
    )
    .bind(ids)
    .bind(expiries)
    .bind(&kinds)
    .bind(&before)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// (Re-)arms the notices of key `id` for `expires_at`, set at `now`, inside the caller's
/// transaction. A notice whose moment has already passed is skipped; an unchanged expiry keeps
/// what was already sent; no expiry removes them all.
pub async fn arm(
    conn: &mut PgConnection,
    id: Uuid,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<()> {
    let Some(expires_at) = expires_at else {
        sqlx::query("DELETE FROM api_key_notices WHERE key_id = $1").bind(id).execute(&mut *conn).await?;
        return Ok(());
    };
    for (kind, before) in NOTICES {
        let due = expires_at - before;
        if due > now {
            sqlx::query(
                "INSERT INTO api_key_notices (key_id, kind, due_at, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key_id, kind) DO UPDATE SET due_at = EXCLUDED.due_at,
                     expires_at = EXCLUDED.expires_at, sent_at = NULL
                 WHERE api_key_notices.expires_at <> EXCLUDED.expires_at",
            )
            .bind(id)
            .bind(kind)
            .bind(due)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
        } else {
            sqlx::query("DELETE FROM api_key_notices WHERE key_id = $1 AND kind = $2 AND expires_at <> $3")
                .bind(id)
                .bind(kind)
                .bind(expires_at)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

impl Webhooks {
    /// Sends the notices due by the application clock (of live, unrevoked keys), each once.
    /// Returns how many were sent.
    pub async fn send_due_notices(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let due: Vec<(Uuid, String, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
            "SELECT n.key_id, n.kind, n.due_at, n.expires_at FROM api_key_notices n
             JOIN api_keys k ON k.id = n.key_id
             WHERE n.sent_at IS NULL AND n.due_at <= $1 AND k.revoked_at IS NULL
             ORDER BY n.due_at LIMIT 200 FOR UPDATE OF n SKIP LOCKED",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (id, kind, due_at, expires_at) in &due {
            let (event, extra) = if kind == "expired" {
                (EventType::KeyExpired, json!({}))
            } else {
                let days = (*expires_at - *due_at).whole_days();
                (EventType::KeyExpiring, json!({"expires_in_days": days}))
            };
            events::api_key(&mut tx, event, *id, *due_at, extra).await?;
            sqlx::query("UPDATE api_key_notices SET sent_at = $3 WHERE key_id = $1 AND kind = $2")
                .bind(id)
                .bind(kind)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(due.len())
    }

    /// Runs the expiry scheduler until shutdown, once a second.
    pub async fn run_scheduler(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.send_due_notices().await {
                tracing::warn!(error = %e, "expiry notices pass failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
