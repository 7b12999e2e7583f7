//! The usage service: what verifications counted, read back per key; anomalies; and the loops that
//! flush counts, detect anomalies and enforce retention.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    anomalies::{self, Anomaly},
    detector,
    report::{self, Granularity, Usage as UsageReport},
    UsageRecorder,
};
use crate::{clock::Clock, config::Config, error::Result};

/// How often counts are flushed.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// After shutdown begins, counts keep being flushed until none arrived for this long (requests
/// still draining record after the shutdown signal), but no longer than [`SHUTDOWN_LIMIT`].
const SHUTDOWN_QUIET: Duration = Duration::from_millis(300);
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(8);
/// How often old minute buckets are rolled up and expired rows deleted.
const RETENTION_INTERVAL: Duration = Duration::from_secs(300);

/// Usage statistics and anomalies of API keys.
#[derive(Clone)]
pub struct Usage {
    pub(super) db: PgPool,
    /// Where reports and anomaly lists read: a read replica when one is configured.
    reads: PgPool,
    pub(super) clock: Clock,
    pub(super) config: Arc<Config>,
    recorder: Arc<UsageRecorder>,
}

/// What one anomaly page asks for (`GET /v1/admin/anomalies`).
#[derive(Debug, Default)]
pub struct AnomalyQuery<'a> {
    /// Detected at or after this time.
    pub since: Option<OffsetDateTime>,
    /// After this anomaly (the last `id` of the previous page).
    pub after: Option<Uuid>,
    /// Only this kind.
    pub kind: Option<&'a str>,
    /// Only this API key's (`GET /v1/keys/{id}/anomalies`).
    pub key: Option<Uuid>,
    /// Page size, 1 to 1 000.
    pub limit: i64,
}

impl Usage {
    /// A service flushing what `recorder` counts into `db`; reports and anomaly lists read `reads`
    /// (a read replica, or `db` itself).
    pub fn new(db: PgPool, reads: PgPool, clock: Clock, config: Arc<Config>, recorder: Arc<UsageRecorder>) -> Self {
        Self { db, reads, clock, config, recorder }
    }

    /// Usage of `key` between `from` (default a day before `to`) and `to` (default now), in
    /// `granularity` buckets, including what this instance counted but has not flushed yet.
    ///
    /// # Errors
    /// [`crate::error::Error::Invalid`] when `from` is after `to`.
    pub async fn report(
        &self,
        key: Uuid,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
        granularity: Granularity,
    ) -> Result<UsageReport> {
        if let Err(e) = self.recorder.flush(&self.db).await {
            tracing::warn!(error = %e, "usage flush before a usage read failed");
        }
        let to = to.unwrap_or_else(|| self.clock.now());
        let from = from.unwrap_or(to - time::Duration::DAY);
        report::usage(&self.reads, key, from, to, granularity).await
    }

    /// Detected anomalies, oldest first.
    pub async fn anomalies(&self, q: &AnomalyQuery<'_>) -> Result<Vec<Anomaly>> {
        anomalies::list(&self.reads, q.since, q.after, q.kind, q.key, q.limit).await
    }

    async fn flush_logged(&self) {
        if let Err(e) = self.recorder.flush(&self.db).await {
            tracing::warn!(error = %e, "usage flush failed; counts kept for the next attempt");
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] until shutdown, then once more for what was counted
    /// meanwhile and for what requests still draining count after the signal.
    pub async fn run_flusher(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.flush_logged().await,
            }
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_LIMIT;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            if self.recorder.has_pending() {
                self.flush_logged().await;
                quiet_since = tokio::time::Instant::now();
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || (now - quiet_since >= SHUTDOWN_QUIET && !self.recorder.has_pending()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.recorder.take();
        if !left.is_empty() {
            tracing::error!(
                verifications = left.verifications(),
                "usage counts lost at shutdown: Postgres unavailable"
            );
        }
    }

    /// Runs the detector and compaction (every [`detector::INTERVAL`]) and retention (every 5 min)
    /// until shutdown.
    pub async fn run_detector(self, shutdown: CancellationToken) {
        let mut detect = tokio::time::interval(detector::INTERVAL);
        let mut spikes_done = None;
        let mut roll = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = detect.tick() => {
                    if let Err(e) = self.run_scheduled(&mut spikes_done).await {
                        tracing::warn!(error = %e, "anomaly detection failed");
                    }
                    if let Err(e) = self.compact().await {
                        tracing::warn!(error = %e, "usage compaction failed");
                    }
                }
                _ = roll.tick() => {
                    if let Err(e) = self.roll_up().await {
                        tracing::warn!(error = %e, "usage roll-up failed");
                    }
                }
            }
        }
    }
}
