//! The per-instance sliding log: what [`super::RateLimiter`] counts with when Redis is unset or
//! unreachable. Exact for this instance (a log of admission instants, never an estimate), so with
//! `n` instances a key may be admitted up to `n × limit` times per window while Redis is away.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use moka::sync::Cache;
use uuid::Uuid;

use super::{Decision, Rule};

/// Logs kept at once (keys verified within their window); the least recently used go first.
const MAX_LOGS: u64 = 100_000;
/// A log idle this long is dropped: it is longer than any window (see [`super::MAX_WINDOW`]).
const IDLE: Duration = Duration::from_secs(super::MAX_WINDOW as u64 + 1);

/// One instance's logs, by limited id.
pub struct LocalLimiter {
    logs: Cache<Uuid, Arc<Mutex<VecDeque<Instant>>>>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self { logs: Cache::builder().max_capacity(MAX_LOGS).time_to_idle(IDLE).build() }
    }
}

impl LocalLimiter {
    /// Admits one use of `id` under `rule`, or refuses it; counts only what it admits.
    pub fn admit(&self, id: &Uuid, rule: Rule) -> Decision {
        let log = self.logs.get_with(*id, Default::default);
        let now = Instant::now();
        let window = rule.window();
        // A poisoned lock only means another thread panicked while holding it; the log itself is
        // always consistent (each change is one push or pop).
        let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while log.front().is_some_and(|t| now.duration_since(*t) >= window) {
            log.pop_front();
        }
        let limit = rule.limit as usize;
        let admitted = log.len() < limit;
        if admitted {
            log.push_back(now);
        }
        // The entry whose expiry frees the next slot (later ones when the limit was lowered).
        let frees = log.get(log.len().saturating_sub(limit)).copied().unwrap_or(now);
        let wait = (frees + window).saturating_duration_since(now);
        Decision::new(admitted, rule, log.len(), wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_admits_the_limit_then_refuses_until_the_oldest_leaves_the_window() {
        let l = LocalLimiter::default();
        let id = Uuid::now_v7();
        let rule = Rule { limit: 3, window_secs: 1 };
        let got: Vec<bool> = (0..5).map(|_| l.admit(&id, rule).admitted).collect();
        assert_eq!(got, [true, true, true, false, false]);
        let refused = l.admit(&id, rule);
        assert_eq!((refused.remaining, refused.retry_after), (0, 1));
        // Another id has its own log.
        assert!(l.admit(&Uuid::now_v7(), rule).admitted);
        std::thread::sleep(Duration::from_millis(1010));
        let again = l.admit(&id, rule);
        assert!(again.admitted);
        assert_eq!(again.remaining, 2);
    }
}
