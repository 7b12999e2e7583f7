//! Tokens: access-token issuance and verification, grants, refresh families, introspection, revocation.

pub mod code;
pub mod grants;
pub mod id_token;
pub mod introspect;
pub mod jwt;
pub mod refresh;
pub mod retry;
pub mod revoke;
mod service;

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;
use serde::Serialize;
use uuid::Uuid;

use crate::{clients::Client, error::Error};

pub use jwt::{AccessClaims, Audience, TokenError};
pub use service::{TokenRequest, Tokens};

/// A successful `/oauth/token` answer. `Debug` shows neither token.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "access_token": "eyJhbGciOiJFUzI1NiIsImtpZCI6Ii4uLiIsInR5cCI6ImF0K2p3dCJ9...",
    "token_type": "Bearer",
    "expires_in": 600,
    "scope": "keys:read keys:write",
    "refresh_token": "tsr_EXAMPLELI1GFdECpvQ3DfmojkjSoFfx3Z67os6pPNlu"
}))]
pub struct TokenResponse {
    /// The RFC 9068 JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Refresh token (`tsr_…`), for the password, refresh and authorization-code grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// OpenID Connect ID token (RS256, `typ: JWT`), when the authorization code's scope had `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// What an access token is about to say.
pub struct Grant<'a> {
    /// The client it is issued to.
    pub client: &'a Client,
    /// Subject.
    pub sub: String,
    /// Granted scopes.
    pub scopes: &'a [String],
    /// Audience.
    pub aud: Audience,
    /// Refresh family, when issued from a login.
    pub sid: Option<Uuid>,
}

impl Tokens {
    /// Signs an access token for `grant` with the active key.
    pub fn issue_access_token(&self, grant: &Grant<'_>) -> Result<(String, u64), Error> {
        let ttl = grant
            .client
            .access_token_ttl
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(self.config.access_token_ttl.as_secs());
        let now = self.clock.unix();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: grant.sub.clone(),
            aud: grant.aud.clone(),
            exp: now + ttl as i64,
            iat: now,
            jti: crate::secrets::token_id().to_string(),
            client_id: grant.client.client_id.clone(),
            scope: grant.scopes.join(" "),
            sid: grant.sid.map(|s| s.to_string()),
        };
        let keys = self.signing.keys();
        let active = keys.active.as_ref().ok_or(Error::Unavailable("no active signing key loaded yet"))?;
        Ok((jwt::sign(active, &claims)?, ttl))
    }

    /// The audience of a new token: the requested one if the client may ask for it, else the client's
    /// configured audience, else this service itself.
    pub fn resolve_audience(&self, client: &Client, requested: Option<&str>) -> Result<Audience, &'static str> {
        let configured = client.audiences();
        match requested {
            Some(r) if r == self.config.issuer || configured.iter().any(|a| a == r) => Ok(Audience::One(r.to_owned())),
            Some(_) => Err("the requested audience is not allowed for this client"),
            None if configured.len() == 1 => Ok(Audience::One(configured[0].clone())),
            None if configured.len() > 1 => Ok(Audience::Many(configured)),
            None => Ok(Audience::One(self.config.issuer.clone())),
        }
    }

    /// Checks a presented access token: signature, expiry, and every revocation this instance knows of.
    pub fn validate_access_token(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let keys = self.signing.keys();
        let now = self.clock.unix();
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let claims = match self.verified_tokens.0.get(&key) {
            // The key that signed it must still be published (a revoked key drops out at once).
            Some(hit) if keys.verifiers.contains_key(&*hit.1) => {
                if hit.0.exp <= now {
                    return Err(TokenError::Expired);
                }
                hit.0
            }
            Some(_) => return Err(TokenError::UnknownKey),
            None => {
                let claims = Arc::new(jwt::verify(&keys, token, &self.config.issuer, now)?);
                let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid).unwrap_or_default();
                self.verified_tokens.0.insert(key, (Arc::clone(&claims), kid.into()));
                claims
            }
        };
        let revoked = &self.revoked;
        let jti_revoked = Uuid::parse_str(&claims.jti).map(|j| revoked.jti_revoked(&j)).unwrap_or(false);
        let family_revoked =
            claims.sid.as_deref().and_then(|s| Uuid::parse_str(s).ok()).is_some_and(|s| revoked.family_revoked(&s));
        if jti_revoked
            || family_revoked
            || revoked.client_revoked(&claims.client_id)
            || revoked.user_revoked(&claims.sub)
        {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// Access tokens whose signature already verified, by SHA-256 of the token, so a resource service
/// calling with the same bearer token pays the ECDSA verification once. Expiry, the signing key
/// and every revocation are still checked on each use.
pub struct VerifiedTokens(Cache<[u8; 32], (Arc<AccessClaims>, Arc<str>)>);

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self(Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(300)).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_token_response_shows_no_token() {
        let r = TokenResponse {
            access_token: "eyJ.secret-access.sig".into(),
            token_type: "Bearer",
            expires_in: 600,
            scope: "a b".into(),
            refresh_token: Some("tsr_secret-refresh".into()),
            id_token: None,
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret-access") && !shown.contains("secret-refresh"), "{shown}");
        assert!(shown.contains("600") && shown.contains("a b"));
    }
}
