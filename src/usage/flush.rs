//! Writes a batch of counts in one transaction, as additive upserts, so what several instances
//! flush adds up exactly. Rows go in primary-key order, so concurrent flushes from different
//! instances take their row locks in the same order.

use serde_json::{Map, Value};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::recorder::{Batch, Counts, UsageRecorder};
use crate::error::Result;

fn denied_json(c: &Counts) -> Value {
    Value::Object(c.denied.iter().map(|(k, n)| ((*k).to_owned(), Value::from(*n))).collect::<Map<_, _>>())
}

fn at(minute: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(minute).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes one batch: `key_usage` (minute buckets), `key_usage_ips`, `key_usage_ip_buckets`,
/// `source_failures` and the keys' `last_used_at`/`last_used_ip`, all or nothing.
///
/// Counts are exact. Times of last use (`last_used_at` of a key, `last_seen` of a key's address)
/// are kept to the minute: a row whose stored time is less than a minute older is not rewritten
/// (a new address, or an earlier `first_seen`, always is). Traffic spread over many keys would
/// otherwise rewrite a row of `api_keys` and of `key_usage_ips` for nearly every verification.
pub async fn write(db: &PgPool, batch: &Batch) -> Result<()> {
    let mut tx = db.begin().await?;

    let mut keys: Vec<_> = batch.keys.iter().collect();
    keys.sort_by_key(|((id, minute), _)| (*id, *minute));
    if !keys.is_empty() {
        let ids: Vec<Uuid> = keys.iter().map(|((id, _), _)| *id).collect();
        let starts: Vec<OffsetDateTime> = keys.iter().map(|((_, m), _)| at(*m)).collect();
        let valid: Vec<i64> = keys.iter().map(|(_, c)| count(c.valid)).collect();
        let denied: Vec<Value> = keys.iter().map(|(_, c)| denied_json(c)).collect();
        sqlx::query(
            "INSERT INTO key_usage (key_id, bucket, start, valid, denied)
             SELECT id, 'minute', start, valid, denied
             FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::jsonb[]) AS u(id, start, valid, denied)
             ON CONFLICT (key_id, bucket, start) DO UPDATE SET
                 valid = key_usage.valid + EXCLUDED.valid,
                 denied = jsonb_add_counts(key_usage.denied, EXCLUDED.denied)",
        )
        .bind(ids)
        .bind(starts)
        .bind(valid)
        .bind(denied)
        .execute(&mut *tx)
        .await?;
    }

    let mut addresses: Vec<_> = batch.addresses.iter().map(|((id, ip), s)| (*id, ip.to_string(), *s)).collect();
    addresses.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    if !addresses.is_empty() {
        sqlx::query(
            "INSERT INTO key_usage_ips (key_id, ip, first_seen, last_seen)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[])
             ON CONFLICT (key_id, ip) DO UPDATE SET
                 first_seen = LEAST(key_usage_ips.first_seen, EXCLUDED.first_seen),
                 last_seen = GREATEST(key_usage_ips.last_seen, EXCLUDED.last_seen)
             WHERE key_usage_ips.first_seen > EXCLUDED.first_seen
                OR key_usage_ips.last_seen < EXCLUDED.last_seen - interval '1 minute'",
        )
        .bind(addresses.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(addresses.iter().map(|a| a.1.clone()).collect::<Vec<_>>())
        .bind(addresses.iter().map(|a| a.2.first).collect::<Vec<_>>())
        .bind(addresses.iter().map(|a| a.2.last).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    // Sorted, like every batch here, so instances flushing at once take row locks in one order.
    let mut minutes: Vec<_> = batch.address_minutes.iter().map(|(id, ip, m)| (*id, at(*m), ip.to_string())).collect();
    minutes.sort();
    if !minutes.is_empty() {
        sqlx::query(
            "INSERT INTO key_usage_ip_buckets (key_id, bucket, start, ip)
             SELECT k, 'minute', s, ip FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS u(k, s, ip)
             ON CONFLICT DO NOTHING",
        )
        .bind(minutes.iter().map(|m| m.0).collect::<Vec<_>>())
        .bind(minutes.iter().map(|m| m.1).collect::<Vec<_>>())
        .bind(minutes.iter().map(|m| m.2.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    let mut sources: Vec<_> = batch.sources.iter().map(|((ip, m), c)| (ip.to_string(), *m, c)).collect();
    sources.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    if !sources.is_empty() {
        sqlx::query(
            "INSERT INTO source_failures (source, minute, count, codes)
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::jsonb[])
             ON CONFLICT (source, minute) DO UPDATE SET
                 count = source_failures.count + EXCLUDED.count,
                 codes = jsonb_add_counts(source_failures.codes, EXCLUDED.codes)",
        )
        .bind(sources.iter().map(|s| s.0.clone()).collect::<Vec<_>>())
        .bind(sources.iter().map(|s| at(s.1)).collect::<Vec<_>>())
        .bind(sources.iter().map(|s| count(s.2.denied_total())).collect::<Vec<_>>())
        .bind(sources.iter().map(|s| denied_json(s.2)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    let mut last: Vec<_> = batch.last_used.iter().map(|(id, (t, ip))| (*id, *t, ip.to_string())).collect();
    last.sort_by_key(|l| l.0);
    if !last.is_empty() {
        sqlx::query(
            "UPDATE api_keys k SET last_used_at = u.at, last_used_ip = u.ip
             FROM (SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS x(id, at, ip)) u
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at - interval '1 minute'
                OR (k.last_used_at < u.at AND k.last_used_ip IS DISTINCT FROM u.ip))",
        )
        .bind(last.iter().map(|l| l.0).collect::<Vec<_>>())
        .bind(last.iter().map(|l| l.1).collect::<Vec<_>>())
        .bind(last.iter().map(|l| l.2.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    tx.commit().await?;
    Ok(())
}

impl UsageRecorder {
    /// Writes everything counted so far to Postgres, adding to what other instances wrote; on
    /// failure the counts are kept for the next attempt. Returns the verifications written.
    pub async fn flush(&self, db: &PgPool) -> Result<u64> {
        let batch = self.take();
        if batch.dropped > 0 {
            tracing::warn!(dropped = batch.dropped, "usage: per-address entries dropped at the cap");
        }
        if batch.is_empty() {
            return Ok(0);
        }
        match write(db, &batch).await {
            Ok(()) => Ok(batch.verifications()),
            Err(e) => {
                self.restore(Batch { dropped: 0, ..batch });
                Err(e)
            }
        }
    }
}
