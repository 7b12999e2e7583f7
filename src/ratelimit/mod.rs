//! Exact rate limits across instances: at most `limit` admissions in any interval of `window`
//! seconds, counted once for every instance together.
//!
//! Each limited id has a sliding log in Redis: a sorted set `{TESSERA_REDIS_PREFIX}:rl:{id}` of the
//! instants (Redis's own clock, microseconds) of its admitted uses. One Lua script per decision
//! drops the entries older than the window, counts the rest and adds the new use if there is room,
//! atomically, so concurrent instances can never both take the last slot, and there is no window
//! boundary to straddle (a fixed-window counter admits up to twice the limit across one). The key
//! expires with the window after its last admission. Redis's clock alone orders the entries, so
//! the instances' clocks need not agree. A log holds at most `limit` entries, about 120 bytes each
//! in Redis 7.
//!
//! When Redis is unset, or does not answer within [`REDIS_TIMEOUT`], each instance counts on its
//! own ([`local`]) and tries Redis again after [`REDIS_BACKOFF`]; `/readyz` and the gauge
//! `api_key_rate_limits_shared` say which mode an instance is in. Nothing here ever fails a
//! request: a limiter that cannot count shared counts locally.

pub mod local;

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::redis_conn::RedisConn;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::redis_conn::LazyConnection;
use local::LocalLimiter;

/// Largest `limit`.
pub const MAX_LIMIT: i64 = 1_000_000;
/// Longest window, in seconds (one day).
pub const MAX_WINDOW: i64 = 86_400;
/// Longest wait for Redis on a request path before counting locally.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// After a Redis failure, count locally this long before trying Redis again.
pub const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// `KEYS[1]` the log; `ARGV[1]` the limit, `ARGV[2]` the window in microseconds, `ARGV[3]` a
/// member no other admission uses. Returns `{admitted, entries, frees_at_us, now_us}`, where
/// `frees_at_us` is the instant of the entry whose expiry frees the next slot.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
local admitted = 0
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  n = n + 1
  admitted = 1
end
local idx = 0
if n > limit then idx = n - limit end
local first = redis.call('ZRANGE', KEYS[1], idx, idx, 'WITHSCORES')
return {admitted, n, tonumber(first[2]), now}
";

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
    fn new(admitted: bool, rule: Rule, entries: usize, wait: Duration) -> Self {
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
    redis: Option<Shared>,
    local: LocalLimiter,
}

struct Shared {
    conn: LazyConnection,
    prefix: String,
    /// SHA-1 of [`SCRIPT`], for EVALSHA.
    sha: String,
    /// This process's part of every log member, so members of different instances never collide.
    nonce: u64,
    seq: AtomicU64,
    /// Milliseconds since `epoch` before which Redis is not tried again.
    down_until: AtomicU64,
    epoch: Instant,
    /// Last state seen, so changes are logged once.
    up: AtomicBool,
}

impl RateLimiter {
    /// Limits shared through Redis at `redis_url` (keys under `prefix`), or per instance without one.
    pub fn new(redis_url: Option<&str>, prefix: &str) -> Result<Self, redis::RedisError> {
        let redis = match redis_url {
            Some(url) => {
                let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, SCRIPT.as_bytes());
                Some(Shared {
                    conn: LazyConnection::open(url, REDIS_TIMEOUT)?,
                    prefix: prefix.to_owned(),
                    sha: hex::encode(digest.as_ref()),
                    nonce: rand::random(),
                    seq: AtomicU64::new(0),
                    down_until: AtomicU64::new(0),
                    epoch: Instant::now(),
                    // Assumed up until it fails, so the first failure is logged.
                    up: AtomicBool::new(true),
                })
            }
            None => None,
        };
        crate::metrics::rate_limits_shared(redis.is_some());
        Ok(Self { redis, local: LocalLimiter::default() })
    }

    /// Admits one use of `id` under `rule`, or refuses it. Refused uses are not counted.
    pub async fn admit(&self, id: &Uuid, rule: Rule) -> Decision {
        if let Some(shared) = &self.redis {
            if let Some(d) = shared.admit(id, rule).await {
                return d;
            }
        }
        self.local.admit(id, rule)
    }

    /// Where this instance counts now, as last seen (no I/O).
    pub fn current_mode(&self) -> Mode {
        match &self.redis {
            Some(shared) if !shared.backing_off() && shared.up.load(Ordering::Relaxed) => Mode::Shared,
            _ => Mode::PerInstance,
        }
    }

    /// Where this instance counts now; with Redis configured and not known to be down, asks it
    /// (a PING) first. For `/readyz`.
    pub async fn mode(&self) -> Mode {
        let Some(shared) = &self.redis else { return Mode::PerInstance };
        if shared.backing_off() {
            return Mode::PerInstance;
        }
        let ping = async {
            let mut conn = shared.conn.get(REDIS_TIMEOUT).await?;
            tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await.ok()?.ok()
        };
        if ping.await.is_some() {
            shared.mark(true);
            Mode::Shared
        } else {
            shared.mark(false);
            Mode::PerInstance
        }
    }
}

impl Shared {
    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn backing_off(&self) -> bool {
        self.millis() < self.down_until.load(Ordering::Relaxed)
    }

    /// Records whether Redis answered; logs and sets the gauge on every change.
    fn mark(&self, up: bool) {
        if !up {
            self.down_until.store(self.millis() + REDIS_BACKOFF.as_millis() as u64, Ordering::Relaxed);
        }
        if self.up.load(Ordering::Relaxed) != up && self.up.swap(up, Ordering::Relaxed) != up {
            crate::metrics::rate_limits_shared(up);
            if up {
                tracing::info!("Redis answers again: API-key rate limits are counted across instances");
            } else {
                tracing::warn!("Redis unavailable: API-key rate limits are counted on this instance alone for now");
            }
        }
    }

    /// The decision Redis made, or `None` when it could not be asked.
    async fn admit(&self, id: &Uuid, rule: Rule) -> Option<Decision> {
        if self.backing_off() {
            return None;
        }
        let answer = async {
            let mut conn = self.conn.get(REDIS_TIMEOUT).await?;
            tokio::time::timeout(REDIS_TIMEOUT, self.eval(&mut conn, id, rule)).await.ok()?.ok()
        }
        .await;
        let Some((admitted, entries, frees_at_us, now_us)) = answer else {
            self.mark(false);
            return None;
        };
        self.mark(true);
        let window_us = i64::from(rule.window_secs) * 1_000_000;
        let wait = Duration::from_micros(u64::try_from(frees_at_us + window_us - now_us).unwrap_or(0));
        Some(Decision::new(admitted == 1, rule, usize::try_from(entries).unwrap_or(usize::MAX), wait))
    }

    async fn eval(&self, conn: &mut RedisConn, id: &Uuid, rule: Rule) -> redis::RedisResult<(i64, i64, i64, i64)> {
        let key = format!("{}:rl:{id}", self.prefix);
        let member = format!("{:016x}{:x}", self.nonce, self.seq.fetch_add(1, Ordering::Relaxed));
        let window_us = u64::from(rule.window_secs) * 1_000_000;
        let call = |name: &str, script: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(script).arg(1).arg(&key).arg(rule.limit).arg(window_us).arg(&member);
            cmd
        };
        match call("EVALSHA", &self.sha).query_async(conn).await {
            // First use on this Redis (or after it restarted): EVAL loads the script as it runs it.
            Err(e) if e.code() == Some("NOSCRIPT") => call("EVAL", SCRIPT).query_async(conn).await,
            other => other,
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

    #[test]
    fn the_script_digest_is_the_sha1_redis_computes() {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b"return 1");
        assert_eq!(hex::encode(digest.as_ref()), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
