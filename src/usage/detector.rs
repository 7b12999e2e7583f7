//! The anomaly detector. Every few seconds, on exactly one instance (advisory lock), it reads the
//! usage every instance has flushed to Postgres and raises at most one record per kind, subject
//! and hour, each with its evidence.

use std::time::Duration;

use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    anomalies::{self, kind, NewAnomaly},
    Usage,
};
use crate::error::Result;

/// Advisory lock key of the detector ("tessdet").
pub const DETECTOR_LOCK: i64 = 0x0074_6573_7364_6574;
/// How often the detector runs.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How long after a minute ends the background pass looks for a `RATE_SPIKE` in it: flushes run
/// every 2 s.
pub const SPIKE_SETTLE: time::Duration = time::Duration::seconds(10);

/// Verifications in one `key_usage` row: valid plus refused (most rows refuse nothing).
const ROW_TOTAL: &str = "valid + CASE WHEN denied = '{}'::jsonb THEN 0
    ELSE (SELECT coalesce(sum(v::bigint), 0) FROM jsonb_each_text(denied) AS d(k, v)) END";

/// Minimum minutes of history before a key has a baseline worth comparing with.
const MIN_BASELINE_MINUTES: i64 = 5;

pub(super) fn minute_floor(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_second(0).and_then(|t| t.replace_nanosecond(0)).unwrap_or(t)
}

pub(super) fn hour_floor(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_minute(0).map(minute_floor).unwrap_or(t)
}

impl Usage {
    /// A transaction holding the detector's advisory lock, or `None` when another instance holds
    /// it: detection and retention run on one instance at a time.
    pub(super) async fn lead(&self) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
        let mut tx = self.db.begin().await?;
        let leader: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(DETECTOR_LOCK).fetch_one(&mut *tx).await?;
        Ok(leader.then_some(tx))
    }

    /// Runs one detection pass if this instance gets the lock (`None` if another instance holds it);
    /// returns how many records were raised.
    pub async fn run_once(&self) -> Result<Option<u64>> {
        self.pass(self.clock.now(), true).await
    }

    /// The background pass, every [`INTERVAL`]: like [`Usage::run_once`], but `RATE_SPIKE` looks
    /// at each minute once, [`SPIKE_SETTLE`] after it closed (when every instance has flushed
    /// it), instead of on every pass: it reads every row of the minute. `spikes_done` is the
    /// last minute this instance checked.
    pub async fn run_scheduled(&self, spikes_done: &mut Option<OffsetDateTime>) -> Result<Option<u64>> {
        let now = self.clock.now();
        let last = minute_floor(now) - time::Duration::MINUTE;
        let due = now - minute_floor(now) >= SPIKE_SETTLE && *spikes_done != Some(last);
        let raised = self.pass(now, due).await?;
        if due && raised.is_some() {
            *spikes_done = Some(last);
        }
        Ok(raised)
    }

    async fn pass(&self, now: OffsetDateTime, spikes: bool) -> Result<Option<u64>> {
        let Some(mut tx) = self.lead().await? else {
            return Ok(None);
        };
        let mut raised = 0;
        if spikes {
            raised += self.rate_spikes(&mut tx, now).await?;
        }
        raised += denied_in_use(&mut tx, now, "REVOKED", kind::REVOKED_KEY_IN_USE, 1).await?;
        raised += denied_in_use(&mut tx, now, "EXPIRED", kind::EXPIRED_KEY_IN_USE, 1).await?;
        raised += denied_in_use(
            &mut tx,
            now,
            "IP_NOT_ALLOWED",
            kind::IP_NOT_ALLOWED_BURST,
            self.config.anomalies.ip_denied_burst,
        )
        .await?;
        raised += self.new_ip_bursts(&mut tx, now).await?;
        raised += self.brute_force(&mut tx, now).await?;
        tx.commit().await?;
        Ok(Some(raised))
    }

    /// The last complete minute far above the key's own per-minute average of the hour before it.
    async fn rate_spikes(&self, conn: &mut PgConnection, now: OffsetDateTime) -> Result<u64> {
        let t = &self.config.anomalies;
        let this_minute = minute_floor(now);
        let last = this_minute - time::Duration::MINUTE;
        let since = last - time::Duration::HOUR;
        // The minute's busy keys first (one scan of that minute), then the hour before for those
        // keys only, through the per-key index.
        let rows: Vec<(Uuid, i64, i64, OffsetDateTime)> = sqlx::query_as(&format!(
            "WITH cur AS (
                 SELECT key_id, sum({ROW_TOTAL})::bigint AS n FROM key_usage
                 WHERE bucket = 'minute' AND start = $2 GROUP BY key_id HAVING sum({ROW_TOTAL}) >= $3)
             SELECT cur.key_id, cur.n,
                    coalesce((SELECT sum({ROW_TOTAL}) FROM key_usage
                              WHERE key_id = cur.key_id AND bucket = 'minute' AND start >= $1 AND start < $2), 0)::bigint,
                    k.created_at
             FROM cur JOIN api_keys k ON k.id = cur.key_id"
        ))
    .bind(since)
    .bind(last)
    .bind(i64::from(t.spike_floor))
    .fetch_all(&mut *conn)
    .await?;
        let mut raised = 0;
        for (key_id, n, history, created_at) in rows {
            let observed = ((last - created_at.max(since)).whole_minutes()).clamp(0, 60);
            if observed < MIN_BASELINE_MINUTES {
                continue;
            }
            let baseline = history as f64 / observed as f64;
            if (n as f64) < f64::from(t.spike_factor) * baseline.max(1.0) {
                continue;
            }
            let details = json!({"minute": last.unix_timestamp(), "count": n, "baseline_per_minute": baseline,
                             "baseline_minutes": observed, "factor": t.spike_factor});
            raised += raise(conn, kind::RATE_SPIKE, Some(key_id), key_id.to_string(), now, details).await? as u64;
        }
        Ok(raised)
    }

    /// Many source addresses never seen before for a key that has a history of its own.
    async fn new_ip_bursts(&self, conn: &mut PgConnection, now: OffsetDateTime) -> Result<u64> {
        let since = now - time::Duration::minutes(10);
        let rows: Vec<(Uuid, i64, Vec<String>)> = sqlx::query_as(
            "SELECT key_id, count(*), (array_agg(ip ORDER BY first_seen))[1:20]
         FROM key_usage_ips n WHERE first_seen >= $1
           AND EXISTS (SELECT 1 FROM key_usage_ips o WHERE o.key_id = n.key_id AND o.first_seen < $1)
         GROUP BY key_id HAVING count(*) >= $2",
        )
        .bind(since)
        .bind(i64::from(self.config.anomalies.new_ip_burst))
        .fetch_all(&mut *conn)
        .await?;
        let mut raised = 0;
        for (key_id, n, sample) in rows {
            let details = json!({"new_addresses": n, "window_minutes": 10, "sample": sample});
            raised += raise(conn, kind::NEW_IP_BURST, Some(key_id), key_id.to_string(), now, details).await? as u64;
        }
        Ok(raised)
    }

    /// Many unknown or malformed keys presented from one source.
    async fn brute_force(&self, conn: &mut PgConnection, now: OffsetDateTime) -> Result<u64> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT source, sum(count)::bigint FROM source_failures WHERE minute >= $1 GROUP BY source HAVING sum(count) >= $2",
    )
    .bind(minute_floor(now) - time::Duration::minutes(5))
    .bind(i64::from(self.config.anomalies.brute_force))
    .fetch_all(&mut *conn)
    .await?;
        let mut raised = 0;
        for (source, n) in rows {
            let details =
                json!({"source": source, "refusals": n, "codes": ["NOT_FOUND", "MALFORMED"], "window_minutes": 5});
            raised += raise(conn, kind::BRUTE_FORCE, None, source, now, details).await? as u64;
        }
        Ok(raised)
    }
}

/// Key, refusals, successor, revoked at, expires at.
type DeniedRow = (Uuid, i64, Option<Uuid>, Option<OffsetDateTime>, Option<OffsetDateTime>);

/// Keys refused with `code` at least `threshold` times in the last five minutes.
async fn denied_in_use(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    code: &str,
    kind: &str,
    threshold: u32,
) -> Result<u64> {
    let rows: Vec<DeniedRow> = sqlx::query_as(
        "SELECT u.key_id, sum((u.denied ->> $1)::bigint)::bigint AS n, k.rotated_to, k.revoked_at, k.expires_at
         FROM key_usage u JOIN api_keys k ON k.id = u.key_id
         WHERE u.bucket = 'minute' AND u.start >= $2 AND u.denied <> '{}'::jsonb AND u.denied ? $1
         GROUP BY u.key_id, k.rotated_to, k.revoked_at, k.expires_at HAVING sum((u.denied ->> $1)::bigint) >= $3",
    )
    .bind(code)
    .bind(minute_floor(now) - time::Duration::minutes(5))
    .bind(i64::from(threshold))
    .fetch_all(&mut *conn)
    .await?;
    let mut raised = 0;
    for (key_id, n, rotated_to, revoked_at, expires_at) in rows {
        let details = json!({"refusals": n, "code": code, "window_minutes": 5, "rotated_to": rotated_to,
                             "revoked_at": revoked_at.map(|t| t.unix_timestamp()), "expires_at": expires_at.map(|t| t.unix_timestamp())});
        raised += raise(conn, kind, Some(key_id), key_id.to_string(), now, details).await? as u64;
    }
    Ok(raised)
}

async fn raise(
    conn: &mut PgConnection,
    kind: &str,
    key_id: Option<Uuid>,
    subject: String,
    now: OffsetDateTime,
    details: serde_json::Value,
) -> Result<bool> {
    let new =
        NewAnomaly { kind, key_id, client_id: None, subject, window_start: hour_floor(now), detected_at: now, details };
    let raised = anomalies::raise(conn, &new).await?;
    if raised {
        match key_id {
            Some(id) => tracing::warn!(kind, key_id = %id, "anomaly detected"),
            None => tracing::warn!(kind, "anomaly detected"),
        }
    }
    Ok(raised)
}
