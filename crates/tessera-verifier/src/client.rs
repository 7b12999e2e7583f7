//! Talking to Tessera: discovery (RFC 8414), the verifier's own client-credentials token (RFC 6749
//! §4.4), cached until shortly before it expires, and the revocation log's catch-up pages.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{
    config::{ClientSecret, Settings},
    revoked::Event,
    Error,
};

/// What the verifier needs from the discovery document.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Discovery {
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// Tessera's endpoints and the verifier's credentials.
#[derive(Debug)]
pub(crate) struct Tessera {
    pub http: reqwest::Client,
    pub discovery: Discovery,
    /// `{issuer}/v1/revocations`, `{issuer}/v1/revocations/stream`, `{issuer}/v1/keys/verify`.
    pub revocations_url: String,
    pub stream_url: String,
    pub verify_url: String,
    client_id: String,
    client_secret: ClientSecret,
    token: Mutex<Option<CachedToken>>,
}

/// An access token of the verifier's own, and when to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub value: String,
    /// When a fresh one should be fetched: a quarter of its lifetime (at most 60 s) and a second
    /// before expiry.
    pub renew_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<serde_json::Value>,
    next_after: i64,
}

impl Tessera {
    /// Loads the discovery document of `settings.issuer` and checks it names that issuer.
    pub async fn discover(settings: &Settings, http: reqwest::Client) -> Result<Self, Error> {
        let url = format!("{}/.well-known/oauth-authorization-server", settings.issuer);
        let discovery: Discovery = get_json(&http, &url, None).await?;
        if discovery.issuer.trim_end_matches('/') != settings.issuer {
            return Err(Error::Metadata(format!(
                "discovery names issuer {:?}, expected {:?}",
                discovery.issuer, settings.issuer
            )));
        }
        Ok(Self {
            revocations_url: format!("{}/v1/revocations", settings.issuer),
            stream_url: format!("{}/v1/revocations/stream", settings.issuer),
            verify_url: format!("{}/v1/keys/verify", settings.issuer),
            http,
            discovery,
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            token: Mutex::new(None),
        })
    }

    /// The verifier's access token, fetched anew when the cached one is near its end.
    ///
    /// # Errors
    /// [`Error::Credentials`] when Tessera refuses the client; [`Error::Http`] when it cannot be reached.
    pub async fn token(&self) -> Result<CachedToken, Error> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.clone());
        }
        let url = &self.discovery.token_endpoint;
        let res = self
            .http
            .post(url)
            .basic_auth(&self.client_id, Some(&self.client_secret.0))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| Error::http(url, e))?;
        if res.status().is_client_error() {
            return Err(Error::Credentials(format!("token endpoint answered {}", res.status())));
        }
        if !res.status().is_success() {
            return Err(Error::http(url, format!("status {}", res.status())));
        }
        let body: TokenResponse = res.json().await.map_err(|e| Error::http(url, e))?;
        // A quarter of the lifetime (at most a minute) before expiry, plus a second: `exp` is in
        // whole seconds, so the token may end up to a second sooner than `expires_in` says. Never
        // sooner than half its lifetime, so a very short one is not renewed in a loop.
        let lifetime = Duration::from_secs(body.expires_in);
        let margin = (lifetime / 4).min(Duration::from_secs(60)) + Duration::from_secs(1);
        let usable = lifetime.saturating_sub(margin).max(lifetime / 2);
        let token = CachedToken { value: body.access_token, renew_at: Instant::now() + usable };
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Forgets the cached token (Tessera refused it: revoked, or its key was).
    pub async fn drop_token(&self) {
        *self.token.lock().await = None;
    }

    /// Every kept event after `after`, page by page, and the last `seq` read.
    ///
    /// # Errors
    /// [`Error::Http`] when a page cannot be read.
    pub async fn events_after(&self, mut after: i64) -> Result<(Vec<Event>, i64), Error> {
        let mut all = Vec::new();
        loop {
            let token = self.token().await?;
            let url = format!("{}?after={after}&limit=1000", self.revocations_url);
            let page: Page = get_json(&self.http, &url, Some(&token.value)).await?;
            let n = page.events.len();
            all.extend(page.events.into_iter().filter_map(|v| serde_json::from_value(v).ok()));
            after = page.next_after.max(after);
            if n < 1000 {
                return Ok((all, after));
            }
        }
    }
}

/// GETs `url` (with a bearer token when given) and decodes its JSON.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<T, Error> {
    let mut req = http.get(url).timeout(Duration::from_secs(10));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let res = req.send().await.map_err(|e| Error::http(url, e))?;
    if !res.status().is_success() {
        return Err(Error::http(url, format!("status {}", res.status())));
    }
    res.json().await.map_err(|e| Error::http(url, e))
}
