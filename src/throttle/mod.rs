//! Limits on guessing that hold per source address, across instances.
//!
//! Each source address may have at most `TESSERA_SOURCE_MAX_FAILURES` failed or in-flight
//! password and client-secret checks per 60 s. A check takes a [`Slot`] before any hash is
//! computed; a check that succeeds gives its slot back ([`Slot::release`]), one that fails keeps
//! it until the window ends. The count lives in Redis when one is configured (one atomic script
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

use moka::sync::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::error::Error;

/// The window over which one source's failed checks are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a Redis failure, count locally this long before trying Redis again.
const REDIS_BACKOFF: Duration = Duration::from_secs(5);

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
}

struct RedisCounter {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
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
    Redis { conn: ConnectionManager, key: String },
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

fn retry_after(remaining: Duration) -> u64 {
    remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0)
}

impl SourceLimiter {
    /// `limit` failed or in-flight checks per source per [`WINDOW`]; shared through Redis when a
    /// URL is given (keys under `prefix`).
    pub fn new(limit: u32, redis_url: Option<&str>, prefix: &str) -> Result<Self, redis::RedisError> {
        let redis = match redis_url {
            Some(url) => Some(RedisCounter {
                client: redis::Client::open(url)?,
                conn: OnceCell::new(),
                prefix: prefix.to_owned(),
                down_until: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            None => None,
        };
        let local = Cache::builder().max_capacity(100_000).time_to_live(WINDOW).build();
        Ok(Self { limit, redis, local })
    }

    /// Admits one check from `source`, or refuses it with [`Error::TooManyAttempts`] (seconds until
    /// the source's window ends) before any hash is computed.
    pub async fn admit(&self, source: IpAddr) -> Result<Slot, Error> {
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
        tracing::warn!(%source, retry_after = secs, "credential checks refused: too many from this address");
        crate::metrics::guessing_refused();
        Error::TooManyAttempts(secs)
    }
}

impl RedisCounter {
    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return Some(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let init = self.conn.get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config));
        match tokio::time::timeout(Duration::from_secs(1), init).await {
            Ok(Ok(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// `Ok(Ok(slot))` admitted, `Ok(Err(secs))` refused, `Err(())` Redis unavailable.
    async fn admit(&self, source: IpAddr, limit: u32) -> Result<Result<Slot, u64>, ()> {
        if self.millis() < self.down_until.load(Ordering::Relaxed) {
            return Err(());
        }
        let result = async {
            let mut conn = self.connection().await?;
            let key = format!("{}:guess:{source}", self.prefix);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(ADMIT).arg(1).arg(&key).arg(WINDOW.as_millis() as u64).arg(limit);
            let call = cmd.query_async::<(i64, i64)>(&mut conn);
            match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                Ok(Ok((1, _))) => Some(Ok(Slot { store: Store::Redis { conn, key } })),
                Ok(Ok((_, ttl_ms))) => {
                    let ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
                    Some(Err(retry_after(ttl.min(WINDOW)).max(1)))
                }
                _ => None,
            }
        }
        .await;
        result.ok_or_else(|| {
            tracing::warn!("Redis unavailable for guessing limits; counting on this instance for a while");
            self.down_until.store(self.millis() + REDIS_BACKOFF.as_millis() as u64, Ordering::Relaxed);
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
        // Another source is not affected.
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
