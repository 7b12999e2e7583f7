//! Credits, held in Postgres only. A verification's cost is taken by one conditional UPDATE that
//! applies a due refill and subtracts in the same statement, and only if the balance covers it, so
//! concurrent verifications on any number of instances can neither overdraw it nor lose a spend:
//! Postgres re-checks the condition against the row as the previous spender left it. Redis never
//! holds a balance, so a Redis restart (or an instance restart) cannot change one; see
//! docs/rate-limits-and-credits.md.

use std::sync::LazyLock;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::limits::LimitsChange;
use crate::error::Result;

/// Refill periods elapsed at `$2` (the service's clock) since the refill was set.
const PERIOD: &str = "floor(extract(epoch FROM ($2::timestamptz - refill_from)) / refill_interval)::bigint";

/// The balance at `$2`: `refill_amount` once a period is due that was not applied yet.
static BALANCE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "(CASE WHEN refill_interval IS NOT NULL AND {PERIOD} > refilled_periods THEN refill_amount ELSE credits END)"
    )
});

/// Takes `$3` from group `$1`'s balance at `$2`, applying a due refill first; no row when the group
/// has no balance or it does not cover the cost. Every expression reads the row itself (no
/// sub-select), so a concurrent spender's update is seen when Postgres re-checks the row.
static SPEND: LazyLock<String> = LazyLock::new(|| {
    let balance = &*BALANCE;
    format!(
        "UPDATE api_key_limits SET credits = {balance} - $3,
             refilled_periods = CASE WHEN refill_interval IS NULL THEN refilled_periods
                                     ELSE GREATEST(refilled_periods, {PERIOD}) END
         WHERE group_id = $1 AND credits IS NOT NULL AND {balance} >= $3
         RETURNING credits"
    )
});

/// What taking a cost did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Taken; the balance left.
    Charged(i64),
    /// The balance does not cover the cost; nothing was taken.
    Exceeded,
    /// The group has no balance (it was removed after the key was cached): nothing to take.
    Unmetered,
}

/// Takes `cost` (≥ 0; 0 takes nothing but still applies a due refill) from `group`'s balance at `now`.
pub async fn spend(db: &PgPool, group: Uuid, cost: i64, now: OffsetDateTime) -> Result<Spend> {
    let left: Option<i64> = sqlx::query_scalar(&SPEND).bind(group).bind(now).bind(cost).fetch_optional(db).await?;
    if let Some(left) = left {
        return Ok(Spend::Charged(left));
    }
    // Rare: refused, or credits were removed since this instance cached the key.
    let metered: Option<bool> =
        sqlx::query_scalar("SELECT credits IS NOT NULL FROM api_key_limits WHERE group_id = $1")
            .bind(group)
            .fetch_optional(db)
            .await?;
    Ok(if metered == Some(true) { Spend::Exceeded } else { Spend::Unmetered })
}

/// Applies `change` to `group`'s limits at `now`, in the caller's transaction. Only the columns a
/// change names are written, so a PATCH of the rate limit never rewrites a balance that
/// verifications are spending meanwhile. Setting a refill restarts its schedule at `now`; a
/// refill set on a group without a balance starts it at the refill's amount.
pub async fn set_limits(
    conn: &mut PgConnection,
    group: Uuid,
    change: &LimitsChange,
    now: OffsetDateTime,
) -> Result<()> {
    if change.is_empty() {
        return Ok(());
    }
    let rate = change.rate_limit.flatten();
    let refill = change.refill.flatten();
    sqlx::query(
        "INSERT INTO api_key_limits AS l (group_id, rate_limit, rate_window, credits, refill_amount, refill_interval,
                                          refill_from, refilled_periods)
         VALUES ($1, $3, $4, COALESCE($6, $8), $8, $9, CASE WHEN $8 IS NOT NULL THEN $10::timestamptz END, 0)
         ON CONFLICT (group_id) DO UPDATE SET
             rate_limit = CASE WHEN $2 THEN $3 ELSE l.rate_limit END,
             rate_window = CASE WHEN $2 THEN $4 ELSE l.rate_window END,
             credits = CASE WHEN $5 THEN $6 ELSE COALESCE(l.credits, $8) END,
             refill_amount = CASE WHEN $7 THEN $8 ELSE l.refill_amount END,
             refill_interval = CASE WHEN $7 THEN $9 ELSE l.refill_interval END,
             refill_from = CASE WHEN $7 THEN (CASE WHEN $8 IS NOT NULL THEN $10::timestamptz END) ELSE l.refill_from END,
             refilled_periods = CASE WHEN $7 THEN 0 ELSE l.refilled_periods END",
    )
    .bind(group)
    .bind(change.rate_limit.is_some())
    .bind(rate.and_then(|r| i32::try_from(r.limit).ok()))
    .bind(rate.and_then(|r| i32::try_from(r.window).ok()))
    .bind(change.credits.is_some())
    .bind(change.credits.flatten())
    .bind(change.refill.is_some())
    .bind(refill.map(|r| r.amount))
    .bind(refill.map(|r| r.interval))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
