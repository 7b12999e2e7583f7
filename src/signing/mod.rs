//! Signing keys: lifecycle `next → active → retired` (+ `revoked`) in Postgres, sealed at rest,
//! and the in-memory key set every instance signs and verifies with and serves as the JWKS.

pub mod id_token_key;
mod key_table;
pub mod lifecycle;
pub mod material;
mod service;

pub use key_table::Signs;
pub use service::Signing;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{config::SigningAlg, error::Result, secrets::Sealer};

pub use material::Signer;

/// The key that signs new tokens.
pub struct ActiveKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// Base64url of the JWS header `{"alg","kid","typ":"at+jwt"}`, computed once.
    pub header_b64: String,
    /// The parsed private key.
    pub signer: Signer,
}

/// A public key a token may be verified with.
pub struct Verifier {
    /// The algorithm recorded for this key (never taken from a token).
    pub alg: Algorithm,
    /// The public key.
    pub key: DecodingKey,
}

/// Everything derived from one state of the `signing_keys` table.
pub struct KeySet {
    /// The signing key, when one is active.
    pub active: Option<Arc<ActiveKey>>,
    /// Every published key by `kid`: next, active and retired-but-published.
    pub verifiers: HashMap<String, Verifier>,
    /// The JWKS document, serialised once.
    pub jwks: Bytes,
    /// Strong ETag of `jwks` (RFC 9110 §8.8.3: quoted hex), ready to send as a header value.
    pub etag: Bytes,
    /// Identifies the table state this set was built from.
    pub fingerprint: String,
    /// The active RS256 key that signs ID tokens (header `typ: JWT`; see [`id_token_key`]).
    pub id_token: Option<Arc<ActiveKey>>,
    /// The ID-token keys an ID token may have been signed with (active and retired-but-published),
    /// by `kid`, to read back an `id_token_hint`. Never used for access tokens.
    pub id_token_verifiers: Arc<HashMap<String, Verifier>>,
}

impl KeySet {
    fn empty() -> Self {
        Self {
            active: None,
            verifiers: HashMap::new(),
            jwks: Bytes::from_static(br#"{"keys":[]}"#),
            etag: Bytes::from_static(b"\"empty\""),
            fingerprint: String::new(),
            id_token: None,
            id_token_verifiers: Arc::default(),
        }
    }
}

/// The current [`KeySet`], swapped whole when the keys change.
pub struct KeyStore {
    current: RwLock<Arc<KeySet>>,
    sealer: Sealer,
    cache_control: Bytes,
}

type KeyRow = (String, String, String, Vec<u8>, Value, Option<OffsetDateTime>);

impl KeyStore {
    /// An empty store; [`KeyStore::reload`] fills it. The JWKS may be cached for `jwks_max_age`.
    pub fn new(sealer: Sealer, jwks_max_age: std::time::Duration) -> Self {
        let cache_control = Bytes::from(format!("public, max-age={}", jwks_max_age.as_secs()));
        Self { current: RwLock::new(Arc::new(KeySet::empty())), sealer, cache_control }
    }

    /// `Cache-Control` of the JWKS response (`public, max-age=<seconds>`), computed once.
    pub fn cache_control(&self) -> Bytes {
        self.cache_control.clone()
    }

    /// The current key set.
    pub fn get(&self) -> Arc<KeySet> {
        self.current.read().map(|g| Arc::clone(&g)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Rebuilds the key set from Postgres when the table changed (or always, with `force`).
    pub async fn reload(&self, db: &PgPool, now: OffsetDateTime, force: bool) -> Result<bool> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, alg, state, private_key_enc, public_jwk, publish_until FROM signing_keys
             WHERE state IN ('next', 'active') OR (state = 'retired' AND publish_until > $1)
             ORDER BY CASE state WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, created_at DESC",
        )
        .bind(now)
        .fetch_all(db)
        .await?;
        let id_keys = id_token_key::load(db, now).await?;
        let mut fingerprint = rows.iter().map(|r| format!("{}:{};", r.0, r.2)).collect::<String>();
        for (kid, state, _, _) in &id_keys {
            fingerprint.push_str(&format!("id:{kid}:{state};"));
        }
        if !force && fingerprint == self.get().fingerprint {
            return Ok(false);
        }
        let set = self.build(rows, id_keys, fingerprint)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(set);
        }
        Ok(true)
    }

    /// Removes a key at once (revocation seen before the table reload).
    pub fn forget(&self, kid: &str) {
        let cur = self.get();
        // Rebuild the JWKS without it; the next reload makes it exact. A next key (of either kind)
        // is published without verifying anything yet: the JWKS is where it shows.
        let jwks: Value = serde_json::from_slice(&cur.jwks).unwrap_or(Value::Null);
        let published = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let keys: Vec<Value> =
            published.iter().filter(|k| k.get("kid").and_then(Value::as_str) != Some(kid)).cloned().collect();
        if keys.len() == published.len()
            && !cur.verifiers.contains_key(kid)
            && !cur.id_token_verifiers.contains_key(kid)
        {
            return;
        }
        let (body, etag) = jwks_body(&keys);
        let verifiers = cur
            .verifiers
            .iter()
            .filter(|(k, _)| k.as_str() != kid)
            .map(|(k, v)| (k.clone(), Verifier { alg: v.alg, key: v.key.clone() }))
            .collect();
        let active = cur.active.clone().filter(|a| a.kid != kid);
        let id_token = cur.id_token.clone().filter(|a| a.kid != kid);
        let id_token_verifiers = Arc::new(
            cur.id_token_verifiers
                .iter()
                .filter(|(k, _)| k.as_str() != kid)
                .map(|(k, v)| (k.clone(), Verifier { alg: v.alg, key: v.key.clone() }))
                .collect(),
        );
        if let Ok(mut w) = self.current.write() {
            *w = Arc::new(KeySet {
                active,
                verifiers,
                jwks: body,
                etag,
                fingerprint: "stale".into(),
                id_token,
                id_token_verifiers,
            });
        }
    }

    fn build(&self, rows: Vec<KeyRow>, id_keys: Vec<id_token_key::IdKeyRow>, fingerprint: String) -> Result<KeySet> {
        let mut verifiers = HashMap::new();
        let mut public = Vec::new();
        let mut active = None;
        for (kid, alg, state, sealed, jwk, _) in rows {
            let Some(alg) = SigningAlg::parse(&alg) else {
                continue;
            };
            let (jalg, key) = material::verifier(alg, &jwk)?;
            verifiers.insert(kid.clone(), Verifier { alg: jalg, key });
            public.push(jwk);
            if state == "active" {
                active = Some(Arc::new(self.signer(kid, alg, &sealed, "at+jwt")?));
            }
        }
        let (mut id_token, mut id_token_verifiers) = (None, HashMap::new());
        for (kid, state, sealed, jwk) in id_keys {
            let (alg, key) = material::verifier(SigningAlg::Rs256, &jwk)?;
            match state.as_str() {
                "active" => {
                    id_token = Some(Arc::new(self.signer(kid.clone(), SigningAlg::Rs256, &sealed, "JWT")?));
                    id_token_verifiers.insert(kid, Verifier { alg, key });
                }
                // A next key has signed nothing yet: published, never a hint's key.
                "next" => {}
                _ => {
                    id_token_verifiers.insert(kid, Verifier { alg, key });
                }
            }
            public.push(jwk);
        }
        let (jwks, etag) = jwks_body(&public);
        let id_token_verifiers = Arc::new(id_token_verifiers);
        Ok(KeySet { active, verifiers, jwks, etag, fingerprint, id_token, id_token_verifiers })
    }

    /// Opens a sealed private key and precomputes its JWS header (`typ` as given).
    fn signer(&self, kid: String, alg: SigningAlg, sealed: &[u8], typ: &str) -> Result<ActiveKey> {
        let der = self.sealer.open(kid.as_bytes(), sealed).map(|o| o.plaintext).ok_or_else(|| {
            crate::error::Error::Internal(format!(
                "signing key {kid} cannot be decrypted: is TESSERA_MASTER_KEY (or TESSERA_MASTER_KEY_PREVIOUS) the one it was sealed with?"
            ))
        })?;
        let signer = Signer::from_pkcs8(alg, &der)?;
        let header = format!(r#"{{"alg":"{}","kid":"{}","typ":"{typ}"}}"#, alg.as_str(), kid);
        Ok(ActiveKey {
            kid,
            alg,
            header_b64: base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header),
            signer,
        })
    }
}

/// The kid of a live signing key that `sealer` cannot open, if any: checked at start, before
/// anything is written, because a process started with the wrong master key would otherwise write
/// (bootstrap client, new keys) and only then fail. `None` for a new database.
pub async fn unreadable_key(db: &PgPool, sealer: &Sealer) -> Result<Option<String>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('signing_keys') IS NOT NULL").fetch_one(db).await?;
    if !exists {
        return Ok(None);
    }
    let row: Option<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT kid, private_key_enc FROM signing_keys WHERE state IN ('active', 'next') ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(kid, sealed)| sealer.open(kid.as_bytes(), &sealed).is_none().then_some(kid)))
}

fn jwks_body(keys: &[Value]) -> (Bytes, Bytes) {
    let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    // Quotes and hex digits only: always a valid header value.
    let etag = Bytes::from(format!("\"{}\"", hex::encode(&digest.as_ref()[..16])));
    (Bytes::from(body), etag)
}
