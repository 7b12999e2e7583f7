//! The outbox relay. Every instance runs it; a transaction-scoped advisory lock lets exactly one
//! work at a time, so if that instance dies the next tick of another takes over.
//!
//! Each pass, under the lock: give every committed, unsequenced event the next `seq` in commit
//! order (a `bigserial` alone can commit out of order) and commit the numbers; then publish
//! unpublished events in `seq` order, stopping at the first failure so order holds, and mark what
//! went out. At-least-once, and a published `seq` always names the same event.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{bus::Bus, RevocationEvent};
use crate::{db::listen::Wakeups, error::Result};

/// Advisory lock key of the relay ("tessrly").
pub const RELAY_LOCK: i64 = 0x0074_6573_7372_6c79;
/// Channel notified when rows are inserted into the outbox.
pub const OUTBOX_CHANNEL: &str = "tessera_outbox";
/// Channel notified when events have been sequenced (instances then catch up).
pub const SEQUENCED_CHANNEL: &str = "tessera_sequenced";
const POLL: Duration = Duration::from_millis(500);
const BATCH: i64 = 500;

/// Outcome of one relay pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Whether this instance held the lock.
    pub leader: bool,
    /// Events that received a `seq`.
    pub sequenced: u64,
    /// Events published to the bus.
    pub published: u64,
    /// Events still waiting for the bus.
    pub pending: bool,
}

/// One pass of the relay: sequence, then publish, each in its own transaction under the lock.
///
/// The numbers are committed before any event carrying them is published. Were both in one
/// transaction, an instance dying (or a commit failing) after publishing would roll the numbers
/// back; the next pass could then give the same numbers to other events, and every consumer that
/// had applied the published ones would skip those as already seen. Published twice is harmless
/// (consumers ignore a `seq` they have); renumbered is not.
pub async fn pass(db: &PgPool, bus: &Bus) -> Result<PassReport> {
    let Some(sequenced) = sequence(db).await? else {
        return Ok(PassReport::default());
    };
    let (published, pending) = publish(db, bus).await?;
    crate::metrics::outbox_published(published);
    Ok(PassReport { leader: true, sequenced, published, pending })
}

/// Takes the relay's lock for the rest of `tx`; false when another instance holds it.
async fn lead(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(RELAY_LOCK).fetch_one(&mut **tx).await?)
}

/// Gives every committed, unsequenced event the next `seq`, and commits; `None` when another
/// instance holds the lock.
async fn sequence(db: &PgPool) -> Result<Option<u64>> {
    let mut tx = db.begin().await?;
    if !lead(&mut tx).await? {
        return Ok(None);
    }
    let sequenced = sqlx::query(
        "WITH base AS (SELECT coalesce(max(seq), 0) AS m FROM revocation_events),
              pending AS (SELECT id, row_number() OVER (ORDER BY id) AS rn
                          FROM revocation_events WHERE seq IS NULL ORDER BY id LIMIT $1)
         UPDATE revocation_events e SET seq = base.m + pending.rn
         FROM pending, base WHERE e.id = pending.id",
    )
    .bind(BATCH)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if sequenced > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(SEQUENCED_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Some(sequenced))
}

/// Publishes sequenced, unpublished events in `seq` order, stopping at the first failure so order
/// holds, and marks what went out: (published, whether any are left).
async fn publish(db: &PgPool, bus: &Bus) -> Result<(u64, bool)> {
    let mut tx = db.begin().await?;
    if !lead(&mut tx).await? {
        return Ok((0, false));
    }
    let rows: Vec<super::EventRow> = sqlx::query_as(
        "SELECT seq, kind, subject_id, jti, kid, expires_at, revoked_at, reason FROM revocation_events
             WHERE published_at IS NULL AND seq IS NOT NULL ORDER BY seq LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let total = rows.len();
    let mut published_up_to = None;
    let mut published = 0u64;
    for row in rows {
        let seq = row.0;
        let Some(event) = super::from_row(row) else {
            continue;
        };
        let payload = serde_json::to_string(&event).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
        if bus.publish(seq, &payload).await.is_err() {
            break;
        }
        published += 1;
        published_up_to = Some(seq);
    }
    if let Some(upto) = published_up_to {
        sqlx::query("UPDATE revocation_events SET published_at = now() WHERE published_at IS NULL AND seq <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((published, published < total as u64))
}

/// Runs the relay until shutdown: woken by `LISTEN tessera_outbox`, polling as a fallback (and
/// listening again after the connection is lost).
pub async fn run(db: PgPool, bus: Bus, shutdown: CancellationToken) {
    let mut wakeups = Wakeups::new(db.clone(), &[OUTBOX_CHANNEL]).await;
    loop {
        let started = tokio::time::Instant::now();
        match pass(&db, &bus).await {
            Ok(report) if report.published > 0 || report.sequenced > 0 => {
                tracing::debug!(?report, ms = started.elapsed().as_millis(), "relay pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "relay pass failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = wakeups.wait(POLL) => {}
        }
    }
}

/// Decodes a payload received from the bus.
pub fn decode(payload: &str) -> Option<RevocationEvent> {
    serde_json::from_str(payload).ok()
}
