//! Periodic housekeeping: purge expired refresh tokens and revoked-`jti` rows, prune in-memory
//! revocations that can no longer matter, and report the outbox backlog.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, config::Config, error::Result, revocation::RevokedSet};

/// Housekeeping of tokens and the revocation log.
#[derive(Clone)]
pub struct Housekeeping {
    db: PgPool,
    clock: Clock,
    config: Arc<Config>,
    revoked: Arc<RevokedSet>,
}

impl Housekeeping {
    /// Housekeeping of `db`, pruning `revoked` as entries expire.
    pub fn new(db: PgPool, clock: Clock, config: Arc<Config>, revoked: Arc<RevokedSet>) -> Self {
        Self { db, clock, config, revoked }
    }
}

impl Housekeeping {
    /// Runs until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut purge = tokio::time::interval(Duration::from_secs(300));
        let mut lag = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = purge.tick() => {
                    if let Err(e) = self.purge_expired().await {
                        tracing::warn!(error = %e, "purge failed");
                    }
                    self.revoked.prune(self.clock.unix());
                }
                _ = lag.tick() => {
                    if let Ok((n, age)) = self.outbox_lag().await {
                        crate::metrics::outbox_lag(n, age);
                    }
                }
            }
        }
    }

    /// Deletes refresh tokens and families past every lifetime, expired sign-in and portal sessions,
    /// and revoked `jti`s past their expiry.
    pub async fn purge_expired(&self) -> Result<(u64, u64)> {
        let now = self.clock.now();
        // Keep dead rows a day, so replays of recently spent tokens are still recognised as reuse.
        let horizon = now - time::Duration::days(1);
        let families = sqlx::query("DELETE FROM refresh_families WHERE absolute_expires_at < $1")
            .bind(horizon)
            .execute(&self.db)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(horizon).execute(&self.db).await?;
        crate::users::login::purge(&self.db, &self.config, now).await?;
        crate::signin::session::purge(&self.db, now).await?;
        crate::portal::purge(&self.db, now).await?;
        let jtis = sqlx::query("DELETE FROM revoked_jtis WHERE expires_at < $1")
            .bind(now)
            .execute(&self.db)
            .await?
            .rows_affected();
        Ok((families, jtis))
    }

    async fn outbox_lag(&self) -> Result<(i64, f64)> {
        let (n, age): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM (now() - min(created_at)))::float8 FROM revocation_events WHERE published_at IS NULL",
    )
    .fetch_one(&self.db)
    .await?;
        Ok((n, age.unwrap_or(0.0)))
    }
}
