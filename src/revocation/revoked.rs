//! What this instance knows to be revoked, applied from the event log.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicI64, Ordering},
        RwLock,
    },
};

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{consumer::EventSink, last_seq, Kind, RevocationEvent};
use crate::error::Result;

/// What this instance knows to be revoked among tokens that could otherwise still verify.
/// Kept exact (never evicted), pruned once entries could no longer matter.
#[derive(Debug, Default)]
pub struct RevokedSet {
    jtis: RwLock<HashMap<Uuid, i64>>,
    families: RwLock<HashMap<Uuid, i64>>,
    clients: RwLock<HashSet<String>>,
    users: RwLock<HashSet<String>>,
    applied_seq: AtomicI64,
    /// Wakes the revocation streams (`GET /v1/revocations/stream`) when `applied_seq` moves, so
    /// they follow exactly what this instance has applied.
    applied: tokio::sync::watch::Sender<i64>,
}

impl RevokedSet {
    /// Whether the access token `jti` is revoked.
    pub fn jti_revoked(&self, jti: &Uuid) -> bool {
        self.jtis.read().map(|m| m.contains_key(jti)).unwrap_or(true)
    }
    /// Whether the refresh family `sid` is revoked.
    pub fn family_revoked(&self, sid: &Uuid) -> bool {
        self.families.read().map(|m| m.contains_key(sid)).unwrap_or(true)
    }
    /// Whether the client is disabled.
    pub fn client_revoked(&self, client_id: &str) -> bool {
        self.clients.read().map(|s| s.contains(client_id)).unwrap_or(true)
    }
    /// Whether the user (as a token `sub`) is deleted.
    pub fn user_revoked(&self, sub: &str) -> bool {
        self.users.read().map(|s| s.contains(sub)).unwrap_or(true)
    }

    /// Marks an access token revoked until `exp` (unix seconds).
    pub fn revoke_jti(&self, jti: Uuid, exp: i64) {
        if let Ok(mut m) = self.jtis.write() {
            m.insert(jti, exp);
        }
    }
    /// Marks a refresh family revoked; kept until `until` (unix seconds).
    pub fn revoke_family(&self, id: Uuid, until: i64) {
        if let Ok(mut m) = self.families.write() {
            m.insert(id, until);
        }
    }
    /// Marks a client disabled.
    pub fn revoke_client(&self, client_id: &str) {
        if let Ok(mut s) = self.clients.write() {
            s.insert(client_id.to_owned());
        }
    }
    /// Marks a user deleted.
    pub fn revoke_user(&self, sub: &str) {
        if let Ok(mut s) = self.users.write() {
            s.insert(sub.to_owned());
        }
    }

    /// The last event sequence applied.
    pub fn applied_seq(&self) -> i64 {
        self.applied_seq.load(Ordering::Acquire)
    }
    /// Records that events up to `seq` are applied (never moves backwards).
    pub fn set_applied_seq(&self, seq: i64) {
        let before = self.applied_seq.fetch_max(seq, Ordering::AcqRel);
        if seq > before {
            self.applied.send_replace(seq);
        }
    }
    /// A receiver that changes whenever [`Self::applied_seq`] moves forward.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Drops entries for tokens that have expired anyway.
    pub fn prune(&self, now: i64) {
        if let Ok(mut m) = self.jtis.write() {
            m.retain(|_, exp| *exp > now);
        }
        if let Ok(mut m) = self.families.write() {
            m.retain(|_, until| *until > now);
        }
    }

    /// Loads the current state from Postgres (at start).
    pub async fn load(&self, db: &PgPool, now: OffsetDateTime, max_access_ttl: time::Duration) -> Result<()> {
        let seq = last_seq(db).await?;
        let jtis: Vec<(Uuid, OffsetDateTime)> =
            sqlx::query_as("SELECT jti, expires_at FROM revoked_jtis WHERE expires_at > $1")
                .bind(now)
                .fetch_all(db)
                .await?;
        for (jti, exp) in jtis {
            self.revoke_jti(jti, exp.unix_timestamp());
        }
        let fams: Vec<(Uuid, OffsetDateTime)> =
            sqlx::query_as("SELECT id, revoked_at FROM refresh_families WHERE revoked_at > $1")
                .bind(now - max_access_ttl)
                .fetch_all(db)
                .await?;
        for (id, at) in fams {
            self.revoke_family(id, (at + max_access_ttl).unix_timestamp());
        }
        let clients: Vec<String> =
            sqlx::query_scalar("SELECT client_id FROM clients WHERE disabled_at IS NOT NULL").fetch_all(db).await?;
        for c in clients {
            self.revoke_client(&c);
        }
        let users: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE deleted_at IS NOT NULL").fetch_all(db).await?;
        for u in users {
            self.revoke_user(&u.to_string());
        }
        self.set_applied_seq(seq);
        Ok(())
    }
}

impl EventSink for RevokedSet {
    fn apply(&self, ev: &RevocationEvent, max_ttl: i64) {
        match ev.kind {
            Kind::AccessToken => {
                if let Ok(jti) = Uuid::parse_str(ev.jti.as_deref().unwrap_or(&ev.id)) {
                    let exp =
                        ev.expires_at.map(|e| e.unix_timestamp()).unwrap_or(ev.revoked_at.unix_timestamp() + max_ttl);
                    self.revoke_jti(jti, exp);
                }
            }
            Kind::RefreshFamily => {
                if let Ok(id) = Uuid::parse_str(&ev.id) {
                    self.revoke_family(id, ev.revoked_at.unix_timestamp() + max_ttl);
                }
            }
            Kind::Client => self.revoke_client(&ev.id),
            Kind::User => self.revoke_user(&ev.id),
            Kind::ApiKey | Kind::ApiKeyChanged | Kind::SigningKey => {}
        }
    }
}
