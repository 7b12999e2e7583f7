//! What the verifier knows to be revoked, from Tessera's revocation events, and how current that
//! knowledge is.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        RwLock,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;

/// A revocation event as Tessera publishes it (`GET /v1/revocations`, `/v1/revocations/stream`).
/// Kinds this version does not know are read and ignored.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Event {
    pub seq: i64,
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
}

/// What an applied event asks of the other caches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing beyond the revoked set.
    None,
    /// Drop cached answers about this API key.
    ApiKey(String),
    /// Drop this signing key.
    SigningKey(String),
}

#[derive(Default)]
struct Sets {
    /// jti → when to forget it (unix seconds; after the token's own expiry nothing can use it).
    jtis: HashMap<String, i64>,
    families: HashSet<String>,
    clients: HashSet<String>,
    users: HashSet<String>,
    kids: HashSet<String>,
}

/// The claims of a token that a revocation can name.
pub(crate) struct Subject<'a> {
    pub jti: &'a str,
    pub sid: Option<&'a str>,
    pub client_id: &'a str,
    pub sub: &'a str,
    pub kid: &'a str,
}

/// Revoked jtis, families, clients, users and signing keys, and the stream's health.
pub(crate) struct Revoked {
    sets: RwLock<Sets>,
    /// Last `seq` applied.
    applied: AtomicI64,
    /// Milliseconds since `epoch` when the stream went down, or -1 while it is up.
    down_since_ms: AtomicI64,
    epoch: Instant,
    /// Times the stream refused the verifier's token.
    refused: AtomicU64,
}

impl Revoked {
    /// Nothing known yet; the stream counts as down since now.
    pub fn new() -> Self {
        Self {
            sets: RwLock::new(Sets::default()),
            applied: AtomicI64::new(0),
            down_since_ms: AtomicI64::new(0),
            epoch: Instant::now(),
            refused: AtomicU64::new(0),
        }
    }

    /// Whether anything the token names is revoked.
    pub fn is_revoked(&self, s: &Subject<'_>) -> bool {
        let Ok(sets) = self.sets.read() else { return true };
        sets.jtis.contains_key(s.jti)
            || s.sid.is_some_and(|sid| sets.families.contains(sid))
            || sets.clients.contains(s.client_id)
            || sets.users.contains(s.sub)
            || sets.kids.contains(s.kid)
    }

    /// Applies `ev` (idempotent) and says what else it concerns.
    pub fn apply(&self, ev: &Event) -> Effect {
        let effect = match ev.kind.as_str() {
            "api_key" | "api_key_changed" => Effect::ApiKey(ev.id.clone()),
            "signing_key" => Effect::SigningKey(ev.kid.clone().unwrap_or_else(|| ev.id.clone())),
            _ => Effect::None,
        };
        if let Ok(mut sets) = self.sets.write() {
            match ev.kind.as_str() {
                // Kept for the longest an access token can live past its revocation (a day, the
                // largest lifetime Tessera allows); pruned afterwards.
                "access_token" => {
                    let jti = ev.jti.clone().unwrap_or_else(|| ev.id.clone());
                    sets.jtis.insert(jti, unix_now() + 86_400);
                }
                "refresh_family" => {
                    sets.families.insert(ev.id.clone());
                }
                "client" => {
                    sets.clients.insert(ev.id.clone());
                }
                "user" => {
                    sets.users.insert(ev.id.clone());
                }
                "signing_key" => {
                    if let Effect::SigningKey(kid) = &effect {
                        sets.kids.insert(kid.clone());
                    }
                }
                _ => {}
            }
        }
        self.applied.fetch_max(ev.seq, Ordering::AcqRel);
        effect
    }

    /// Forgets revoked jtis whose tokens have expired anyway.
    pub fn prune(&self) {
        let now = unix_now();
        if let Ok(mut sets) = self.sets.write() {
            sets.jtis.retain(|_, until| *until > now);
        }
    }

    /// The last `seq` applied (0 before any).
    pub fn applied_seq(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The stream is connected and current.
    pub fn mark_up(&self) {
        self.down_since_ms.store(-1, Ordering::Release);
    }

    /// The stream was lost (keeps the earliest moment if already down).
    pub fn mark_down(&self) {
        let now = self.epoch.elapsed().as_millis() as i64;
        let _ = self.down_since_ms.compare_exchange(-1, now, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The stream refused the verifier's token (401).
    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the stream refused the verifier's token.
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How long the stream has been down (zero while it is up).
    pub fn down_for(&self) -> Duration {
        let since = self.down_since_ms.load(Ordering::Acquire);
        if since < 0 {
            return Duration::ZERO;
        }
        let now = self.epoch.elapsed().as_millis() as i64;
        Duration::from_millis(now.saturating_sub(since).max(0) as u64)
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, kind: &str, id: &str) -> Event {
        Event { seq, kind: kind.into(), id: id.into(), jti: None, kid: None }
    }

    #[test]
    fn each_kind_revokes_what_it_names() {
        let r = Revoked::new();
        let s = |jti, sid, client_id, sub, kid| Subject { jti, sid, client_id, sub, kid };
        assert!(!r.is_revoked(&s("j", Some("f"), "c", "u", "k")));
        assert_eq!(r.apply(&ev(1, "access_token", "j")), Effect::None);
        assert!(r.is_revoked(&s("j", None, "c", "u", "k")));
        r.apply(&ev(2, "refresh_family", "f"));
        assert!(r.is_revoked(&s("x", Some("f"), "c", "u", "k")));
        r.apply(&ev(3, "client", "c"));
        assert!(r.is_revoked(&s("x", None, "c", "u", "k")));
        r.apply(&ev(4, "user", "u"));
        assert!(r.is_revoked(&s("x", None, "d", "u", "k")));
        assert_eq!(r.apply(&ev(5, "signing_key", "k")), Effect::SigningKey("k".into()));
        assert!(r.is_revoked(&s("x", None, "d", "v", "k")));
        assert!(!r.is_revoked(&s("x", None, "d", "v", "l")));
        assert_eq!(r.apply(&ev(6, "api_key_changed", "key")), Effect::ApiKey("key".into()));
        assert_eq!(r.apply(&ev(7, "something_new", "?")), Effect::None);
        assert_eq!(r.applied_seq(), 7);
    }

    #[test]
    fn the_stream_is_down_from_the_first_loss_until_it_is_up_again() {
        let r = Revoked::new();
        r.mark_up();
        assert_eq!(r.down_for(), Duration::ZERO);
        r.mark_down();
        std::thread::sleep(Duration::from_millis(20));
        r.mark_down();
        assert!(r.down_for() >= Duration::from_millis(20));
        r.mark_up();
        assert_eq!(r.down_for(), Duration::ZERO);
    }
}
