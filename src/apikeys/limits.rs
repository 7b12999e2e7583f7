//! What a key may use: a rate limit and a credit balance with an optional refill, shared by a key
//! and its rotation successors (its *limit group*). The values as shown and taken, their bounds
//! (each refused with a detail naming the field), and the stored row with the balance it holds at
//! a given time. Counting happens elsewhere: rate limits in [`crate::ratelimit`], credits in
//! [`super::credits`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    error::{Error, Result},
    ratelimit::{Rule, MAX_LIMIT, MAX_WINDOW},
};

/// Largest credit balance, refill amount and verification cost.
pub const MAX_CREDITS: i64 = 1_000_000_000_000;
/// Longest refill interval, in seconds (365 days).
pub const MAX_REFILL_INTERVAL: i64 = 31_536_000;

/// `rate_limit`: at most `limit` verifications in any `window` seconds, across every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"limit": 100, "window": 60}))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Verifications admitted per window, 1 to 1 000 000.
    #[schema(minimum = 1, maximum = 1000000)]
    pub limit: i64,
    /// The window, 1 to 86 400 seconds.
    #[schema(minimum = 1, maximum = 86400)]
    pub window: i64,
}

/// `refill`: the balance is set back to `amount` every `interval` seconds from when this was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"amount": 1000, "interval": 86400}))]
#[serde(deny_unknown_fields)]
pub struct Refill {
    /// The balance after each refill, 1 to 10^12.
    #[schema(minimum = 1, maximum = 1000000000000_i64)]
    pub amount: i64,
    /// Seconds between refills, 1 to 31 536 000.
    #[schema(minimum = 1, maximum = 31536000)]
    pub interval: i64,
}

/// A change to a group's limits: for each, `None` leaves it, `Some(None)` removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsChange {
    /// The rate limit.
    pub rate_limit: Option<Option<RateLimit>>,
    /// The balance.
    pub credits: Option<Option<i64>>,
    /// The refill.
    pub refill: Option<Option<Refill>>,
}

impl LimitsChange {
    /// Checks every value, and that a refill has a balance to refill: removing `credits` removes
    /// the refill too, and a refill set on a key without credits starts it at `amount`.
    pub fn checked(mut self) -> Result<Self> {
        if let Some(Some(r)) = self.rate_limit {
            check("rate_limit.limit", r.limit, 1, MAX_LIMIT)?;
            check("rate_limit.window", r.window, 1, MAX_WINDOW)?;
        }
        if let Some(Some(c)) = self.credits {
            check("credits", c, 0, MAX_CREDITS)?;
        }
        match self.refill {
            Some(Some(r)) => {
                check("refill.amount", r.amount, 1, MAX_CREDITS)?;
                check("refill.interval", r.interval, 1, MAX_REFILL_INTERVAL)?;
                if self.credits == Some(None) {
                    return Err(Error::invalid("refill: needs credits; it cannot be set while credits is removed"));
                }
            }
            None if self.credits == Some(None) => self.refill = Some(None),
            _ => {}
        }
        Ok(self)
    }

    /// Whether it changes anything.
    pub fn is_empty(&self) -> bool {
        self.rate_limit.is_none() && self.credits.is_none() && self.refill.is_none()
    }
}

/// Refuses `value` outside `min..=max`, naming `field`.
pub fn check(field: &str, value: i64, min: i64, max: i64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(format!("{field}: must be {min} to {max}, got {value}")))
    }
}

/// A group's row of `api_key_limits`, as read with a key (all `None` when it has none).
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct LimitsRow {
    /// Rate limit.
    pub rate_limit: Option<i32>,
    /// Its window, seconds.
    pub rate_window: Option<i32>,
    /// Balance, as last written.
    pub credits: Option<i64>,
    /// Refill amount.
    pub refill_amount: Option<i64>,
    /// Refill interval, seconds.
    pub refill_interval: Option<i64>,
    /// When the refill was set.
    pub refill_from: Option<OffsetDateTime>,
    /// Refills applied so far (`None` when the group has no row).
    pub refilled_periods: Option<i64>,
}

impl LimitsRow {
    /// The rate limit as shown.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        Some(RateLimit { limit: i64::from(self.rate_limit?), window: i64::from(self.rate_window?) })
    }

    /// The rate limit as the limiter takes it.
    pub fn rule(&self) -> Option<Rule> {
        let (limit, window) = (self.rate_limit?, self.rate_window?);
        Some(Rule { limit: u32::try_from(limit).ok()?, window_secs: u32::try_from(window).ok()? })
    }

    /// The refill as shown.
    pub fn refill(&self) -> Option<Refill> {
        Some(Refill { amount: self.refill_amount?, interval: self.refill_interval? })
    }

    /// The balance at `now`: the stored one, or `refill_amount` once a refill is due that was not
    /// applied yet (the same rule as the spending UPDATE in [`super::credits`]).
    pub fn balance_at(&self, now: OffsetDateTime) -> Option<i64> {
        let credits = self.credits?;
        let (Some(amount), Some(interval), Some(from)) = (self.refill_amount, self.refill_interval, self.refill_from)
        else {
            return Some(credits);
        };
        let elapsed = (now - from).whole_seconds();
        let due = elapsed >= 0 && elapsed / interval.max(1) > self.refilled_periods.unwrap_or(0);
        Some(if due { amount } else { credits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_refused_naming_its_field() {
        let rl =
            |limit, window| LimitsChange { rate_limit: Some(Some(RateLimit { limit, window })), ..Default::default() };
        for (c, field) in [
            (rl(0, 10), "rate_limit.limit"),
            (rl(-1, 10), "rate_limit.limit"),
            (rl(1_000_001, 10), "rate_limit.limit"),
            (rl(5, 0), "rate_limit.window"),
            (rl(5, 86_401), "rate_limit.window"),
            (LimitsChange { credits: Some(Some(-1)), ..Default::default() }, "credits"),
            (LimitsChange { credits: Some(Some(MAX_CREDITS + 1)), ..Default::default() }, "credits"),
            (
                LimitsChange { refill: Some(Some(Refill { amount: 0, interval: 60 })), ..Default::default() },
                "refill.amount",
            ),
            (
                LimitsChange { refill: Some(Some(Refill { amount: 5, interval: 0 })), ..Default::default() },
                "refill.interval",
            ),
            (
                LimitsChange {
                    credits: Some(None),
                    refill: Some(Some(Refill { amount: 5, interval: 9 })),
                    ..Default::default()
                },
                "refill",
            ),
        ] {
            let err = c.checked().unwrap_err().to_string();
            assert!(err.starts_with(&format!("{field}: ")), "{err}");
        }
        assert!(rl(1_000_000, 86_400).checked().is_ok());
        let cleared = LimitsChange { credits: Some(None), ..Default::default() }.checked().unwrap();
        assert_eq!(cleared.refill, Some(None), "removing credits removes the refill");
    }

    #[test]
    fn the_balance_is_the_refill_amount_once_a_period_passed_unapplied() {
        let from = time::macros::datetime!(2026-01-01 0:00 UTC);
        let row = LimitsRow {
            credits: Some(3),
            refill_amount: Some(10),
            refill_interval: Some(60),
            refill_from: Some(from),
            refilled_periods: Some(0),
            ..Default::default()
        };
        assert_eq!(row.balance_at(from + time::Duration::seconds(59)), Some(3));
        assert_eq!(row.balance_at(from + time::Duration::seconds(60)), Some(10));
        let applied = LimitsRow { refilled_periods: Some(1), ..row.clone() };
        assert_eq!(applied.balance_at(from + time::Duration::seconds(119)), Some(3));
        assert_eq!(LimitsRow::default().balance_at(from), None);
    }
}
