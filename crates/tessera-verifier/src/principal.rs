//! Who a verified credential speaks for: [`Principal`], with the [`Claims`] of an access token or
//! the [`ApiKeyInfo`] of an API key.

use serde::Deserialize;

/// The caller a credential was verified for.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The token's `sub` (a user id, or a client id for client credentials), or the key's owner.
    pub subject: String,
    /// The scopes granted, in the order given.
    pub scopes: Vec<String>,
    /// How the caller authenticated, with everything Tessera said about it.
    pub credential: Credential,
}

/// The verified credential behind a [`Principal`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Credential {
    /// An RFC 9068 access token.
    AccessToken(Claims),
    /// An API key, as `/v1/keys/verify` described it.
    ApiKey(ApiKeyInfo),
}

impl Principal {
    /// Whether the credential carries `scope` (exact match; a resource service's scopes are its own).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The OAuth client the token was issued to (`None` for an API key).
    pub fn client_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::AccessToken(c) => Some(&c.client_id),
            Credential::ApiKey(_) => None,
        }
    }
}

/// The claims of a Tessera access token (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: user id (sign-in grants) or client id (client credentials).
    pub sub: String,
    /// Audiences.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds, when present.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// The sign-in (refresh family) the token descends from, for tokens from a sign-in.
    #[serde(default)]
    pub sid: Option<String>,
}

/// What Tessera said about a valid API key (`POST /v1/keys/verify`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApiKeyInfo {
    /// The key's id (what revocation events name).
    pub key_id: String,
    /// Its owner.
    pub owner: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `live` or `test`.
    #[serde(default)]
    pub environment: String,
    /// When it expires (RFC 3339), if it does.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Its metadata.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// Whether it has been rotated and is in its grace period.
    #[serde(default)]
    pub rotating: bool,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}
