//! Periodic housekeeping: purge expired refresh tokens and revoked-`jti` rows, prune in-memory
//! revocations that can no longer matter, and report the outbox backlog.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{error::Result, state::AppState};

/// Runs until shutdown.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut purge = tokio::time::interval(Duration::from_secs(300));
    let mut lag = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = purge.tick() => {
                if let Err(e) = purge_expired(&state).await {
                    tracing::warn!(error = %e, "purge failed");
                }
                state.revoked.prune(state.clock.unix());
            }
            _ = lag.tick() => {
                if let Ok((n, age)) = outbox_lag(&state).await {
                    crate::metrics::outbox_lag(n, age);
                }
            }
        }
    }
}

/// Deletes refresh tokens and families past every lifetime, and revoked `jti`s past their expiry.
pub async fn purge_expired(state: &AppState) -> Result<(u64, u64)> {
    let now = state.clock.now();
    // Keep dead rows a day, so replays of recently spent tokens are still recognised as reuse.
    let horizon = now - time::Duration::days(1);
    let families = sqlx::query("DELETE FROM refresh_families WHERE absolute_expires_at < $1")
        .bind(horizon)
        .execute(&state.db)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(horizon).execute(&state.db).await?;
    crate::users::login::purge(&state.db, &state.config, now).await?;
    let jtis = sqlx::query("DELETE FROM revoked_jtis WHERE expires_at < $1")
        .bind(now)
        .execute(&state.db)
        .await?
        .rows_affected();
    Ok((families, jtis))
}

async fn outbox_lag(state: &AppState) -> Result<(i64, f64)> {
    let (n, age): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM (now() - min(created_at)))::float8 FROM revocation_events WHERE published_at IS NULL",
    )
    .fetch_one(&state.db)
    .await?;
    Ok((n, age.unwrap_or(0.0)))
}
