//! [`Builder`]: the settings of a [`Verifier`](crate::Verifier), checked once at build.

use std::{fmt, time::Duration};

use crate::{Error, Verifier};

/// Largest clock leeway accepted for `exp`/`nbf` (RFC 9068 leaves it to the verifier; Tessera's
/// contract allows at most 60 s).
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);
/// Least time between two JWKS fetches triggered by an unknown `kid`.
pub const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(10);
/// Longest time an API-key answer is cached.
pub const MAX_API_KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// A client secret; `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct ClientSecret(pub(crate) String);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The settings a [`Verifier`] runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Tessera's issuer URL, without a trailing slash (the `iss` of its tokens).
    pub issuer: String,
    /// The `aud` a token must name to be accepted here.
    pub audience: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub leeway: Duration,
    pub max_staleness: Duration,
    pub fail_open: bool,
    pub api_key_cache_ttl: Duration,
    pub realm: String,
    pub jwks_cooldown: Duration,
}

/// Builds a [`Verifier`]: `Verifier::builder(issuer).client_credentials(id, secret).build().await`.
///
/// The client needs scopes `revocations:read` (to follow revocations) and `keys:verify` (to check
/// API keys).
#[derive(Debug)]
#[must_use]
pub struct Builder {
    issuer: String,
    audience: Option<String>,
    client: Option<(String, ClientSecret)>,
    leeway: Duration,
    max_staleness: Duration,
    fail_open: bool,
    api_key_cache_ttl: Duration,
    realm: String,
    http: Option<reqwest::Client>,
    jwks_cooldown: Duration,
}

impl Builder {
    pub(crate) fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: None,
            client: None,
            leeway: Duration::from_secs(5),
            max_staleness: Duration::from_secs(30),
            fail_open: false,
            api_key_cache_ttl: Duration::from_secs(5),
            realm: "tessera".to_owned(),
            http: None,
            jwks_cooldown: JWKS_REFETCH_COOLDOWN,
        }
    }

    /// The confidential client the verifier authenticates as (client credentials grant) to follow
    /// `/v1/revocations/stream` and call `/v1/keys/verify`. Required.
    pub fn client_credentials(mut self, client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        self.client = Some((client_id.into(), ClientSecret(client_secret.into())));
        self
    }

    /// The audience a token must name (RFC 9068 §4: `aud`). Default: the issuer, which is what
    /// Tessera puts in tokens of clients without an audience of their own.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock skew tolerated on `exp` and `nbf`, at most [`MAX_LEEWAY`]. Default 5 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long the revocation stream may be down before the verifier stops trusting what it
    /// knows: it then refuses every credential (fail closed, the default) or, with
    /// [`Builder::fail_open`], accepts what verifies locally. Default 30 s.
    pub fn max_staleness(mut self, bound: Duration) -> Self {
        self.max_staleness = bound;
        self
    }

    /// Accept locally valid tokens (and cached API-key answers) even when revocations have not
    /// been heard for longer than [`Builder::max_staleness`]. Default: fail closed.
    pub fn fail_open(mut self, open: bool) -> Self {
        self.fail_open = open;
        self
    }

    /// How long an API-key answer from `/v1/keys/verify` is reused, at most
    /// [`MAX_API_KEY_CACHE_TTL`]; `0` disables the cache. Default 5 s. Revocations and changes of a
    /// key drop its answers at once.
    pub fn api_key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.api_key_cache_ttl = ttl;
        self
    }

    /// The realm named in `WWW-Authenticate` challenges. Default `tessera`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The HTTP client to reach Tessera with (timeouts, proxies, root certificates). Default: a
    /// rustls client with a 10 s connect timeout.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Least time between JWKS fetches caused by an unknown `kid`; default and maximum 10 s
    /// ([`JWKS_REFETCH_COOLDOWN`]). Shorter only helps tests.
    pub fn jwks_refetch_cooldown(mut self, cooldown: Duration) -> Self {
        self.jwks_cooldown = cooldown.min(JWKS_REFETCH_COOLDOWN);
        self
    }

    /// Loads discovery and the JWKS, catches up with every revocation Tessera keeps, starts
    /// following the revocation stream in the background (on the current Tokio runtime), and
    /// returns the verifier.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing client or an out-of-range setting; [`Error::Http`] or
    /// [`Error::Metadata`] when discovery, the JWKS or the revocation log cannot be loaded;
    /// [`Error::Credentials`] when the client credentials are refused.
    pub async fn build(self) -> Result<Verifier, Error> {
        let (settings, http) = self.settings()?;
        Verifier::start(settings, http).await
    }

    fn settings(self) -> Result<(Settings, reqwest::Client), Error> {
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            return Err(Error::Config(format!("issuer: {:?} is not an http(s) URL", self.issuer)));
        }
        let Some((client_id, client_secret)) = self.client else {
            return Err(Error::Config("client_credentials: a client id and secret are required".into()));
        };
        if self.leeway > MAX_LEEWAY {
            return Err(Error::Config("leeway: at most 60 s".into()));
        }
        if self.api_key_cache_ttl > MAX_API_KEY_CACHE_TTL {
            return Err(Error::Config("api_key_cache_ttl: at most 10 s".into()));
        }
        if self.max_staleness.is_zero() {
            return Err(Error::Config("max_staleness: must be more than 0".into()));
        }
        let http = match self.http {
            Some(h) => h,
            None => reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| Error::Config(format!("http client: {e}")))?,
        };
        let settings = Settings {
            audience: self.audience.unwrap_or_else(|| self.issuer.clone()),
            issuer: self.issuer,
            client_id,
            client_secret,
            leeway: self.leeway,
            max_staleness: self.max_staleness,
            fail_open: self.fail_open,
            api_key_cache_ttl: self.api_key_cache_ttl,
            realm: self.realm,
            jwks_cooldown: self.jwks_cooldown,
        };
        Ok((settings, http))
    }
}
