//! API keys: the checksum checked locally (a mistyped or made-up key never leaves the process),
//! then `POST /v1/keys/verify` with the verifier's own token, and valid answers reused for a few
//! seconds — dropped at once when a revocation event names the key.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{
    client::Tessera,
    principal::{ApiKeyInfo, Credential, Principal},
    Rejection,
};

/// `tsk_live_` / `tsk_test_`.
const PREFIX_LEN: usize = 9;
/// Random base62 characters after the prefix.
const BODY_LEN: usize = 32;
/// Base62 characters of the CRC32 at the end.
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Answers remembered at most; the map is emptied when full.
const MAX_REMEMBERED: usize = 10_000;

/// Whether `candidate` has the shape of a Tessera API key, checksum included: `tsk_live_` or
/// `tsk_test_`, 32 base62 characters, then 6 base62 characters of the CRC32 (IEEE) of everything
/// before them, most significant digit first. Says nothing about whether the key exists.
pub fn checksum_ok(candidate: &str) -> bool {
    if candidate.len() != PREFIX_LEN + BODY_LEN + CHECKSUM_LEN || !candidate.is_ascii() {
        return false;
    }
    if !(candidate.starts_with("tsk_live_") || candidate.starts_with("tsk_test_")) {
        return false;
    }
    let (head, sum) = candidate.split_at(PREFIX_LEN + BODY_LEN);
    if !head[PREFIX_LEN..].bytes().chain(sum.bytes()).all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let mut n = u64::from(crc32fast::hash(head.as_bytes()));
    let mut expected = [b'0'; CHECKSUM_LEN];
    for slot in expected.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    expected == sum.as_bytes()
}

/// SHA-256 of a key, and the address it was presented from (allowed ranges depend on it).
type AnswerKey = ([u8; 32], Option<IpAddr>);

struct Remembered {
    at: Instant,
    key_id: String,
    principal: Arc<Principal>,
}

#[derive(Deserialize)]
struct Answer {
    valid: bool,
    #[serde(default)]
    code: Option<String>,
    #[serde(flatten)]
    info: Option<ApiKeyInfo>,
}

/// Verifies API keys through Tessera, with a short answer cache.
pub(crate) struct ApiKeys {
    tessera: Arc<Tessera>,
    ttl: Duration,
    answers: RwLock<HashMap<AnswerKey, Remembered>>,
    /// Bumped by every event about any key: an answer fetched across one is not remembered.
    generation: AtomicU64,
}

impl ApiKeys {
    pub fn new(tessera: Arc<Tessera>, ttl: Duration) -> Self {
        Self { tessera, ttl, answers: RwLock::default(), generation: AtomicU64::new(0) }
    }

    /// Drops every answer about `key_id` (an `api_key` or `api_key_changed` event).
    pub fn forget(&self, key_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut m) = self.answers.write() {
            m.retain(|_, r| r.key_id != key_id);
        }
    }

    /// Drops every answer (revocations may have been missed).
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut m) = self.answers.write() {
            m.clear();
        }
    }

    /// The principal of `key` presented from `ip`; `use_cache` is false while revocations are not
    /// being heard (a cached answer could be stale).
    pub async fn verify(&self, key: &str, ip: Option<IpAddr>, use_cache: bool) -> Result<Arc<Principal>, Rejection> {
        if !checksum_ok(key) {
            return Err(Rejection::Invalid("malformed API key"));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        if use_cache && !self.ttl.is_zero() {
            let hit = self.answers.read().ok().and_then(|m| {
                m.get(&(hash, ip)).filter(|r| r.at.elapsed() < self.ttl).map(|r| Arc::clone(&r.principal))
            });
            if let Some(p) = hit {
                return Ok(p);
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let info = self.ask(key, ip).await?;
        let principal = Arc::new(Principal {
            subject: info.owner.clone(),
            scopes: info.scopes.clone(),
            credential: Credential::ApiKey(info.clone()),
        });
        if !self.ttl.is_zero() && self.generation.load(Ordering::Acquire) == generation {
            if let Ok(mut m) = self.answers.write() {
                if m.len() >= MAX_REMEMBERED {
                    m.clear();
                }
                m.insert(
                    (hash, ip),
                    Remembered { at: Instant::now(), key_id: info.key_id, principal: Arc::clone(&principal) },
                );
            }
        }
        Ok(principal)
    }

    /// `POST /v1/keys/verify`, once more with a fresh token if Tessera refused the cached one.
    async fn ask(&self, key: &str, ip: Option<IpAddr>) -> Result<ApiKeyInfo, Rejection> {
        let mut body = serde_json::json!({ "key": key });
        if let Some(ip) = ip {
            body["ip"] = serde_json::Value::String(ip.to_string());
        }
        for attempt in 0..2 {
            let token = self.tessera.token().await.map_err(|e| unavailable(&e))?;
            let res = self
                .tessera
                .http
                .post(&self.tessera.verify_url)
                .bearer_auth(&token.value)
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| unavailable(&e))?;
            if res.status() == http::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.tessera.drop_token().await;
                continue;
            }
            if !res.status().is_success() {
                return Err(unavailable(&format!("keys/verify answered {}", res.status())));
            }
            let answer: Answer = res.json().await.map_err(|e| unavailable(&e))?;
            return match (answer.valid, answer.info) {
                (true, Some(info)) => Ok(info),
                (true, None) => Err(unavailable(&"keys/verify answered valid without the key")),
                (false, _) => Err(match answer.code.as_deref() {
                    Some("EXPIRED") => Rejection::Expired,
                    Some("REVOKED") => Rejection::Revoked,
                    Some("RATE_LIMITED" | "USAGE_EXCEEDED") => Rejection::Limited,
                    Some("INSUFFICIENT_SCOPE") => Rejection::InsufficientScope(String::new()),
                    // MALFORMED, NOT_FOUND, DISABLED, IP_NOT_ALLOWED, and codes not known yet.
                    _ => Rejection::Invalid("API key refused"),
                }),
            };
        }
        Err(unavailable(&"the verifier's own token was refused twice"))
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> Rejection {
    tracing::warn!(error = %e, "tessera-verifier: an API key could not be checked");
    Rejection::Unavailable
}

#[cfg(test)]
mod tests {
    use super::checksum_ok;

    #[test]
    fn a_key_with_a_wrong_checksum_or_shape_is_refused_locally() {
        // A key in Tessera's format (its checksum computed the same way as the service does).
        let head = "tsk_test_0123456789abcdefghijABCDEFGHIJKL";
        let mut n = u64::from(crc32fast::hash(head.as_bytes()));
        let mut sum = String::new();
        for _ in 0..6 {
            sum.insert(0, super::BASE62[(n % 62) as usize] as char);
            n /= 62;
        }
        let key = format!("{head}{sum}");
        assert!(checksum_ok(&key));
        let mut typo = key.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        assert!(!checksum_ok(std::str::from_utf8(&typo).unwrap_or_default()));
        assert!(!checksum_ok(&key[..key.len() - 1]));
        assert!(!checksum_ok(&key.replace("tsk_test_", "tsk_prod_")));
        assert!(!checksum_ok(""));
    }
}
