//! Client authentication for `/oauth/*`: `client_secret_basic`, `client_secret_post`, or a public
//! client's bare `client_id`. Generated secrets are stored as keyed hashes and cost one HMAC to
//! check, as does any secret presented for an unknown client id (see [`super::secret`]).
//! Operator-chosen secrets are Argon2id, run on the bounded [`passwords::Pool`]; that cost is paid
//! once per (client, secret) per few minutes: after a successful check a keyed hash of the pair is
//! remembered; failures are never remembered. Concurrent checks of the same pair share one Argon2
//! run, so a busy client whose entry is cold costs one verification, not one per waiting request.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use moka::{future::Cache as AsyncCache, sync::Cache};
use ring::hmac;
use sqlx::PgPool;

use super::{secret, Client};
use crate::{
    error::{Error, GrantError},
    passwords,
    secrets::{keyed_hash, Keyring, Secret},
    throttle::SourceLimiter,
};

/// Credentials as presented.
#[derive(Debug)]
pub struct Credentials {
    /// Client id.
    pub client_id: String,
    /// Secret, absent for a public client.
    pub secret: Option<Secret>,
}

impl Credentials {
    /// Reads credentials from the `Authorization: Basic` header or the form; both at once is refused.
    ///
    /// `authorization` is the raw value of the `Authorization` header, if any (RFC 6749 §2.3.1:
    /// `Basic` of the form-urlencoded id and secret).
    pub fn from_request(
        authorization: Option<&[u8]>,
        form_id: Option<&str>,
        form_secret: Option<&str>,
    ) -> Result<Self, GrantError> {
        let basic = match authorization {
            None => None,
            Some(v) => {
                let v = std::str::from_utf8(v).map_err(|_| GrantError::InvalidClient)?;
                let (scheme, rest) = v.split_once(' ').ok_or(GrantError::InvalidClient)?;
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err(GrantError::InvalidClient);
                }
                let decoded = STANDARD.decode(rest.trim()).map_err(|_| GrantError::InvalidClient)?;
                let decoded = String::from_utf8(decoded).map_err(|_| GrantError::InvalidClient)?;
                let (id, secret) = decoded.split_once(':').ok_or(GrantError::InvalidClient)?;
                // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
                Some((
                    form_decode(id).ok_or(GrantError::InvalidClient)?,
                    form_decode(secret).ok_or(GrantError::InvalidClient)?,
                ))
            }
        };
        match (basic, form_id, form_secret) {
            (Some(_), _, Some(_)) => Err(GrantError::InvalidRequest(
                "use exactly one client authentication method (client_secret_basic or client_secret_post)".into(),
            )),
            (Some((id, _)), Some(fid), None) if fid != id => {
                Err(GrantError::InvalidRequest("client_id in the body differs from the Authorization header".into()))
            }
            (Some((id, secret)), _, None) => Ok(Self { client_id: id, secret: Some(Secret::new(secret)) }),
            (None, Some(id), secret) => {
                Ok(Self { client_id: id.to_owned(), secret: secret.map(|s| Secret::new(s.to_owned())) })
            }
            (None, None, _) => Err(GrantError::InvalidClient),
        }
    }
}

fn form_decode(s: &str) -> Option<String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(&format!("v={}", s.replace('&', "%26").replace('=', "%3D"))).ok()?;
    pairs.into_iter().next().map(|(_, v)| v)
}

/// Authenticates clients, caching records briefly and successful secret checks for a while.
pub struct ClientAuth {
    /// Known and unknown ids alike (`None`), for a few seconds: a flood of made-up ids costs one
    /// query per id, and a known id answers no faster than an unknown one seen before.
    records: Cache<String, Option<Arc<Client>>>,
    lookups: AtomicU64,
    verified: AsyncCache<[u8; 32], ()>,
    cache_key: hmac::Key,
    secret_key: Keyring,
    argon2: passwords::Pool,
    secret_checks: AtomicU64,
}

/// What an unknown client's secret is compared with: a keyed hash like a generated secret's, so an
/// unknown id costs what a known one does and no Argon2 at all.
const DUMMY_KEYED: &str = "$tessera-hmac-sha256$v1$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Why a coalesced secret check did not succeed; never cached.
#[derive(Debug)]
enum CheckFailed {
    Mismatch,
    Internal(Error),
}

impl ClientAuth {
    /// A new authenticator; `cache_key` keys the success cache, `secret_key` the stored hashes of
    /// generated secrets; Argon2 checks run on `argon2`.
    pub fn new(cache_key: hmac::Key, secret_key: Keyring, argon2: passwords::Pool) -> Self {
        Self {
            records: Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(5)).build(),
            verified: AsyncCache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(300)).build(),
            cache_key,
            secret_key,
            argon2,
            secret_checks: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        }
    }

    /// Client records this instance has read from Postgres.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Argon2 verifications of client secrets this instance has run (dummy checks included).
    pub fn secret_checks(&self) -> u64 {
        self.secret_checks.load(Ordering::Relaxed)
    }

    async fn argon2_verify(&self, source: IpAddr, phc: String, secret: &str) -> Result<bool, Error> {
        self.secret_checks.fetch_add(1, Ordering::Relaxed);
        self.argon2.verify(Some(source), Some(phc), secret.to_owned()).await
    }

    /// Forgets a client at once (disabled on this or another instance).
    pub fn forget(&self, client_id: &str) {
        self.records.invalidate(client_id);
    }

    async fn record(&self, db: &PgPool, client_id: &str) -> Result<Option<Arc<Client>>, Error> {
        if let Some(c) = self.records.get(client_id) {
            return Ok(c);
        }
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let c = super::get(db, client_id).await?.map(Arc::new);
        self.records.insert(client_id.to_owned(), c.clone());
        Ok(c)
    }

    /// Authenticates a caller at `source`; unknown client, disabled client and wrong secret are
    /// indistinguishable. A presented secret is checked only while the source is within its
    /// allowance (`guessing`; else `Failed(Error::TooManyAttempts)`); a wrong one counts against it,
    /// and an Argon2 check holds a slot of it while it runs.
    pub async fn authenticate(
        &self,
        db: &PgPool,
        guessing: &SourceLimiter,
        creds: &Credentials,
        source: IpAddr,
    ) -> Result<Arc<Client>, GrantError> {
        if creds.client_id.len() > 128 || creds.secret.as_ref().is_some_and(|s| s.expose().len() > 512) {
            return Err(GrantError::InvalidClient);
        }
        if creds.secret.is_some() {
            guessing.check(source).await?;
        }
        // Postgres text cannot hold U+0000, so such an id names no client: answer as for any unknown one.
        let client = if creds.client_id.contains('\0') {
            None
        } else {
            self.record(db, &creds.client_id).await?.filter(|c| c.disabled_at.is_none())
        };
        let (client, secret) = match (client, &creds.secret) {
            (Some(c), None) if c.public && c.secret_hash.is_none() => return Ok(c),
            (_, None) => return Err(GrantError::InvalidClient),
            (Some(c), Some(secret)) if !c.public => (c, secret),
            (client, Some(secret)) => {
                // Unknown, disabled or public: the same keyed-hash cost as checking a generated
                // secret, and a counted failure. Records are cached known or not, so only an id's
                // first look-up on an instance can take longer (client ids are not secrets, RFC
                // 6749 §2.2; secrets are what this protects).
                let id = client.as_ref().map_or(creds.client_id.as_str(), |c| c.client_id.as_str());
                let _ = secret::verify_keyed(&self.secret_key, id, secret.expose(), DUMMY_KEYED);
                return Err(count_failure(guessing, source).await);
            }
        };
        let Some(stored) = client.secret_hash.as_deref() else {
            return Err(count_failure(guessing, source).await);
        };
        if secret::is_keyed(stored) {
            if secret::verify_keyed(&self.secret_key, &client.client_id, secret.expose(), stored) {
                return Ok(client);
            }
            return Err(count_failure(guessing, source).await);
        }
        self.argon2_check(guessing, source, &client, stored, secret).await.map(|()| client)
    }

    /// An Argon2-stored secret: remembered successes cost a keyed hash; otherwise one Argon2 run,
    /// shared by concurrent requests with the same pair, while holding a slot of the source's allowance.
    async fn argon2_check(
        &self,
        guessing: &SourceLimiter,
        source: IpAddr,
        client: &Client,
        hash: &str,
        secret: &Secret,
    ) -> Result<(), GrantError> {
        let mut material = Vec::with_capacity(client.client_id.len() + secret.expose().len() + hash.len() + 2);
        material.extend_from_slice(client.client_id.as_bytes());
        material.push(0);
        material.extend_from_slice(secret.expose().as_bytes());
        material.push(0);
        material.extend_from_slice(hash.as_bytes());
        let tag = keyed_hash(&self.cache_key, &material);
        if self.verified.contains_key(&tag) {
            return Ok(());
        }
        let slot = guessing.admit(source).await?;
        // try_get_with runs one check per tag at a time and caches only a success.
        let checked = self
            .verified
            .try_get_with(tag, async {
                match self.argon2_verify(source, hash.to_owned(), secret.expose()).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(CheckFailed::Mismatch),
                    Err(e) => Err(CheckFailed::Internal(e)),
                }
            })
            .await;
        match checked {
            Ok(()) => {
                slot.release().await;
                Ok(())
            }
            // The slot stays taken: a counted failure.
            Err(e) if matches!(*e, CheckFailed::Mismatch) => Err(GrantError::InvalidClient),
            Err(e) => {
                slot.release().await;
                match &*e {
                    CheckFailed::Internal(Error::Saturated(secs)) => Err(GrantError::Failed(Error::Saturated(*secs))),
                    other => Err(Error::Internal(format!("{other:?}")).into()),
                }
            }
        }
    }
}

/// Counts a failed check against `source`: `invalid_client`, or 429 if the allowance ran out meanwhile.
async fn count_failure(guessing: &SourceLimiter, source: IpAddr) -> GrantError {
    match guessing.admit(source).await {
        Ok(slot) => {
            drop(slot);
            GrantError::InvalidClient
        }
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))).into_bytes()
    }

    #[test]
    fn basic_and_post_are_read_and_both_at_once_is_refused() {
        let c = Credentials::from_request(Some(&basic("app", "s%3As")), None, None).unwrap();
        assert_eq!(c.client_id, "app");
        assert_eq!(c.secret.unwrap().expose(), "s:s");
        let c = Credentials::from_request(None, Some("app"), Some("pw")).unwrap();
        assert_eq!(c.secret.unwrap().expose(), "pw");
        let both = Credentials::from_request(Some(&basic("app", "x")), Some("app"), Some("x")).unwrap_err();
        assert!(matches!(both, GrantError::InvalidRequest(_)), "{both:?}");
        let none = Credentials::from_request(None, None, None).unwrap_err();
        assert!(matches!(none, GrantError::InvalidClient), "{none:?}");
    }
}
