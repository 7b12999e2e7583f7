//! Writes a batch of counts in one transaction. Usage rows are appended, never upserted: every
//! flush of every instance adds one `key_usage` row per key and minute it counted, and readers add
//! rows up (compaction later merges a minute's rows per key). With traffic spread over many keys
//! nearly every verification is the first of its key in its minute, and an upsert costs Postgres
//! several times what an append does (migration 0016 has the figures). Rows that are upserted
//! (`key_usage_ips`, `source_failures`) go in primary-key order, so concurrent flushes from
//! different instances take their row locks in the same order.

use std::{fmt::Write as _, net::IpAddr, sync::Arc};

use serde_json::{Map, Value};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::recorder::{Batch, Counts, UsageRecorder};
use crate::error::{Error, Result};

fn denied_json(c: &Counts) -> Value {
    Value::Object(c.denied.iter().map(|(k, n)| ((*k).to_owned(), Value::from(*n))).collect::<Map<_, _>>())
}

fn at(minute: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(minute).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The addresses of one row, comma-separated: Postgres arrays of arrays must be rectangular, and
/// an address never holds a comma.
fn joined(ips: &[IpAddr]) -> String {
    let mut out = String::with_capacity(ips.len() * 16);
    for (i, ip) in ips.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{ip}");
    }
    out
}

/// Writes one batch: `key_usage` rows (one per key and minute, with the minute's addresses and
/// latest use), `key_usage_ips`, `source_failures` and the keys' `last_used_at`/`last_used_ip`,
/// all or nothing.
///
/// Counts are exact. `key_usage_ips.last_seen` (read only by retention) is kept to the hour, and a
/// key's own `last_used_*` columns are written only when an hour or more older than the use: the
/// precise last use is the newest usage row's (`key_last_use` in SQL). An address pair already
/// known and fresh is filtered out before the upsert, which would otherwise lock its row.
pub async fn write(db: &PgPool, batch: &Batch) -> Result<()> {
    let mut tx = db.begin().await?;

    // In (key, minute) order: neighbouring rows share index pages.
    let mut rows: Vec<(&(Uuid, i64), &Counts)> = batch.keys.iter().collect();
    rows.sort_unstable_by_key(|(k, _)| **k);
    if !rows.is_empty() {
        // Every row has the address it was counted from; `coalesce` keeps one that somehow has
        // none from failing the whole batch (and every retry of it) on the NOT NULL.
        sqlx::query(
            "INSERT INTO key_usage (key_id, bucket, start, valid, denied, ips, last_at, last_ip)
             SELECT id, 'minute', start, valid, denied, coalesce(string_to_array(nullif(ips, ''), ','), '{}'),
                    last_at, last_ip
             FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::jsonb[], $5::text[], $6::timestamptz[], $7::text[])
                 AS u(id, start, valid, denied, ips, last_at, last_ip)",
        )
        .bind(rows.iter().map(|((id, _), _)| *id).collect::<Vec<_>>())
        .bind(rows.iter().map(|((_, m), _)| at(*m)).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| count(c.valid)).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| denied_json(c)).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| joined(&c.ips)).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.last.map(|l| l.0)).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.last.map(|l| l.1.to_string())).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    let mut addresses: Vec<_> = batch.addresses.iter().map(|((id, ip), s)| (*id, ip.to_string(), *s)).collect();
    addresses.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    if !addresses.is_empty() {
        sqlx::query(
            "INSERT INTO key_usage_ips (key_id, ip, first_seen, last_seen)
             SELECT u.k, u.ip, u.f, u.l FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(k, ip, f, l)
             WHERE NOT EXISTS (SELECT 1 FROM key_usage_ips o WHERE o.key_id = u.k AND o.ip = u.ip
                               AND o.first_seen <= u.f AND o.last_seen >= u.l - interval '1 hour')
             ON CONFLICT (key_id, ip) DO UPDATE SET
                 first_seen = LEAST(key_usage_ips.first_seen, EXCLUDED.first_seen),
                 last_seen = GREATEST(key_usage_ips.last_seen, EXCLUDED.last_seen)",
        )
        .bind(addresses.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(addresses.iter().map(|a| a.1.clone()).collect::<Vec<_>>())
        .bind(addresses.iter().map(|a| a.2.first).collect::<Vec<_>>())
        .bind(addresses.iter().map(|a| a.2.last).collect::<Vec<_>>())
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
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at - interval '1 hour')",
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
    ///
    /// The write runs in a task of its own. The batch has left the recorder by then, and a caller
    /// cancelled mid-write (a usage report flushes first, and its client may go away) would
    /// otherwise drop the batch, and every count in it, with its future.
    pub async fn flush(self: &Arc<Self>, db: &PgPool) -> Result<u64> {
        let batch = self.take();
        if batch.dropped > 0 {
            tracing::warn!(dropped = batch.dropped, "usage: per-address entries dropped at the cap");
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let (recorder, db) = (Arc::clone(self), db.clone());
        let write = tokio::spawn(async move {
            match write(&db, &batch).await {
                Ok(()) => Ok(batch.verifications()),
                Err(e) => {
                    recorder.restore(Batch { dropped: 0, ..batch });
                    Err(e)
                }
            }
        });
        write.await.map_err(|e| Error::Internal(format!("usage flush task: {e}")))?
    }
}
