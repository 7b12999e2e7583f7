//! Retention of usage: minute buckets older than the minute retention are rolled up into hour
//! buckets, and what is past every retention is deleted — on one instance at a time, under the
//! detector's advisory lock.

use super::{detector::hour_floor, Usage};
use crate::error::Result;

impl Usage {
    /// Rolls minute buckets older than the minute retention into hour buckets (exactly once: the
    /// rows are deleted in the same statement), and drops what is past every retention. `None` if
    /// another instance holds the lock.
    pub async fn roll_up(&self) -> Result<Option<u64>> {
        let Some(mut tx) = self.lead().await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let minute_cutoff = hour_floor(now - self.config.usage_minute_retention);
        let rolled = sqlx::query(
        "WITH gone AS (DELETE FROM key_usage WHERE bucket = 'minute' AND start < $1 RETURNING key_id, start, valid, denied),
              valid_per AS (SELECT key_id, date_trunc('hour', start) AS h, sum(valid)::bigint AS v FROM gone GROUP BY 1, 2),
              denied_per AS (
                SELECT key_id, h, jsonb_object_agg(k, t) AS d FROM (
                    SELECT g.key_id, date_trunc('hour', g.start) AS h, e.k, sum(e.v::bigint) AS t
                    FROM gone g, jsonb_each_text(g.denied) AS e(k, v) GROUP BY 1, 2, 3) x
                GROUP BY 1, 2)
         INSERT INTO key_usage (key_id, bucket, start, valid, denied)
         SELECT v.key_id, 'hour', v.h, v.v, coalesce(d.d, '{}'::jsonb) FROM valid_per v LEFT JOIN denied_per d USING (key_id, h)
         ON CONFLICT (key_id, bucket, start) DO UPDATE SET
             valid = key_usage.valid + EXCLUDED.valid,
             denied = jsonb_add_counts(key_usage.denied, EXCLUDED.denied)",
    )
    .bind(minute_cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
        sqlx::query(
        "WITH gone AS (DELETE FROM key_usage_ip_buckets WHERE bucket = 'minute' AND start < $1 RETURNING key_id, start, ip)
         INSERT INTO key_usage_ip_buckets (key_id, bucket, start, ip)
         SELECT DISTINCT key_id, 'hour', date_trunc('hour', start), ip FROM gone
         ON CONFLICT DO NOTHING",
    )
    .bind(minute_cutoff)
    .execute(&mut *tx)
    .await?;
        sqlx::query("DELETE FROM key_usage WHERE bucket = 'hour' AND start < $1")
            .bind(now - self.config.usage_hour_retention)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM key_usage_ip_buckets WHERE bucket = 'hour' AND start < $1")
            .bind(now - self.config.usage_hour_retention)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM source_failures WHERE minute < $1")
            .bind(now - time::Duration::DAY)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM key_usage_ips WHERE last_seen < $1")
            .bind(now - self.config.usage_hour_retention)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM anomalies WHERE detected_at < $1")
            .bind(now - self.config.usage_hour_retention)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(rolled))
    }
}
