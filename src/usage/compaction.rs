//! Merging usage rows. Flushes append (one row per key and minute per flush of each instance), so a
//! key in steady use has a row every couple of seconds; the leader merges each closed minute's rows
//! into one per key, and the roll-up merges old minutes into hours the same way. Counts add up,
//! addresses are united and the latest use kept, so a merge never changes what a report shows.

use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};

use super::{detector::minute_floor, Usage};
use crate::error::Result;

/// How long after a minute ends its rows are merged: flushes run every couple of seconds, and an
/// instance's clock may be a little behind. A flush that arrives later still counts (readers add
/// rows up); it is just not merged.
const SETTLE: Duration = Duration::minutes(2);
/// The most history a first run (or one after a long pause) merges at once.
const MAX_SPAN: Duration = Duration::HOUR;
/// A key's minute is merged once it has this many rows. Below it, merging would rewrite most rows
/// of traffic spread over many keys (a key seen twice in a minute) to save a reader adding up two
/// or three; a key in steady use has a row per flush, some thirty a minute per instance.
const MERGE_FROM_ROWS: i64 = 4;

/// `DELETE`s the `key_usage` rows `selection` picks and inserts them back as one row per key and
/// `date_trunc(unit, start)`, in bucket `bucket`. Returns the statement; `selection` may use binds.
pub(super) fn merge_sql(selection: &str, unit: &str, bucket: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM key_usage WHERE {selection} RETURNING key_id, start, valid, denied, ips, last_at, last_ip),
              g AS (SELECT key_id, date_trunc('{unit}', start) AS s, valid, denied, ips, last_at, last_ip FROM gone),
              counts AS (SELECT key_id, s, sum(valid)::bigint AS v FROM g GROUP BY 1, 2),
              refusals AS (
                SELECT key_id, s, jsonb_object_agg(k, t) AS d FROM (
                    SELECT g.key_id, g.s, e.k, sum(e.v::bigint) AS t FROM g, jsonb_each_text(g.denied) AS e(k, v) GROUP BY 1, 2, 3) x
                GROUP BY 1, 2),
              addresses AS (SELECT key_id, s, array_agg(DISTINCT ip ORDER BY ip) AS ips FROM g, unnest(g.ips) AS ip GROUP BY 1, 2),
              latest AS (SELECT DISTINCT ON (key_id, s) key_id, s, last_at, last_ip FROM g
                         WHERE last_at IS NOT NULL ORDER BY key_id, s, last_at DESC)
         INSERT INTO key_usage (key_id, bucket, start, valid, denied, ips, last_at, last_ip)
         SELECT c.key_id, '{bucket}', c.s, c.v, coalesce(r.d, '{{}}'::jsonb), coalesce(a.ips, '{{}}'::text[]), l.last_at, l.last_ip
         FROM counts c LEFT JOIN refusals r USING (key_id, s) LEFT JOIN addresses a USING (key_id, s)
              LEFT JOIN latest l USING (key_id, s)"
    )
}

/// Merges, per key, the minute rows with `start` in `[$1, $2)` of keys that have at least
/// [`MERGE_FROM_ROWS`] rows in a minute.
fn compact_sql() -> String {
    merge_sql(
        &format!(
            "bucket = 'minute' AND start >= $1 AND start < $2 AND (key_id, start) IN (
                 SELECT key_id, start FROM key_usage WHERE bucket = 'minute' AND start >= $1 AND start < $2
                 GROUP BY 1, 2 HAVING count(*) >= {MERGE_FROM_ROWS})"
        ),
        "minute",
        "minute",
    )
}

/// Merges the minutes in `[from, to)`; returns how many merged rows were written.
pub(super) async fn compact_minutes(conn: &mut PgConnection, from: OffsetDateTime, to: OffsetDateTime) -> Result<u64> {
    Ok(sqlx::query(&compact_sql()).bind(from).bind(to).execute(&mut *conn).await?.rows_affected())
}

impl Usage {
    /// Merges the rows of every minute closed since the last run (on one instance at a time, under
    /// the detector's lock; `None` if another instance holds it) and moves the mark. Returns how
    /// many merged rows were written.
    pub async fn compact(&self) -> Result<Option<u64>> {
        let Some(mut tx) = self.lead().await? else {
            return Ok(None);
        };
        let to = minute_floor(self.clock.now() - SETTLE);
        let through: Option<OffsetDateTime> =
            sqlx::query_scalar("SELECT through FROM usage_compaction").fetch_optional(&mut *tx).await?;
        let from = through.unwrap_or(to - MAX_SPAN).max(to - MAX_SPAN);
        if from >= to {
            return Ok(Some(0));
        }
        let merged = compact_minutes(&mut tx, from, to).await?;
        sqlx::query(
            "INSERT INTO usage_compaction (through) VALUES ($1) ON CONFLICT (singleton) DO UPDATE SET through = EXCLUDED.through",
        )
        .bind(to)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(merged))
    }
}
