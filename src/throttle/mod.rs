//! Limits on guessing that hold per source address, across instances.
//!
//! Each source address may have at most `TESSERA_SOURCE_MAX_FAILURES` failed or in-flight
//! password and client-secret checks per 60 s. An Argon2 check takes a [`Slot`] before it runs
//! ([`SourceLimiter::admit`]); a check that succeeds gives its slot back ([`Slot::release`]), one
//! that fails keeps it until the window ends. A keyed-hash check (generated client secrets) costs
//! next to nothing and is never in flight for long, so it only asks whether the source is still
//! within its allowance ([`SourceLimiter::check`]) and takes a slot if it fails: a busy client
//! sending its correct secret from one address is never counted at all. The count lives in Redis when one is configured (one atomic script
//! per admission, keys `{TESSERA_REDIS_PREFIX}:guess:{address}` that expire with the window), so
//! every instance sees the same count; when Redis is unset or unreachable each instance counts on
//! its own. Nothing read from Redis is trusted beyond that counter.
//!
//! Counting per client id would let anyone lock out `admin`; this never does.

pub mod fair;

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::redis_conn::LazyConnection;
use crate::redis_conn::RedisConn;
use moka::sync::Cache;

use crate::error::Error;

/// The window over which one source's failed checks are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a Redis failure, count locally this long before trying Redis again.
const REDIS_BACKOFF: Duration = Duration::from_secs(5);
/// How long a source found within its allowance is believed to stay so for [`SourceLimiter::check`]:
/// a client sending its correct secret at a high rate asks Redis once a second, not per request.
/// Failures are always counted in Redis at once; only refusing a *correct* keyed-hash secret on
/// another instance may lag this much.
const CLEAR_FOR: Duration = Duration::from_secs(1);

/// Admits `KEYS[1]` if its count is below `ARGV[2]`: returns `{admitted, ttl_ms}`. The window
/// (`ARGV[1]` ms) starts with the first counted check.
const ADMIT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
  return {0, ttl}
end
redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {1, ttl}
";

/// `{1, 0}` while `KEYS[1]` is below `ARGV[1]`, else `{0, ttl_ms}`; counts nothing.
const PEEK: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n < tonumber(ARGV[1]) then return {1, 0} end
return {0, redis.call('PTTL', KEYS[1])}
";

/// Gives a slot back, never below zero.
const RELEASE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

/// Per-source admission of credential checks.
pub struct SourceLimiter {
    limit: u32,
    redis: Option<RedisCounter>,
    local: Cache<IpAddr, Arc<LocalWindow>>,
    /// Sources Redis recently said were within their allowance.
    clear: Cache<IpAddr, ()>,
}

struct RedisCounter {
    conn: LazyConnection,
    prefix: String,
    /// Milliseconds since `epoch` before which Redis is not tried again.
    down_until: AtomicU64,
    epoch: Instant,
}

struct LocalWindow {
    started: Instant,
    count: AtomicU32,
}

/// One admitted check. Dropping it counts the check as failed; [`Slot::release`] gives it back.
#[must_use = "a slot is released when its check succeeds, or dropped to count a failure"]
pub struct Slot {
    store: Store,
}

enum Store {
    Redis { conn: RedisConn, key: String },
    Local(Arc<LocalWindow>),
}

impl Slot {
    /// The check succeeded: it no longer counts against its source.
    pub async fn release(self) {
        match self.store {
            Store::Local(w) => {
                let _ = w.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
            }
            Store::Redis { mut conn, key } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RELEASE).arg(1).arg(&key);
                let release = cmd.query_async::<i64>(&mut conn);
                if !matches!(tokio::time::timeout(REDIS_TIMEOUT, release).await, Ok(Ok(_))) {
                    // Harmless: the slot stays counted until its window ends.
                    tracing::debug!("could not release a guessing slot in Redis");
                }
            }
        }
    }
}

fn ttl_secs(ttl_ms: i64) -> u64 {
    let ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
    retry_after(ttl.min(WINDOW)).max(1)
}

fn retry_after(remaining: Duration) -> u64 {
    remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0)
}

impl SourceLimiter {
    /// `limit` failed or in-flight checks per source per [`WINDOW`]; shared through Redis when a
    /// URL is given (keys under `prefix`).
    pub fn new(limit: u32, redis_url: Option<&str>, prefix: &str) -> Result<Self, redis::RedisError> {
        let redis = match redis_url {
            Some(url) => Some(RedisCounter {
                conn: LazyConnection::open(url, REDIS_TIMEOUT)?,
                prefix: prefix.to_owned(),
                down_until: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            None => None,
        };
        let local = Cache::builder().max_capacity(100_000).time_to_live(WINDOW).build();
        let clear = Cache::builder().max_capacity(100_000).time_to_live(CLEAR_FOR).build();
        Ok(Self { limit, redis, local, clear })
    }

    /// Refuses `source` with [`Error::TooManyAttempts`] when its allowance is spent; counts nothing.
    pub async fn check(&self, source: IpAddr) -> Result<(), Error> {
        if let Some(r) = &self.redis {
            if self.clear.contains_key(&source) {
                return Ok(());
            }
            match r.peek(source, self.limit).await {
                Ok(Ok(())) => {
                    self.clear.insert(source, ());
                    return Ok(());
                }
                Ok(Err(secs)) => return Err(self.refused(source, secs)),
                Err(()) => {}
            }
        }
        match self.local.get(&source) {
            Some(w) if w.count.load(Ordering::Acquire) >= self.limit => {
                Err(self.refused(source, retry_after(WINDOW.saturating_sub(w.started.elapsed())).max(1)))
            }
            _ => Ok(()),
        }
    }

    /// Admits one check from `source`, or refuses it with [`Error::TooManyAttempts`] (seconds until
    /// the source's window ends) before any hash is computed.
    pub async fn admit(&self, source: IpAddr) -> Result<Slot, Error> {
        // Its count is going up: the next check asks again.
        self.clear.invalidate(&source);
        if let Some(r) = &self.redis {
            match r.admit(source, self.limit).await {
                Ok(Ok(slot)) => return Ok(slot),
                Ok(Err(secs)) => return Err(self.refused(source, secs)),
                Err(()) => {} // Redis unavailable: count here instead.
            }
        }
        let window =
            self.local.get_with(source, || Arc::new(LocalWindow { started: Instant::now(), count: AtomicU32::new(0) }));
        let limit = self.limit;
        match window.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| (c < limit).then_some(c + 1)) {
            Ok(_) => Ok(Slot { store: Store::Local(window) }),
            Err(_) => Err(self.refused(source, retry_after(WINDOW.saturating_sub(window.started.elapsed())).max(1))),
        }
    }

    fn refused(&self, source: IpAddr, secs: u64) -> Error {
        self.clear.invalidate(&source);
        // Debug, not warn: a flood would otherwise write one line per request. The metric counts them.
        tracing::debug!(%source, retry_after = secs, "credential checks refused: too many from this address");
        crate::metrics::guessing_refused();
        Error::TooManyAttempts(secs)
    }
}

impl RedisCounter {
    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `script` on the source's key with `args`: `Ok((conn, key, (flag, ttl_ms)))`, or
    /// `Err(())` when Redis is unavailable (then it is left alone for [`REDIS_BACKOFF`]).
    async fn eval(&self, script: &str, source: IpAddr, args: &[u64]) -> Result<(RedisConn, String, (i64, i64)), ()> {
        if self.millis() < self.down_until.load(Ordering::Relaxed) {
            return Err(());
        }
        let result = async {
            let mut conn = self.conn.get(Duration::from_secs(1)).await?;
            let key = format!("{}:guess:{source}", self.prefix);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(script).arg(1).arg(&key);
            for a in args {
                cmd.arg(*a);
            }
            let call = cmd.query_async::<(i64, i64)>(&mut conn);
            match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                Ok(Ok(answer)) => Some((conn, key, answer)),
                _ => None,
            }
        }
        .await;
        result.ok_or_else(|| {
            tracing::warn!("Redis unavailable for guessing limits; counting on this instance for a while");
            self.down_until.store(self.millis() + REDIS_BACKOFF.as_millis() as u64, Ordering::Relaxed);
        })
    }

    /// `Ok(Ok(slot))` admitted, `Ok(Err(secs))` refused, `Err(())` Redis unavailable.
    async fn admit(&self, source: IpAddr, limit: u32) -> Result<Result<Slot, u64>, ()> {
        let (conn, key, answer) = self.eval(ADMIT, source, &[WINDOW.as_millis() as u64, u64::from(limit)]).await?;
        Ok(match answer {
            (1, _) => Ok(Slot { store: Store::Redis { conn, key } }),
            (_, ttl_ms) => Err(ttl_secs(ttl_ms)),
        })
    }

    /// `Ok(Ok(()))` within the allowance, `Ok(Err(secs))` spent, `Err(())` Redis unavailable.
    async fn peek(&self, source: IpAddr, limit: u32) -> Result<Result<(), u64>, ()> {
        let (_, _, answer) = self.eval(PEEK, source, &[u64::from(limit)]).await?;
        Ok(match answer {
            (1, _) => Ok(()),
            (_, ttl_ms) => Err(ttl_secs(ttl_ms)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_count_per_source_and_successes_give_their_slot_back() {
        let limiter = SourceLimiter::new(3, None, "t").unwrap();
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        // Two failed checks and one in flight fill a's allowance.
        drop(limiter.admit(a).await.unwrap());
        drop(limiter.admit(a).await.unwrap());
        let in_flight = limiter.admit(a).await.unwrap();
        match limiter.admit(a).await {
            Err(Error::TooManyAttempts(secs)) => assert!((1..=60).contains(&secs), "{secs}"),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        assert!(matches!(limiter.check(a).await, Err(Error::TooManyAttempts(_))));
        // Another source is not affected.
        assert!(limiter.check(b).await.is_ok());
        assert!(limiter.admit(b).await.is_ok());
        // The in-flight check succeeds: its slot is free again, and only that one.
        in_flight.release().await;
        let again = limiter.admit(a).await.unwrap();
        assert!(limiter.admit(a).await.is_err());
        again.release().await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_counting_here() {
        // Nothing listens on port 1.
        let limiter = SourceLimiter::new(1, Some("redis://127.0.0.1:1"), "t").unwrap();
        let a: IpAddr = [127, 0, 0, 4].into();
        drop(limiter.admit(a).await.unwrap());
        assert!(matches!(limiter.admit(a).await, Err(Error::TooManyAttempts(_))));
    }
}
