//! Retention of usage: minute buckets older than the minute retention are rolled up into hour
//! buckets, and what is past every retention is deleted — on one instance at a time, under the
//! detector's advisory lock.

use super::{compaction::merge_sql, detector::hour_floor, Usage};
use crate::error::Result;

impl Usage {
    /// Rolls minute buckets older than the minute retention into hour buckets (exactly once: the
    /// rows are deleted in the same statement), and drops what is past every retention. Returns
    /// the hour rows written, `None` if another instance holds the lock.
    pub async fn roll_up(&self) -> Result<Option<u64>> {
        let Some(mut tx) = self.lead().await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let minute_cutoff = hour_floor(now - self.config.usage_minute_retention);
        let rolled = sqlx::query(&merge_sql("bucket = 'minute' AND start < $1", "hour", "hour"))
            .bind(minute_cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Hour rows past their retention take their latest use with them: the key's own row keeps
        // it (it is written only hourly while the key is in use).
        sqlx::query(
            "WITH gone AS (DELETE FROM key_usage WHERE bucket = 'hour' AND start < $1 RETURNING key_id, last_at, last_ip)
             UPDATE api_keys k SET last_used_at = m.last_at, last_used_ip = m.last_ip
             FROM (SELECT DISTINCT ON (key_id) key_id, last_at, last_ip FROM gone WHERE last_at IS NOT NULL
                   ORDER BY key_id, last_at DESC) m
             WHERE k.id = m.key_id AND (k.last_used_at IS NULL OR k.last_used_at < m.last_at)",
        )
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
