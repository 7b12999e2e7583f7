//! Tessera's public keys (RFC 7517), by `kid`, each with the one algorithm it may verify.
//!
//! The set is cached as long as `Cache-Control: max-age` allows and refreshed in the background
//! with `If-None-Match` after that. A token naming an unknown `kid` causes a refetch at most once
//! per cooldown (10 s), however many such tokens arrive: concurrent requests wait for the one fetch.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::{config::Settings, Error};

/// Freshness assumed when the JWKS response carries no `max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// One verification key: the key, and the validation rules fixed to its algorithm (the token's
/// `alg` header must equal it — no algorithm confusion, never `none` or HMAC).
pub(crate) struct VerifyKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
    pub validation: Validation,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    etag: Option<String>,
    fresh_until: Option<Instant>,
}

/// The cached JWKS.
pub(crate) struct Jwks {
    url: String,
    http: reqwest::Client,
    settings: Arc<Settings>,
    set: RwLock<Arc<KeySet>>,
    /// When the last fetch for an unknown `kid` happened; held while one runs.
    unknown: tokio::sync::Mutex<Option<Instant>>,
    refreshing: AtomicBool,
    fetches: AtomicU64,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl Jwks {
    /// Fetches the JWKS at `url` once.
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Metadata`] when it cannot be fetched or holds no usable key.
    pub async fn load(url: String, http: reqwest::Client, settings: Arc<Settings>) -> Result<Arc<Self>, Error> {
        let jwks = Arc::new(Self {
            url,
            http,
            settings,
            set: RwLock::new(Arc::default()),
            unknown: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        });
        jwks.fetch().await?;
        if jwks.current().by_kid.is_empty() {
            return Err(Error::Metadata("the JWKS holds no key this verifier can use".into()));
        }
        Ok(jwks)
    }

    /// How many times the JWKS was fetched (a diagnostic: unknown `kid`s must not multiply it).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<KeySet> {
        self.set.read().map(|s| Arc::clone(&s)).unwrap_or_default()
    }

    /// The key `kid`, if known; a stale set is refreshed in the background meanwhile.
    pub fn get(self: &Arc<Self>, kid: &str) -> Option<Arc<VerifyKey>> {
        let set = self.current();
        if set.fresh_until.is_some_and(|t| Instant::now() >= t) && !self.refreshing.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = me.fetch().await {
                    tracing::warn!(error = %e, "tessera-verifier: JWKS refresh failed; keeping the keys held");
                }
                me.refreshing.store(false, Ordering::Release);
            });
        }
        set.by_kid.get(kid).cloned()
    }

    /// The key `kid` after refetching the JWKS, unless a refetch for an unknown `kid` already
    /// happened within the cooldown.
    pub async fn get_unknown(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        let mut last = self.unknown.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(k) = self.current().by_kid.get(kid) {
            return Some(Arc::clone(k));
        }
        if last.is_some_and(|t| t.elapsed() < self.settings.jwks_cooldown) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "tessera-verifier: JWKS refetch for an unknown kid failed");
        }
        self.current().by_kid.get(kid).cloned()
    }

    /// Drops `kid` at once (its signing key was revoked).
    pub fn remove(&self, kid: &str) {
        if let Ok(mut set) = self.set.write() {
            if set.by_kid.contains_key(kid) {
                let mut by_kid = set.by_kid.clone();
                by_kid.remove(kid);
                *set = Arc::new(KeySet { by_kid, etag: None, fresh_until: set.fresh_until });
            }
        }
    }

    /// Fetches the JWKS (conditionally, when an `ETag` is held) and installs it.
    async fn fetch(&self) -> Result<(), Error> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let held = self.current();
        let mut req = self.http.get(&self.url).timeout(Duration::from_secs(10));
        if let Some(etag) = &held.etag {
            req = req.header(http::header::IF_NONE_MATCH, etag);
        }
        let res = req.send().await.map_err(|e| Error::http(&self.url, e))?;
        // At least a second, so a `no-cache` JWKS is not fetched on every request.
        let max_age = max_age(res.headers()).unwrap_or(DEFAULT_MAX_AGE).max(Duration::from_secs(1));
        let fresh_until = Some(Instant::now() + max_age);
        if res.status() == http::StatusCode::NOT_MODIFIED {
            let set = KeySet { by_kid: held.by_kid.clone(), etag: held.etag.clone(), fresh_until };
            self.install(set);
            return Ok(());
        }
        if !res.status().is_success() {
            return Err(Error::http(&self.url, format!("status {}", res.status())));
        }
        let etag = res.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: JwkSet = res.json().await.map_err(|e| Error::http(&self.url, e))?;
        let by_kid = body
            .keys
            .into_iter()
            .filter_map(|jwk| {
                let kid = jwk.kid.clone()?;
                let key = self.verify_key(&jwk)?;
                Some((kid, Arc::new(key)))
            })
            .collect();
        self.install(KeySet { by_kid, etag, fresh_until });
        Ok(())
    }

    fn install(&self, set: KeySet) {
        if let Ok(mut s) = self.set.write() {
            *s = Arc::new(set);
        }
    }

    /// The verification key of `jwk` with its algorithm, or `None` for a key that may not verify
    /// access tokens (symmetric, encryption-only, unknown curve, `alg` disagreeing with the key).
    fn verify_key(&self, jwk: &Jwk) -> Option<VerifyKey> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let (alg, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => (Algorithm::ES256, ec(jwk)?),
            ("EC", Some("P-384")) => (Algorithm::ES384, ec(jwk)?),
            ("OKP", Some("Ed25519")) => (Algorithm::EdDSA, DecodingKey::from_ed_components(jwk.x.as_deref()?).ok()?),
            ("RSA", _) => {
                let alg = match jwk.alg.as_deref().unwrap_or("RS256") {
                    "RS256" => Algorithm::RS256,
                    "RS384" => Algorithm::RS384,
                    "RS512" => Algorithm::RS512,
                    "PS256" => Algorithm::PS256,
                    "PS384" => Algorithm::PS384,
                    "PS512" => Algorithm::PS512,
                    _ => return None,
                };
                (alg, DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?)
            }
            _ => return None,
        };
        if jwk.alg.as_deref().is_some_and(|a| format!("{alg:?}") != a) {
            return None;
        }
        let s = &self.settings;
        let mut validation = Validation::new(alg);
        validation.leeway = s.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&s.issuer]);
        validation.set_audience(&[&s.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
        Some(VerifyKey { alg, key, validation })
    }
}

fn ec(jwk: &Jwk) -> Option<DecodingKey> {
    DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()
}

/// `max-age` of a `Cache-Control` header (RFC 9111 §5.2.2.1); `no-store`/`no-cache` mean 0.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let cc = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    for directive in cc.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if let Some(v) = directive.strip_prefix("max-age=") {
            return v.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=300"));
        assert_eq!(max_age(&h), Some(Duration::from_secs(300)));
        h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        assert_eq!(max_age(&h), Some(Duration::ZERO));
    }
}
