//! A key's usage as the API shows it: buckets by minute, hour or day, totals, distinct source addresses
//! and the last use. A bucket may be stored as several rows (one per flush of each instance until
//! compaction merges them): every figure here adds rows up. Minute rows older than the minute retention have been rolled up into hour
//! rows; those appear as they are (one bucket at the start of their hour) and always count in the totals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One bucket per minute.
    #[default]
    Minute,
    /// One bucket per hour.
    Hour,
    /// One bucket per UTC day.
    Day,
}

impl Granularity {
    fn floor(self, t: OffsetDateTime) -> OffsetDateTime {
        let t = t.replace_nanosecond(0).and_then(|t| t.replace_second(0)).unwrap_or(t);
        match self {
            Self::Minute => t,
            Self::Hour => t.replace_minute(0).unwrap_or(t),
            Self::Day => t.replace_minute(0).and_then(|t| t.replace_hour(0)).unwrap_or(t),
        }
    }
}

/// Counts in one bucket (or in total).
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
#[schema(example = json!({"valid": 2244, "denied": {"INSUFFICIENT_SCOPE": 2, "IP_NOT_ALLOWED": 3}}))]
pub struct Tally {
    /// Valid verifications.
    pub valid: i64,
    /// Refusals by code.
    pub denied: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, valid: i64, denied: &Value) {
        self.valid += valid;
        if let Value::Object(m) = denied {
            for (code, n) in m {
                *self.denied.entry(code.clone()).or_default() += n.as_i64().unwrap_or(0);
            }
        }
    }
}

/// One bucket.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"start": "2026-11-24T09:00:00Z", "valid": 1280, "denied": {"IP_NOT_ALLOWED": 3}}))]
pub struct Bucket {
    /// Start of the bucket.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Valid verifications.
    pub valid: i64,
    /// Refusals by code.
    pub denied: BTreeMap<String, i64>,
}

/// `GET /v1/keys/{id}/usage` response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "buckets": [
        {"start": "2026-11-24T09:00:00Z", "valid": 1280, "denied": {"IP_NOT_ALLOWED": 3}},
        {"start": "2026-11-24T10:00:00Z", "valid": 964, "denied": {"INSUFFICIENT_SCOPE": 2}}
    ],
    "totals": {"valid": 2244, "denied": {"INSUFFICIENT_SCOPE": 2, "IP_NOT_ALLOWED": 3}},
    "distinct_ips": 4,
    "last_used_at": "2026-11-24T10:41:07Z",
    "last_used_ip": "203.0.113.7"
}))]
pub struct Usage {
    /// Buckets with any use, oldest first.
    pub buckets: Vec<Bucket>,
    /// Sum of the buckets.
    pub totals: Tally,
    /// Distinct source addresses that used the key within the range, over the same buckets as
    /// `totals` (minutes, and hours once minutes are rolled up), added up across instances.
    pub distinct_ips: i64,
    /// Last verification of the key (any result, any time).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Its source address.
    pub last_used_ip: Option<String>,
}

/// Usage of `key` between `from` and `to` (inclusive), in `granularity` buckets.
pub async fn usage(
    db: &PgPool,
    key: Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
    granularity: Granularity,
) -> Result<Usage> {
    if from > to {
        return Err(Error::invalid("from: must not be after to"));
    }
    let from = granularity.floor(from);
    let rows: Vec<(OffsetDateTime, i64, Value)> = sqlx::query_as(
        "SELECT start, valid, denied FROM key_usage WHERE key_id = $1 AND start >= $2 AND start <= $3 ORDER BY start",
    )
    .bind(key)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let mut by_start: BTreeMap<OffsetDateTime, Tally> = BTreeMap::new();
    let mut totals = Tally::default();
    for (start, valid, denied) in rows {
        by_start.entry(granularity.floor(start)).or_default().add(valid, &denied);
        totals.add(valid, &denied);
    }
    let buckets = by_start.into_iter().map(|(start, t)| Bucket { start, valid: t.valid, denied: t.denied }).collect();
    let distinct_ips: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT ip) FROM key_usage u CROSS JOIN LATERAL unnest(u.ips) AS ip
         WHERE u.key_id = $1 AND u.start >= $2 AND u.start <= $3",
    )
    .bind(key)
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    let (last_used_at, last_used_ip): (Option<OffsetDateTime>, Option<String>) = sqlx::query_as(
        "SELECT lu.at, lu.ip FROM api_keys k, key_last_use(k.id, k.last_used_at, k.last_used_ip) lu WHERE k.id = $1",
    )
    .bind(key)
    .fetch_optional(db)
    .await?
    .unwrap_or((None, None));
    Ok(Usage { buckets, totals, distinct_ips, last_used_at, last_used_ip })
}
