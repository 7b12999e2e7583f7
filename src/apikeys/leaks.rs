//! Leak reports (`POST /v1/keys/leaks`): the array of `{"token", "type"?, "url"?, "source"?}`
//! that secret-scanning services send. A token whose format or checksum is wrong is labelled a
//! false positive before any database access; a real key (even one already revoked) is a true
//! positive and, in one transaction: revoked (policy `revoke`) or only flagged (`notify`), a
//! `KEY_LEAKED` anomaly with the url and source, an audit entry, and the `api_key.leaked` (and
//! `api_key.revoked`) webhooks. The token is never echoed, stored or logged: only its SHA-256.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    format::{self, ApiKeySecret, HASH_VERSION, HASH_VERSION_IMPORTED},
    service::ApiKeys,
    store,
};
use crate::{
    audit::{self, Actor},
    config::LeakPolicy,
    error::{Error, Result},
    revocation::{self, Kind, NewRevocation},
    usage::anomalies::{self, NewAnomaly},
    webhooks::{events, EventType},
};

/// Reports one source address may send per minute (each instance counts its own).
pub const REPORTS_PER_MINUTE: u32 = 30;

/// Leak reports: the key service, and a per-source throttle (the endpoint needs no
/// authentication, so anyone may call it).
#[derive(Clone)]
pub struct LeakReports {
    keys: ApiKeys,
    /// Reports per source address in the current minute.
    seen: moka::sync::Cache<std::net::IpAddr, Arc<AtomicU32>>,
}

impl LeakReports {
    /// Reports acted on through `keys`.
    pub fn new(keys: ApiKeys) -> Self {
        let seen =
            moka::sync::Cache::builder().max_capacity(100_000).time_to_live(std::time::Duration::from_secs(60)).build();
        Self { keys, seen }
    }

    /// Labels and acts on one report from `source`.
    ///
    /// # Errors
    /// [`Error::TooManyAttempts`] past [`REPORTS_PER_MINUTE`] from one source.
    pub async fn report(
        &self,
        source: std::net::IpAddr,
        entries: Vec<LeakEntry>,
        actor: &Actor,
    ) -> Result<Vec<LeakLabel>> {
        let count = self.seen.get_with(source, || Arc::new(AtomicU32::new(0)));
        if count.fetch_add(1, Ordering::Relaxed) >= REPORTS_PER_MINUTE {
            return Err(Error::TooManyAttempts(60));
        }
        self.keys.report_leaks(entries, actor).await
    }
}

/// Most entries in one report.
pub const MAX_ENTRIES: usize = 1000;
/// Longest `url` kept, in characters.
const MAX_URL: usize = 2048;
/// Longest `source` kept, in characters.
const MAX_SOURCE: usize = 64;

/// One reported token, as sent (other members ignored).
pub struct LeakEntry {
    /// The token found. `Debug` is never derived for this type: it must not be printed.
    pub token: ApiKeySecret,
    /// The `type` the reporter sent, echoed back.
    pub token_type: Option<String>,
    /// Where it was found: kept only when an http(s) URL of at most 2 048 characters.
    pub url: Option<String>,
    /// Who found it: kept only when at most 64 characters.
    pub source: Option<String>,
}

impl LeakEntry {
    /// Reads one entry of a report: an object with a string `token`; `type`, `url` and `source`
    /// are kept when they are strings (and `url`/`source` within their limits), everything else
    /// is ignored.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the entry when it is not an object with a string `token`.
    pub fn from_json(i: usize, v: &Value) -> Result<Self> {
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid(format!("[{i}].token: each entry needs a string token")))?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let url = text("url").filter(|u| {
            u.chars().count() <= MAX_URL
                && url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https"))
                && !u.contains('\0')
        });
        let source = text("source").filter(|s| s.chars().count() <= MAX_SOURCE && !s.contains('\0'));
        let token_type = text("type").map(|t| t.chars().take(128).filter(|c| *c != '\0').collect());
        Ok(Self { token: ApiKeySecret::presented(token), token_type, url, source })
    }
}

/// The answer for one entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"token_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "token_type": "tessera_api_key", "label": "true_positive"}))]
pub struct LeakLabel {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// The `type` sent.
    pub token_type: Option<String>,
    /// `true_positive` (a real key, even if revoked) or `false_positive`.
    #[schema(example = "true_positive")]
    pub label: &'static str,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

impl ApiKeys {
    /// Labels every entry, in order, and acts on the true positives (see the module docs).
    pub async fn report_leaks(&self, entries: Vec<LeakEntry>, actor: &Actor) -> Result<Vec<LeakLabel>> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let token_hash = sha256_hex(e.token.expose());
            // Checksum first: a forged or mistyped token never reaches the database.
            let well_formed = format::parse(e.token.expose()).is_some()
                || (self.config.api_key_foreign_formats && format::is_foreign(e.token.expose()));
            let real = if well_formed { self.leaked(&e, actor).await? } else { false };
            let label = if real { "true_positive" } else { "false_positive" };
            out.push(LeakLabel { token_hash, token_type: e.token_type, label });
        }
        Ok(out)
    }

    /// Acts on one well-formed token; false when no key has it.
    async fn leaked(&self, e: &LeakEntry, actor: &Actor) -> Result<bool> {
        let now = self.clock.now();
        // Under the current HMAC key and, during a change of secret, the previous one; as created
        // here (version 1) or imported by its SHA-256 (version 2).
        let hashes: Vec<Vec<u8>> = self.hmac.accepted().map(|k| e.token.hash(k.key()).to_vec()).collect();
        let imported: Vec<Vec<u8>> = self.hmac.accepted().map(|k| e.token.imported_hash(k.key()).to_vec()).collect();
        let mut tx = self.db.begin().await?;
        let found: Option<(Uuid, Option<OffsetDateTime>)> = sqlx::query_as(
            "SELECT id, revoked_at FROM api_keys
             WHERE (key_hash = ANY($1) AND hash_version = $2) OR (key_hash = ANY($3) AND hash_version = $4)
             FOR UPDATE",
        )
        .bind(&hashes)
        .bind(HASH_VERSION)
        .bind(&imported)
        .bind(HASH_VERSION_IMPORTED)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, revoked_at)) = found else {
            return Ok(false);
        };
        let revoke = self.config.leak_policy == LeakPolicy::Revoke && revoked_at.is_none();
        let reason = "reported leaked";
        if revoke {
            if let Some(expires_at) = store::mark_revoked(&mut tx, id, None, now, Some(reason)).await? {
                let mut event = NewRevocation::new(Kind::ApiKey, id.to_string(), now).reason(reason);
                event.expires_at = expires_at;
                revocation::record(&mut tx, &event).await?;
            }
        }
        let details = json!({"url": e.url, "source": e.source, "revoked": revoke, "token_type": e.token_type});
        anomalies::raise(
            &mut tx,
            &NewAnomaly {
                kind: anomalies::kind::KEY_LEAKED,
                key_id: Some(id),
                client_id: None,
                subject: id.to_string(),
                // One record per report.
                window_start: now,
                detected_at: now,
                details: details.clone(),
            },
        )
        .await?;
        audit::record(&mut tx, now, actor, "api_key.leak_reported", "api_key", &id.to_string(), details).await?;
        let extra = json!({"url": e.url, "source": e.source});
        events::api_key(&mut tx, EventType::KeyLeaked, id, now, extra).await?;
        if revoke {
            events::api_key(&mut tx, EventType::KeyRevoked, id, now, json!({"reason": reason})).await?;
        }
        tx.commit().await?;
        if revoke {
            crate::metrics::revocation("api_key");
            self.cache.forget(&id);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_and_long_sources_are_dropped_and_extra_fields_ignored() {
        let v = json!({"token": "x", "type": "tessera_api_key", "url": "javascript:alert(1)",
                       "source": "s".repeat(65), "extra": 1});
        let e = LeakEntry::from_json(0, &v).expect("entry");
        assert!(e.url.is_none() && e.source.is_none());
        assert_eq!(e.token_type.as_deref(), Some("tessera_api_key"));
        let v = json!({"token": "x", "url": "https://github.com/o/r/blob/main/.env", "source": "github"});
        let e = LeakEntry::from_json(0, &v).expect("entry");
        assert!(e.url.is_some() && e.source.is_some());
        assert!(LeakEntry::from_json(3, &json!({"type": "t"})).is_err());
    }
}
