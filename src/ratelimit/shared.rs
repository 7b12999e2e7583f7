//! The Redis side of [`super::RateLimiter`]: the sliding-log script, and the combining of
//! concurrent uses of one id. While an id's call is in flight, further uses of it on this instance
//! queue; when the call returns, the whole queue goes in one call that asks for that many uses
//! (the script admits as many as there is room for, in queue order). Exactness is the script's:
//! one atomic decision per call, whatever the number of uses in it. A hot key then costs one Redis
//! round trip per round trip rather than per verification, and Redis runs the script once per batch.

use std::{
    collections::{hash_map::Entry, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Decision, Rule, REDIS_BACKOFF, REDIS_TIMEOUT};
use crate::redis_conn::{LazyConnection, RedisConn};

/// Most uses asked for in one call (the script's `ZADD` takes two arguments per use).
const MAX_BATCH: usize = 512;

/// `KEYS[1]` the log; `ARGV[1]` the limit, `ARGV[2]` the window in microseconds, `ARGV[3]` a
/// member prefix no other call uses, `ARGV[4]` how many uses are asked for at once. Admits as
/// many as there is room for, each a member of its own. Returns `{admitted, entries_before,
/// frees_at_us, now_us}`, where `frees_at_us` is the instant of the entry whose expiry frees the
/// next slot.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local want = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local before = redis.call('ZCARD', KEYS[1])
local admitted = math.max(0, math.min(want, limit - before))
if admitted > 0 then
  local args = {}
  for i = 1, admitted do
    args[2 * i - 1] = now
    args[2 * i] = ARGV[3] .. ':' .. i
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
end
local n = before + admitted
local idx = 0
if n > limit then idx = n - limit end
local first = redis.call('ZRANGE', KEYS[1], idx, idx, 'WITHSCORES')
return {admitted, before, tonumber(first[2]), now}
";

/// A use waiting for the call in flight: its rule, and where its decision goes (`None`: Redis
/// could not be asked; the caller counts locally).
type Waiter = (Rule, oneshot::Sender<Option<Decision>>);

/// Redis-backed limits for one instance.
pub(super) struct Shared {
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
    /// Ids with a call in flight, and the uses queued behind it.
    queues: Mutex<HashMap<Uuid, Vec<Waiter>>>,
}

impl Shared {
    /// Limits in the Redis at `url`, under `prefix`. Connects lazily.
    pub(super) fn open(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, SCRIPT.as_bytes());
        Ok(Self {
            conn: LazyConnection::open(url, REDIS_TIMEOUT)?,
            prefix: prefix.to_owned(),
            sha: hex::encode(digest.as_ref()),
            nonce: rand::random(),
            seq: AtomicU64::new(0),
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
            // Assumed up until it fails, so the first failure is logged.
            up: AtomicBool::new(true),
            queues: Mutex::default(),
        })
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn backing_off(&self) -> bool {
        self.millis() < self.down_until.load(Ordering::Relaxed)
    }

    /// Whether Redis was answering when last asked, and is not being avoided after a failure.
    pub(super) fn up(&self) -> bool {
        !self.backing_off() && self.up.load(Ordering::Relaxed)
    }

    /// Asks Redis (a PING) unless it is being avoided; records the answer.
    pub(super) async fn ping(&self) -> bool {
        if self.backing_off() {
            return false;
        }
        let ping = async {
            let mut conn = self.conn.get(REDIS_TIMEOUT).await?;
            tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await.ok()?.ok()
        };
        let up = ping.await.is_some();
        self.mark(up);
        up
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

    /// The decision Redis made for one use of `id`, or `None` when it could not be asked. The
    /// first use of an id starts its call at once; uses arriving meanwhile wait and go in the next.
    ///
    /// The calls run in a task of their own, never in the caller: a request is cancelled when its
    /// client goes away, and a cancelled caller that was making the call would leave `id` marked in
    /// flight with nobody to make the next one, so every later use of the key on this instance
    /// would wait forever (seen under wrk, whose runs end with requests in flight).
    pub(super) async fn admit(this: &Arc<Self>, id: Uuid, rule: Rule) -> Option<Decision> {
        if this.backing_off() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let first = match this.queues.lock().unwrap_or_else(PoisonError::into_inner).entry(id) {
            Entry::Occupied(mut queue) => {
                queue.get_mut().push((rule, tx));
                None
            }
            Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                Some(vec![(rule, tx)])
            }
        };
        if let Some(batch) = first {
            tokio::spawn(Arc::clone(this).drain(id, batch));
        }
        rx.await.ok().flatten()
    }

    /// The uses queued for `id`, or `None` (and `id` no longer in flight) when there are none.
    fn next_batch(&self, id: Uuid) -> Option<Vec<Waiter>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        match queues.get_mut(&id) {
            Some(queue) if !queue.is_empty() => {
                let rest = queue.split_off(queue.len().min(MAX_BATCH));
                Some(std::mem::replace(queue, rest))
            }
            _ => {
                queues.remove(&id);
                None
            }
        }
    }

    /// Decides queued batches of `id` until none is left.
    async fn drain(self: Arc<Self>, id: Uuid, mut batch: Vec<Waiter>) {
        loop {
            // Rules differ within a batch only across a change of the key's limit: the newest wins.
            let Some(rule) = batch.last().map(|(rule, _)| *rule) else { return };
            let mut decisions = self.call(id, rule, batch.len()).await.unwrap_or_default().into_iter();
            for (_, tx) in batch {
                // A waiter that went away (its request was cancelled) needs no answer.
                let _ = tx.send(decisions.next());
            }
            match self.next_batch(id) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    /// One script call asking for `n` uses of `id`: a decision per use, in order, or `None` when
    /// Redis could not be asked.
    async fn call(&self, id: Uuid, rule: Rule, n: usize) -> Option<Vec<Decision>> {
        let answer = async {
            let mut conn = self.conn.get(REDIS_TIMEOUT).await?;
            tokio::time::timeout(REDIS_TIMEOUT, self.eval(&mut conn, id, rule, n)).await.ok()?.ok()
        }
        .await;
        let Some((admitted, before, frees_at_us, now_us)) = answer else {
            self.mark(false);
            return None;
        };
        self.mark(true);
        let window_us = i64::from(rule.window_secs) * 1_000_000;
        let wait = Duration::from_micros(u64::try_from(frees_at_us + window_us - now_us).unwrap_or(0));
        let (admitted, before) =
            (usize::try_from(admitted).unwrap_or(0), usize::try_from(before).unwrap_or(usize::MAX));
        Some(
            (0..n)
                .map(|i| {
                    let ok = i < admitted;
                    // The entries once this use is counted (or, refused, once the batch's are).
                    let entries = before.saturating_add(if ok { i + 1 } else { admitted });
                    Decision::new(ok, rule, entries, wait)
                })
                .collect(),
        )
    }

    async fn eval(
        &self,
        conn: &mut RedisConn,
        id: Uuid,
        rule: Rule,
        n: usize,
    ) -> redis::RedisResult<(i64, i64, i64, i64)> {
        let key = format!("{}:rl:{id}", self.prefix);
        let member = format!("{:016x}{:x}", self.nonce, self.seq.fetch_add(1, Ordering::Relaxed));
        let window_us = u64::from(rule.window_secs) * 1_000_000;
        let call = |name: &str, script: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(script).arg(1).arg(&key).arg(rule.limit).arg(window_us).arg(&member).arg(n);
            cmd
        };
        match call("EVALSHA", &self.sha).query_async(conn).await {
            // First use on this Redis (or after it restarted): EVAL loads the script as it runs it.
            Err(e) if e.code() == Some("NOSCRIPT") => call("EVAL", SCRIPT).query_async(conn).await,
            other => other,
        }
    }
}
