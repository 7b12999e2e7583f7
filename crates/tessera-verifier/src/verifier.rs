//! [`Verifier`]: the one handle a resource service keeps.

use std::{net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{
    apikey::ApiKeys,
    client::Tessera,
    config::{Builder, Settings},
    follow::{self, Sinks},
    jwks::Jwks,
    revoked::Revoked,
    token::TokenValidator,
    Error, Principal, Rejection,
};

/// Checks Tessera access tokens and API keys inside a resource service, and follows Tessera's
/// revocations so that a revoked token, family, client, user, signing key or API key is refused
/// within a second.
///
/// Cheap to clone (one `Arc`); every clone shares the caches and the background follower, which
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    tokens: TokenValidator,
    keys: Arc<ApiKeys>,
    revoked: Arc<Revoked>,
    jwks: Arc<Jwks>,
    /// Dropped with the verifier: the follower then stops.
    _closed: watch::Sender<()>,
}

/// How current the verifier is (for health checks and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The last revocation `seq` applied.
    pub applied_seq: i64,
    /// How long the revocation stream has been down (zero while connected).
    pub stream_down_for: Duration,
    /// Whether credentials are refused for staleness right now (fail closed).
    pub failing_closed: bool,
    /// How many times the JWKS has been fetched.
    pub jwks_fetches: u64,
    /// How many times Tessera refused the verifier's own token on the stream (its client was
    /// disabled, or a renewal came too late: it should stay 0).
    pub stream_token_refusals: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuer", &self.inner.settings.issuer).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts building a verifier for tokens issued by `issuer` (Tessera's `TESSERA_ISSUER`).
    pub fn builder(issuer: &str) -> Builder {
        Builder::new(issuer)
    }

    pub(crate) async fn start(settings: Settings, http: reqwest::Client) -> Result<Self, Error> {
        let settings = Arc::new(settings);
        let tessera = Arc::new(Tessera::discover(&settings, http.clone()).await?);
        let jwks = Jwks::load(tessera.discovery.jwks_uri.clone(), http, Arc::clone(&settings)).await?;
        // Fail early on bad credentials rather than at the first API key.
        tessera.token().await?;
        let revoked = Arc::new(Revoked::new());
        let keys = Arc::new(ApiKeys::new(Arc::clone(&tessera), settings.api_key_cache_ttl));
        let sinks = Sinks { tessera, revoked: Arc::clone(&revoked), jwks: Arc::clone(&jwks), keys: Arc::clone(&keys) };
        // Everything revoked before this process started, then the stream from there.
        sinks.catch_up().await?;
        let (closed, watch) = watch::channel(());
        tokio::spawn(follow::run(sinks, watch));
        let tokens = TokenValidator::new(Arc::clone(&jwks), Arc::clone(&revoked), settings.leeway);
        Ok(Self { inner: Arc::new(Inner { settings, tokens, keys, revoked, jwks, _closed: closed }) })
    }

    /// Verifies an RFC 9068 access token.
    ///
    /// # Errors
    /// [`Rejection::Invalid`] (not a JWT, `typ` not `at+jwt`, unknown `kid`, `alg` not the key's,
    /// bad signature, wrong `iss`/`aud`, `nbf` in the future), [`Rejection::Expired`],
    /// [`Rejection::Revoked`], or [`Rejection::Unavailable`] when failing closed.
    pub async fn verify_access_token(&self, token: &str) -> Result<Arc<Principal>, Rejection> {
        self.current()?;
        self.inner.tokens.validate(token).await
    }

    /// Verifies an API key presented from `ip` (the end user's address, for the key's allowed
    /// addresses and Tessera's statistics; `None` for the service's own).
    ///
    /// # Errors
    /// [`Rejection::Invalid`] for a key with a bad checksum (decided locally) or one Tessera does
    /// not accept, [`Rejection::Expired`], [`Rejection::Revoked`], [`Rejection::Limited`], or
    /// [`Rejection::Unavailable`] when Tessera cannot be asked.
    pub async fn verify_api_key(&self, key: &str, ip: Option<IpAddr>) -> Result<Arc<Principal>, Rejection> {
        let fresh = self.current().is_ok() && self.inner.revoked.down_for() < self.inner.settings.max_staleness;
        self.inner.keys.verify(key, ip, fresh).await
    }

    /// Verifies whatever an `Authorization` header carries: `Bearer <access token>` or
    /// `Bearer <API key>` (keys start with `tsk_`).
    ///
    /// # Errors
    /// [`Rejection::Missing`] for no header or another scheme, [`Rejection::Malformed`] for a
    /// Bearer header that is not one token (RFC 6750 §2.1), and the errors of
    /// [`Verifier::verify_access_token`] and [`Verifier::verify_api_key`].
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        ip: Option<IpAddr>,
    ) -> Result<Arc<Principal>, Rejection> {
        let credential = bearer(authorization.ok_or(Rejection::Missing)?)?;
        if credential.starts_with("tsk_") {
            self.verify_api_key(credential, ip).await
        } else {
            self.verify_access_token(credential).await
        }
    }

    /// The realm of this verifier's `WWW-Authenticate` challenges.
    pub fn realm(&self) -> &str {
        &self.inner.settings.realm
    }

    /// How current the verifier is.
    pub fn status(&self) -> Status {
        Status {
            applied_seq: self.inner.revoked.applied_seq(),
            stream_down_for: self.inner.revoked.down_for(),
            failing_closed: self.current().is_err(),
            jwks_fetches: self.inner.jwks.fetches(),
            stream_token_refusals: self.inner.revoked.refusals(),
        }
    }

    /// Fails closed when revocations have not been heard for longer than allowed.
    fn current(&self) -> Result<(), Rejection> {
        let s = &self.inner.settings;
        if s.fail_open || self.inner.revoked.down_for() <= s.max_staleness {
            return Ok(());
        }
        Err(Rejection::Unavailable)
    }
}

/// The token of an `Authorization` header by RFC 6750 §2.1 (`Bearer` in any case, one or more
/// spaces, one b64token).
fn bearer(value: &[u8]) -> Result<&str, Rejection> {
    let value = std::str::from_utf8(value).map_err(|_| Rejection::Malformed)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::Missing);
    }
    let token = rest.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if ok {
        Ok(token)
    } else {
        Err(Rejection::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers_are_read_per_rfc_6750() {
        assert_eq!(bearer(b"Bearer abc.def"), Ok("abc.def"));
        assert_eq!(bearer(b"bearer   tsk_x="), Ok("tsk_x="));
        assert_eq!(bearer(b"Basic abc"), Err(Rejection::Missing));
        assert_eq!(bearer(b"Bearer"), Err(Rejection::Malformed));
        assert_eq!(bearer(b"Bearer a b"), Err(Rejection::Malformed));
    }
}
