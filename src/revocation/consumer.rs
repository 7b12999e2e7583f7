//! Applies revocation events to this instance's caches, idempotently, and only events read from
//! Postgres. The bus (Redis pub/sub, or in-process) is a hint that something changed: a message
//! makes the consumer catch up from the database at once, but its content is never applied, so a
//! stray, replayed or forged message (another deployment on the same Redis, anyone who can publish)
//! can neither hide a real revocation nor invent one. Catch-up also runs on start, on
//! (re)connection, on every sequencing notification and on a short interval.

use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{bus::BusMessage, relay, Kind, RevocationEvent};
use crate::state::AppState;

/// Longest time a missed message can leave a cache stale.
pub const CATCH_UP_INTERVAL: Duration = Duration::from_secs(1);
/// Notified (payload: the key id) in the transaction that changes an API key in a way that is not a
/// revocation — a rotation cuts the old key's validity to the grace period — so every instance drops
/// its cached record at once instead of serving it until the cache TTL. Not an outbox event: a
/// listener that was disconnected at that moment clears every cached key when it reconnects.
pub const API_KEY_CHANGED_CHANNEL: &str = "tessera_api_key_changed";

/// How long an instance may stay behind the database before it says so in the log.
pub const BEHIND_WARN_AFTER: Duration = Duration::from_secs(5);

/// Longest wait for a new notification listener before trying again at the next tick.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the first listener, at start.
const FIRST_LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Applies one event to the in-memory state.
pub fn apply(state: &AppState, ev: &RevocationEvent) {
    let max_ttl = state.config.max_access_token_ttl().as_secs() as i64;
    match ev.kind {
        Kind::AccessToken => {
            if let Ok(jti) = Uuid::parse_str(ev.jti.as_deref().unwrap_or(&ev.id)) {
                let exp = ev.expires_at.map(|e| e.unix_timestamp()).unwrap_or(ev.revoked_at.unix_timestamp() + max_ttl);
                state.revoked.revoke_jti(jti, exp);
            }
        }
        Kind::RefreshFamily => {
            if let Ok(id) = Uuid::parse_str(&ev.id) {
                state.revoked.revoke_family(id, ev.revoked_at.unix_timestamp() + max_ttl);
            }
        }
        Kind::Client => {
            state.revoked.revoke_client(&ev.id);
            state.clients.forget(&ev.id);
            // Its keys are refused through the set above; their cached records are dead weight.
            state.apikeys.forget_owner(&ev.id);
        }
        Kind::User => {
            state.revoked.revoke_user(&ev.id);
            state.apikeys.forget_owner(&ev.id);
        }
        Kind::ApiKey | Kind::ApiKeyChanged => {
            if let Ok(id) = Uuid::parse_str(&ev.id) {
                state.apikeys.forget(&id);
            }
        }
        Kind::SigningKey => {
            state.signing.forget(ev.kid.as_deref().unwrap_or(&ev.id));
            // Revoking the active key promoted its successor in the same transaction: load it now
            // rather than at the next 2 s poll, so this instance is without a signer for milliseconds.
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = state.signing.reload(&state.db, state.clock.now(), true).await {
                    tracing::warn!(error = %e, "signing key reload after a revocation failed");
                }
            });
        }
    }
}

/// Reads and applies every sequenced event after the last one applied.
pub async fn catch_up(state: &AppState) {
    loop {
        let after = state.revoked.applied_seq();
        match super::events_after(&state.db, after, 1000).await {
            Ok(events) => {
                let n = events.len();
                for ev in &events {
                    apply(state, ev);
                    state.revoked.set_applied_seq(ev.seq);
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
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut rx = state.bus.subscribe();
    // At start nothing is cached yet, so a slow first connection costs nothing: wait for it longer
    // than for a reconnection (a busy machine can take seconds to hand out a connection).
    let mut listener = listen(&state, FIRST_LISTEN_TIMEOUT).await;
    let mut tick = tokio::time::interval(CATCH_UP_INTERVAL);
    let mut lag = LagWatch::default();
    let mut postgres = crate::db::Reachability::new(&state.config);
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
                    listener = relisten(&state).await;
                }
                catch_up(&state).await;
                let position = super::last_seq(&state.db).await.map_err(|e| e.to_string());
                postgres.observe(&position);
                lag.observe(state.revoked.applied_seq(), position, Instant::now());
            }
            note = notified => match note {
                Some(n) if n.channel() == API_KEY_CHANGED_CHANNEL => {
                    if let Ok(id) = Uuid::parse_str(n.payload()) {
                        state.apikeys.forget(&id);
                    }
                }
                Some(_) => catch_up(&state).await,
                None => {
                    listener = relisten(&state).await;
                    catch_up(&state).await;
                }
            },
            msg = rx.recv() => match msg {
                // Only a hint. A `seq` this instance has already applied needs no query (the worst a
                // forged low number can do is spare one, and the tick catches up within a second).
                Ok(BusMessage::Event(payload)) => {
                    if relay::decode(&payload).is_none_or(|ev| ev.seq > state.revoked.applied_seq()) {
                        catch_up(&state).await;
                    }
                }
                Ok(BusMessage::Resync) | Err(RecvError::Lagged(_)) => catch_up(&state).await,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// A listener on both channels, or `None` when Postgres cannot be reached within a few seconds.
async fn listen(state: &AppState, timeout: Duration) -> Option<PgListener> {
    let connect = async {
        let mut l = PgListener::connect_with(&state.db).await.ok()?;
        l.listen_all([relay::SEQUENCED_CHANNEL, API_KEY_CHANGED_CHANNEL]).await.ok()?;
        Some(l)
    };
    tokio::time::timeout(timeout, connect).await.ok().flatten()
}

/// A new listener after the old one was lost (retried every catch-up tick while Postgres is
/// away). API-key change notifications sent in the gap are lost, so the API-key cache is dropped
/// once the listener is back. Not before: while Postgres is unreachable, cached keys go on
/// verifying (each for at most the cache TTL), and nothing could change them meanwhile but
/// another instance, which the TTL bounds.
async fn relisten(state: &AppState) -> Option<PgListener> {
    let listener = listen(state, LISTEN_TIMEOUT).await?;
    state.apikeys.forget_all();
    tracing::info!("listening for API-key changes again; cached keys dropped");
    Some(listener)
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
