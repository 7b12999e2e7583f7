//! Exact rate limits across instances: at most `limit` admissions in any interval of `window`
//! seconds, counted once for every instance together.
//!
//! Each limited id has a sliding log in Redis: a sorted set `{TESSERA_REDIS_PREFIX}:rl:{id}` of the
//! instants (Redis's own clock, microseconds) of its admitted uses. One Lua script per decision
//! drops the entries older than the window, counts the rest and adds the new uses there is room
//! for, atomically, so concurrent instances can never both take the last slot, and there is no
//! window boundary to straddle (a fixed-window counter admits up to twice the limit across one).
//! Uses of one id that arrive on an instance while its call is in flight wait and go together in
//! the next call ([`shared`]): a hot key costs one Redis round trip per round trip, not per use. The key
//! expires with the window after its last admission. Redis's clock alone orders the entries, so
//! the instances' clocks need not agree. A log holds at most `limit` entries, about 120 bytes each
//! in Redis 7.
//!
//! When Redis is unset, or does not answer within [`REDIS_TIMEOUT`], each instance counts on its
//! own ([`local`]) and tries Redis again after [`REDIS_BACKOFF`]; `/readyz` and the gauge
//! `api_key_rate_limits_shared` say which mode an instance is in. Nothing here ever fails a
//! request: a limiter that cannot count shared counts locally.

pub mod local;
mod shared;

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use uuid::Uuid;

use local::LocalLimiter;
use shared::Shared;

/// Largest `limit`.
pub const MAX_LIMIT: i64 = 1_000_000;
/// Longest window, in seconds (one day).
pub const MAX_WINDOW: i64 = 86_400;
/// Longest wait for Redis on a request path before counting locally.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// After a Redis failure, count locally this long before trying Redis again.
pub const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// A limit: `limit` uses in any `window_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Uses admitted per window, 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// The window, 1 to [`MAX_WINDOW`] seconds.
    pub window_secs: u32,
}

impl Rule {
    fn window(self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs))
    }
}

/// What one admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether this use was admitted (and counted).
    pub admitted: bool,
    /// The rule's limit.
    pub limit: u32,
    /// Uses still admissible in the window, after this one.
    pub remaining: u32,
    /// When the next slot frees (wall-clock time).
    pub reset: OffsetDateTime,
    /// Whole seconds until then, at least 1.
    pub retry_after: u64,
}

impl Decision {
    pub(crate) fn new(admitted: bool, rule: Rule, entries: usize, wait: Duration) -> Self {
        let remaining = (rule.limit as usize).saturating_sub(entries);
        Self {
            admitted,
            limit: rule.limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: whole_second_after(OffsetDateTime::now_utc() + wait),
            retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
        }
    }
}

/// `t`, rounded up to a whole second (so a client waiting until then never comes too early).
fn whole_second_after(t: OffsetDateTime) -> OffsetDateTime {
    if t.nanosecond() == 0 {
        return t;
    }
    t.replace_nanosecond(0).map_or(t, |s| s + time::Duration::SECOND)
}

/// Where an instance counts right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In Redis, across every instance.
    Shared,
    /// On this instance alone (Redis unset or unreachable).
    PerInstance,
}

impl Mode {
    /// The name `/readyz` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::PerInstance => "per_instance",
        }
    }
}

/// Sliding-window limits, shared through Redis when it answers.
pub struct RateLimiter {
    redis: Option<Arc<Shared>>,
    local: LocalLimiter,
}

impl RateLimiter {
    /// Limits shared through Redis at `redis_url` (keys under `prefix`), or per instance without one.
    pub fn new(redis_url: Option<&str>, prefix: &str) -> Result<Self, redis::RedisError> {
        let redis = match redis_url {
            Some(url) => Some(Arc::new(Shared::open(url, prefix)?)),
            None => None,
        };
        crate::metrics::rate_limits_shared(redis.is_some());
        Ok(Self { redis, local: LocalLimiter::default() })
    }

    /// Admits one use of `id` under `rule`, or refuses it. Refused uses are not counted.
    pub async fn admit(&self, id: &Uuid, rule: Rule) -> Decision {
        if let Some(shared) = &self.redis {
            if let Some(d) = Shared::admit(shared, *id, rule).await {
                return d;
            }
        }
        self.local.admit(id, rule)
    }

    /// Where this instance counts now, as last seen (no I/O).
    pub fn current_mode(&self) -> Mode {
        match &self.redis {
            Some(shared) if shared.up() => Mode::Shared,
            _ => Mode::PerInstance,
        }
    }

    /// Where this instance counts now; with Redis configured and not known to be down, asks it
    /// (a PING) first. For `/readyz`.
    pub async fn mode(&self) -> Mode {
        match &self.redis {
            Some(shared) if shared.ping().await => Mode::Shared,
            _ => Mode::PerInstance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_redis_or_with_an_unreachable_one_each_instance_counts_exactly() {
        let rule = Rule { limit: 2, window_secs: 60 };
        for url in [None, Some("redis://127.0.0.1:1")] {
            let l = RateLimiter::new(url, "t").unwrap();
            let id = Uuid::now_v7();
            let got: Vec<bool> = [(); 4].iter().map(|()| l.local.admit(&id, rule).admitted).collect();
            assert_eq!(got, [true, true, false, false]);
            let refused = l.admit(&id, rule).await;
            assert!(!refused.admitted);
            assert!((1..=60).contains(&refused.retry_after), "{refused:?}");
            assert_eq!(l.mode().await, Mode::PerInstance);
        }
    }

    /// A request is cancelled when its client goes away. One cancelled while its Redis call was in
    /// flight used to leave the key marked in flight with nobody to make the next call: every later
    /// use of it on that instance waited forever.
    #[tokio::test]
    async fn a_use_cancelled_during_its_redis_call_does_not_hold_up_the_next() {
        let url = std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let l = RateLimiter::new(Some(&url), &format!("tessera-test-{}", Uuid::now_v7())).unwrap();
        let (id, rule) = (Uuid::now_v7(), Rule { limit: 10, window_secs: 60 });
        let mut cancelled = Box::pin(l.admit(&id, rule));
        assert!(futures::poll!(&mut cancelled).is_pending(), "its call is in flight");
        drop(cancelled);
        let next = tokio::time::timeout(Duration::from_secs(5), l.admit(&id, rule))
            .await
            .expect("the next use of the key was answered");
        assert!(next.admitted);
        assert_eq!(l.current_mode(), Mode::Shared, "decided by Redis (is it running at TESSERA_TEST_REDIS_URL?)");
    }

    #[test]
    fn the_script_digest_is_the_sha1_redis_computes() {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b"return 1");
        assert_eq!(hex::encode(digest.as_ref()), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
