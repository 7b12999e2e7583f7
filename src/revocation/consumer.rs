//! Applies revocation events to this instance's caches, idempotently, and only events read from
//! Postgres. The bus (Redis pub/sub, or in-process) is a hint that something changed: a message
//! makes the consumer catch up from the database at once, but its content is never applied, so a
//! stray, replayed or forged message (another deployment on the same Redis, anyone who can publish)
//! can neither hide a real revocation nor invent one. Catch-up also runs on start, on
//! (re)connection, on every sequencing notification and on a short interval.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{bus::Bus, bus::BusMessage, relay, RevocationEvent, RevokedSet, API_KEY_CHANGED_CHANNEL};
use crate::config::Config;

/// Longest time a missed message can leave a cache stale.
pub const CATCH_UP_INTERVAL: Duration = Duration::from_secs(1);

/// How long an instance may stay behind the database before it says so in the log.
pub const BEHIND_WARN_AFTER: Duration = Duration::from_secs(5);

/// Longest wait for a new notification listener before trying again at the next tick.
const LISTEN_TIMEOUT: Duration = crate::db::listen::CONNECT_TIMEOUT;
/// Longest wait for the first listener, at start.
const FIRST_LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Something on this instance that revocation events change: the revoked set, the client and
/// API-key caches, the signing key set. Each takes what concerns it and ignores the rest; the
/// composition root registers them with the [`Consumer`].
pub trait EventSink: Send + Sync {
    /// Applies `ev`, read from Postgres. Idempotent: the same event may be applied again.
    /// `max_access_ttl` (seconds) bounds how long an access token revoked by it can live.
    fn apply(&self, ev: &RevocationEvent, max_access_ttl: i64);

    /// An API key changed without a revocation (rotation, narrowing): drop what is cached of it.
    fn api_key_changed(&self, _id: &Uuid) {}

    /// API keys were added by an import (their hashes may be remembered as unknown): forget the
    /// unknown hashes.
    fn keys_added(&self) {}

    /// API-key change notifications may have been missed (the listener was lost): drop whatever
    /// could be stale.
    fn changes_missed(&self) {}
}

/// Applies sequenced revocation events from Postgres to every registered [`EventSink`].
pub struct Consumer {
    db: PgPool,
    bus: Bus,
    config: Arc<Config>,
    revoked: Arc<RevokedSet>,
    sinks: Vec<Arc<dyn EventSink>>,
}

impl Consumer {
    /// A consumer that tracks its position in `revoked` (which is also a sink) and applies every
    /// event to `revoked` and `sinks`.
    pub fn new(
        db: PgPool,
        bus: Bus,
        config: Arc<Config>,
        revoked: Arc<RevokedSet>,
        sinks: Vec<Arc<dyn EventSink>>,
    ) -> Self {
        let mut all: Vec<Arc<dyn EventSink>> = vec![revoked.clone()];
        all.extend(sinks);
        Self { db, bus, config, revoked, sinks: all }
    }

    /// Applies one event to every sink.
    pub fn apply(&self, ev: &RevocationEvent) {
        let max_ttl = self.config.max_access_token_ttl().as_secs() as i64;
        for sink in &self.sinks {
            sink.apply(ev, max_ttl);
        }
    }

    /// Reads and applies every sequenced event after the last one applied.
    pub async fn catch_up(&self) {
        loop {
            let after = self.revoked.applied_seq();
            match super::events_after(&self.db, after, 1000).await {
                Ok(events) => {
                    let n = events.len();
                    for ev in &events {
                        self.apply(ev);
                        self.revoked.set_applied_seq(ev.seq);
                    }
                    if n < 1000 {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation catch-up failed");
                    return;
                }
            }
        }
    }

    /// Runs until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut rx = self.bus.subscribe();
        // At start nothing is cached yet, so a slow first connection costs nothing: wait for it
        // longer than for a reconnection (a busy machine can take seconds to hand out a connection).
        let mut listener = self.listen(FIRST_LISTEN_TIMEOUT).await;
        let mut tick = tokio::time::interval(CATCH_UP_INTERVAL);
        let mut lag = LagWatch::default();
        let mut postgres = crate::db::Reachability::new(&self.config);
        loop {
            // Some(notification), or None when the connection was lost.
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.try_recv().await.ok().flatten(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if listener.is_none() {
                        listener = self.relisten().await;
                    }
                    self.catch_up().await;
                    let position = super::last_seq(&self.db).await.map_err(|e| e.to_string());
                    postgres.observe(&position);
                    lag.observe(self.revoked.applied_seq(), position, Instant::now());
                }
                note = notified => match note {
                    Some(n) if n.channel() == API_KEY_CHANGED_CHANNEL => {
                        if n.payload() == super::KEYS_ADDED {
                            self.sinks.iter().for_each(|s| s.keys_added());
                        } else if let Ok(id) = Uuid::parse_str(n.payload()) {
                            self.sinks.iter().for_each(|s| s.api_key_changed(&id));
                        }
                    }
                    Some(_) => self.catch_up().await,
                    None => {
                        // Made again at the next tick, not now. A connection lost because Postgres
                        // is going away (a restart, a failover, connections being terminated) is
                        // usually one of several about to die: a listener made at once on another
                        // of them could still succeed, and declare the cache stale (`relisten`)
                        // just as the outage starts, when the cache is what keeps keys verifying.
                        listener = None;
                        self.catch_up().await;
                    }
                },
                msg = rx.recv() => match msg {
                    // Only a hint. A `seq` this instance has already applied needs no query (the
                    // worst a forged low number can do is spare one, and the tick catches up
                    // within a second).
                    Ok(BusMessage::Event(payload)) => {
                        if relay::decode(&payload).is_none_or(|ev| ev.seq > self.revoked.applied_seq()) {
                            self.catch_up().await;
                        }
                    }
                    Ok(BusMessage::Resync) | Err(RecvError::Lagged(_)) => self.catch_up().await,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// A listener on both channels, or `None` when Postgres cannot be reached within `timeout`.
    async fn listen(&self, timeout: Duration) -> Option<PgListener> {
        crate::db::listen::listener(&self.db, &[relay::SEQUENCED_CHANNEL, API_KEY_CHANGED_CHANNEL], timeout).await
    }

    /// A new listener after the old one was lost (retried every catch-up tick while Postgres is
    /// away). API-key change notifications sent in the gap are lost, so the sinks drop what could
    /// be stale once the listener is back. Not before: while Postgres is unreachable, cached keys go
    /// on verifying (each for at most the cache TTL), and nothing could change them meanwhile but
    /// another instance, which the TTL bounds.
    async fn relisten(&self) -> Option<PgListener> {
        let listener = self.listen(LISTEN_TIMEOUT).await?;
        self.sinks.iter().for_each(|s| s.changes_missed());
        tracing::info!("listening for API-key changes again; cached keys dropped");
        Some(listener)
    }
}

/// Watches whether this instance keeps up with the revocation log, for the metrics and the log: a
/// warning once it has been behind (or unable to read the log) for [`BEHIND_WARN_AFTER`], and a
/// line when it has caught up again. Momentary lag (an event sequenced between the catch-up and
/// the check) resets at the next tick and says nothing.
#[derive(Debug, Default)]
pub struct LagWatch {
    behind_since: Option<Instant>,
    warned: bool,
}

impl LagWatch {
    /// Records one observation: the `seq` applied here and the database's last `seq` (or why it
    /// could not be read). Returns whether the instance is now reported as behind.
    pub fn observe(&mut self, applied: i64, in_database: Result<i64, String>, now: Instant) -> bool {
        let (last, problem) = match in_database {
            Ok(last) if applied >= last => {
                if self.warned {
                    tracing::info!(applied_seq = applied, "revocations: caught up with the database again");
                }
                self.behind_since = None;
                self.warned = false;
                crate::metrics::revocation_position(applied, last, 0.0);
                return false;
            }
            Ok(last) => (last, None),
            Err(e) => (applied, Some(e)),
        };
        let since = *self.behind_since.get_or_insert(now);
        let behind = now.saturating_duration_since(since);
        crate::metrics::revocation_position(applied, last, behind.as_secs_f64());
        if behind >= BEHIND_WARN_AFTER && !self.warned {
            self.warned = true;
            match problem {
                None => tracing::warn!(
                    applied_seq = applied,
                    database_seq = last,
                    behind_secs = behind.as_secs(),
                    "revocations: this instance is behind the database and may accept revoked credentials"
                ),
                Some(error) => tracing::warn!(
                    applied_seq = applied,
                    behind_secs = behind.as_secs(),
                    %error,
                    "revocations: the event log cannot be read; revocations made elsewhere are not applied here"
                ),
            }
        }
        self.warned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_reported_only_once_it_lasts() {
        let mut w = LagWatch::default();
        let t0 = Instant::now();
        assert!(!w.observe(10, Ok(10), t0), "caught up");
        assert!(!w.observe(10, Ok(12), t0), "momentarily behind");
        assert!(!w.observe(12, Ok(12), t0 + Duration::from_secs(1)), "caught up resets");
        assert!(!w.observe(12, Ok(15), t0 + Duration::from_secs(2)));
        assert!(!w.observe(12, Ok(15), t0 + Duration::from_secs(6)), "4 s behind is not yet news");
        assert!(w.observe(12, Ok(16), t0 + Duration::from_secs(7)), "5 s behind is");
        assert!(w.observe(12, Err("pool timed out".into()), t0 + Duration::from_secs(8)), "still behind");
        assert!(!w.observe(16, Ok(16), t0 + Duration::from_secs(9)), "caught up again");
    }

    #[test]
    fn an_unreadable_log_counts_as_behind() {
        let mut w = LagWatch::default();
        let t0 = Instant::now();
        assert!(!w.observe(3, Err("connection refused".into()), t0));
        assert!(w.observe(3, Err("connection refused".into()), t0 + BEHIND_WARN_AFTER));
    }
}
