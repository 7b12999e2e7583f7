//! The dispatcher. Every instance runs it; each pass claims due deliveries with
//! `FOR UPDATE SKIP LOCKED` and keeps them locked while it sends them, so two instances never send
//! the same delivery at once (in practice: exactly once), and a delivery whose instance dies
//! mid-send is unlocked by Postgres when its connection drops, to be sent by another.
//!
//! Each attempt is signed afresh (the timestamp is the attempt's) with the same `webhook-id` and
//! body. A 2xx is delivered; `410 Gone` disables the endpoint; anything else (another status, a
//! redirect — never followed —, no answer within 10 s) is retried after `Retry-After` when the
//! receiver gives one, else after the next step of [`BACKOFF`], until 24 h have passed.

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{endpoints::message_id, events::CHANNEL, sign::EndpointSecret, ssrf, Webhooks};
use crate::{db::listen::Wakeups, error::Result};

/// Delays between attempts, seconds: the first retry within 10 s, then longer; the last repeats.
pub const BACKOFF: [i64; 9] = [5, 30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800];
/// How long a delivery is retried before it is given up.
pub const RETRY_FOR: time::Duration = time::Duration::HOUR.saturating_mul(24);
/// Bytes of a response body kept in the log.
const EXCERPT: usize = 256;
/// Deliveries claimed (and sent concurrently) per pass.
const BATCH: i64 = 16;
const POLL: Duration = Duration::from_secs(1);

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    endpoint_id: Uuid,
    event_type: String,
    body: String,
    attempts: i32,
    created_at: OffsetDateTime,
    url: String,
    secret_sealed: Vec<u8>,
}

/// What one attempt got.
#[derive(Debug, Default)]
struct Outcome {
    code: Option<u16>,
    retry_after: Option<i64>,
    excerpt: Option<String>,
    error: Option<String>,
}

impl Webhooks {
    /// One pass: claims up to [`BATCH`] due deliveries, sends them, records each attempt, and
    /// commits. Returns how many were attempted.
    pub async fn dispatch_once(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let claimed: Vec<Claimed> = sqlx::query_as(
            "SELECT d.id, d.endpoint_id, d.event_type, d.body, d.attempts, d.created_at, e.url, e.secret_sealed
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled
             ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let outcomes = futures::future::join_all(claimed.iter().map(|c| self.attempt(c))).await;
        let at = self.clock.now();
        for (c, outcome) in claimed.iter().zip(outcomes) {
            record(&mut tx, c, &outcome, at).await?;
        }
        tx.commit().await?;
        Ok(claimed.len())
    }

    async fn attempt(&self, c: &Claimed) -> Outcome {
        let Some(secret) = self
            .sealer
            .open(c.endpoint_id.as_bytes(), &c.secret_sealed)
            .map(|o| o.plaintext)
            .and_then(|b| EndpointSecret::from_bytes(&b))
        else {
            return Outcome {
                error: Some("the endpoint secret cannot be unsealed with this master key".into()),
                ..Default::default()
            };
        };
        // Checked again at send time: the address written in the URL (DNS answers are checked by
        // the client's resolver).
        if let Err(e) = ssrf::check_url(&c.url, self.config.webhooks.allow_private) {
            return Outcome { error: Some(e.to_string()), ..Default::default() };
        }
        let msg_id = message_id(c.id);
        let ts = self.clock.unix();
        let signature = secret.sign(&msg_id, ts, c.body.as_bytes());
        let sent = self
            .client
            .post(&c.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(c.body.clone())
            .send()
            .await;
        match sent {
            Err(e) => {
                let why = if e.is_timeout() { "no answer within 10 s".to_owned() } else { format!("{e}") };
                Outcome { error: Some(why), ..Default::default() }
            }
            Ok(mut res) => {
                let code = res.status().as_u16();
                let retry_after = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, self.clock.now()));
                let mut excerpt = Vec::new();
                while excerpt.len() < EXCERPT {
                    match tokio::time::timeout(Duration::from_secs(2), res.chunk()).await {
                        Ok(Ok(Some(chunk))) => {
                            excerpt.extend_from_slice(&chunk[..chunk.len().min(EXCERPT - excerpt.len())])
                        }
                        _ => break,
                    }
                }
                // Postgres text cannot hold U+0000: a receiver's bytes must not fail the record.
                let excerpt = (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).replace('\0', ""));
                Outcome { code: Some(code), retry_after, excerpt, error: None }
            }
        }
    }

    /// Runs until shutdown: a pass whenever deliveries are written (LISTEN), and every second.
    /// Stopping mid-send drops the claim uncommitted: the deliveries stay pending for another.
    pub async fn run_dispatcher(self, shutdown: CancellationToken) {
        let mut wakeups = Wakeups::new(self.db.clone(), &[CHANNEL]).await;
        let mut last_gauges = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            let started = tokio::time::Instant::now();
            let pass = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.dispatch_once() => r,
            };
            match pass {
                Ok(n) if n > 0 => {
                    tracing::debug!(attempted = n, ms = started.elapsed().as_millis(), "webhook dispatch pass");
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook dispatch pass failed"),
            }
            if last_gauges.elapsed() >= Duration::from_secs(5) {
                last_gauges = tokio::time::Instant::now();
                if let Err(e) = self.backlog_gauges().await {
                    tracing::debug!(error = %e, "webhook backlog gauges");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = wakeups.wait(POLL) => {}
            }
        }
    }

    async fn backlog_gauges(&self) -> Result<()> {
        let (pending, oldest): (i64, Option<OffsetDateTime>) = sqlx::query_as(
            "SELECT count(*), min(d.created_at) FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.status = 'pending' AND e.enabled",
        )
        .fetch_one(&self.db)
        .await?;
        let age = oldest.map_or(0.0, |o| (self.clock.now() - o).as_seconds_f64().max(0.0));
        crate::metrics::webhook_backlog(pending, age);
        Ok(())
    }
}

/// `Retry-After` (RFC 9110 §10.2.3) as seconds from `now`: delay-seconds or an HTTP date,
/// clamped to 1 s – 24 h.
fn retry_after(v: &str, now: OffsetDateTime) -> Option<i64> {
    let v = v.trim();
    let secs = match v.parse::<i64>() {
        Ok(n) => n,
        Err(_) => {
            let fmt = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            let at = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
            (at - now).whole_seconds()
        }
    };
    Some(secs.clamp(1, 86_400))
}

/// The delay before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff(attempts: i32) -> i64 {
    let i = usize::try_from(attempts.max(1) - 1).unwrap_or(0).min(BACKOFF.len() - 1);
    BACKOFF[i]
}

async fn record(conn: &mut PgConnection, c: &Claimed, o: &Outcome, at: OffsetDateTime) -> Result<()> {
    let attempt = c.attempts + 1;
    let code = o.code.map(i32::from);
    let (status, outcome) = match o.code {
        Some(200..=299) => ("delivered", "delivered"),
        Some(410) => ("failed", "gone"),
        _ if at >= c.created_at + RETRY_FOR => ("failed", "failed"),
        _ => ("pending", "failed"),
    };
    let delay = o.retry_after.unwrap_or_else(|| backoff(attempt));
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, attempts = $3, last_response_code = $4,
             next_attempt_at = CASE WHEN $2 = 'pending' THEN $5 ELSE next_attempt_at END WHERE id = $1",
    )
    .bind(c.id)
    .bind(status)
    .bind(attempt)
    .bind(code)
    .bind(at + time::Duration::seconds(delay))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, event_type, attempt, status, response_code, excerpt, error, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(c.id)
    .bind(c.endpoint_id)
    .bind(&c.event_type)
    .bind(attempt)
    .bind(status)
    .bind(code)
    .bind(&o.excerpt)
    .bind(o.error.as_deref().map(|e| e.replace('\0', "")))
    .bind(at)
    .execute(&mut *conn)
    .await?;
    if outcome == "gone" {
        sqlx::query(
            "UPDATE webhook_endpoints SET enabled = false, updated_at = $2,
                 disabled_reason = 'the receiver answered 410 Gone' WHERE id = $1",
        )
        .bind(c.endpoint_id)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        tracing::warn!(endpoint = %c.endpoint_id, "webhook endpoint answered 410 Gone: disabled");
    } else if outcome != "delivered" {
        tracing::info!(endpoint = %c.endpoint_id, attempt, code, error = o.error.as_deref(), "webhook attempt failed");
    }
    crate::metrics::webhook_delivery(outcome, status == "failed" && outcome == "failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_within_ten_seconds_and_last_at_least_a_day() {
        assert!(backoff(1) <= 10);
        let total: i64 = (1..=12).map(backoff).sum();
        assert!(total >= 86_400, "{total}");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = time::macros::datetime!(2026-11-30 10:00:00 UTC);
        assert_eq!(retry_after("7", now), Some(7));
        assert_eq!(retry_after("0", now), Some(1));
        assert_eq!(retry_after("Mon, 30 Nov 2026 10:01:00 GMT", now), Some(60));
        assert_eq!(retry_after("soon", now), None);
    }
}
