//! The token service: the three OAuth endpoints as domain verbs (RFC 6749 §4.4, §4.3 and §6
//! grants; RFC 7009 revocation; RFC 7662 introspection), and validation of Tessera's own access
//! tokens for `/v1`.

use std::{net::IpAddr, sync::Arc};

use ring::hmac;
use sqlx::PgPool;

use super::{introspect::Introspection, TokenResponse, VerifiedTokens};
use crate::{
    clients::{Clients, Credentials, GRANT_TYPES},
    clock::Clock,
    config::Config,
    error::GrantError,
    revocation::RevokedSet,
    secrets::Keyring,
    signing::Signing,
    users::Users,
};

/// Issues, rotates, revokes, introspects and validates tokens.
#[derive(Clone)]
pub struct Tokens {
    pub(super) db: PgPool,
    pub(super) clock: Clock,
    pub(super) config: Arc<Config>,
    /// Keys of the keyed hash of refresh tokens (HMAC-SHA-256; plaintexts are never stored).
    pub(super) refresh_hmac: Keyring,
    /// Derives a refresh token's successor from it (see [`super::retry`]).
    pub(super) refresh_successor: hmac::Key,
    /// Keyed hash of authorization codes.
    pub(super) code_hmac: hmac::Key,
    pub(super) signing: Signing,
    pub(super) revoked: Arc<RevokedSet>,
    pub(super) verified_tokens: Arc<VerifiedTokens>,
    pub(super) clients: Clients,
    pub(super) users: Users,
}

/// A `/oauth/token` request as the form gives it (RFC 6749 §4.3.2, §4.4.2, §6).
pub struct TokenRequest<'a> {
    /// `grant_type`.
    pub grant_type: &'a str,
    /// `scope`, space-separated.
    pub scope: Option<&'a str>,
    /// `audience` (client credentials).
    pub audience: Option<&'a str>,
    /// `username` (password grant).
    pub username: Option<&'a str>,
    /// `password` (password grant); `Debug` does not show it.
    pub password: Option<&'a str>,
    /// `refresh_token` (refresh grant).
    pub refresh_token: Option<&'a str>,
    /// `code` (authorization-code grant).
    pub code: Option<&'a str>,
    /// `redirect_uri` (authorization-code grant).
    pub redirect_uri: Option<&'a str>,
    /// `code_verifier` (authorization-code grant, RFC 7636).
    pub code_verifier: Option<&'a str>,
}

impl std::fmt::Debug for TokenRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "[redacted]"))
            .field("refresh_token", &self.refresh_token.map(|_| "[redacted]"))
            .field("code", &self.code.map(|_| "[redacted]"))
            .field("redirect_uri", &self.redirect_uri)
            .field("code_verifier", &self.code_verifier.map(|_| "[redacted]"))
            .finish()
    }
}

fn require<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, GrantError> {
    value.ok_or_else(|| GrantError::InvalidRequest(format!("missing parameter {name:?}")))
}

impl Tokens {
    /// A service signing with `signing`, hashing refresh tokens under `refresh_hmac`, deriving
    /// their successors under `refresh_successor` and hashing authorization codes under `code_hmac`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: PgPool,
        clock: Clock,
        config: Arc<Config>,
        (refresh_hmac, refresh_successor, code_hmac): (Keyring, hmac::Key, hmac::Key),
        signing: Signing,
        revoked: Arc<RevokedSet>,
        clients: Clients,
        users: Users,
    ) -> Self {
        let verified_tokens = Arc::new(VerifiedTokens::default());
        Self {
            db,
            clock,
            config,
            refresh_hmac,
            refresh_successor,
            code_hmac,
            signing,
            revoked,
            verified_tokens,
            clients,
            users,
        }
    }

    /// `/oauth/token`: authenticates the client at `source`, then runs the grant.
    ///
    /// # Errors
    /// The RFC 6749 §5.2 outcome: `unsupported_grant_type` is decided before the client is
    /// authenticated, a missing parameter after.
    pub async fn token(
        &self,
        creds: &Credentials,
        req: &TokenRequest<'_>,
        source: IpAddr,
    ) -> Result<TokenResponse, GrantError> {
        if !GRANT_TYPES.contains(&req.grant_type) {
            return Err(GrantError::UnsupportedGrantType);
        }
        let login = match req.grant_type {
            "password" => Some((require(req.username, "username")?, require(req.password, "password")?)),
            _ => None,
        };
        let code = match req.grant_type {
            "authorization_code" => Some((
                require(req.code, "code")?,
                require(req.redirect_uri, "redirect_uri")?,
                require(req.code_verifier, "code_verifier")?,
            )),
            _ => None,
        };
        let client = self.clients.authenticate(creds, source).await?;
        if let Some((code, redirect_uri, verifier)) = code {
            return self.redeem_code(&client, code, redirect_uri, verifier).await;
        }
        match (req.grant_type, login) {
            ("client_credentials", _) => self.client_credentials(&client, req.scope, req.audience),
            (_, Some((username, password))) => {
                let user = self.password_user(&client, username, password, source).await?;
                self.password_tokens(&client, &user, req.scope).await
            }
            _ => self.rotate(&client, require(req.refresh_token, "refresh_token")?, req.scope, source).await,
        }
    }

    /// `/oauth/revoke` (RFC 7009): revokes `token` if it belongs to the authenticated client;
    /// anything else succeeds silently.
    pub async fn revoke_token(
        &self,
        creds: &Credentials,
        token: Option<&str>,
        hint: Option<&str>,
        source: IpAddr,
    ) -> Result<(), GrantError> {
        let client = self.clients.authenticate(creds, source).await?;
        self.revoke(&client, require(token, "token")?, hint).await?;
        Ok(())
    }

    /// `/oauth/introspect` (RFC 7662) for a confidential client holding scope `introspect`.
    pub async fn introspect_token(
        &self,
        creds: &Credentials,
        token: Option<&str>,
        source: IpAddr,
    ) -> Result<Introspection, GrantError> {
        let client = self.clients.authenticate(creds, source).await?;
        // RFC 7662 §2.1: the caller must authenticate; a public client presents only an id anyone can copy.
        if client.public {
            return Err(GrantError::InvalidClient);
        }
        if !crate::scopes::allows(client.scopes.iter().map(String::as_str), "introspect") {
            return Err(GrantError::InsufficientScope("this client needs scope introspect"));
        }
        Ok(self.introspect(require(token, "token")?).await?)
    }

    /// The current signing keys (the ID-token key among them).
    pub fn signing_keys(&self) -> std::sync::Arc<crate::signing::KeySet> {
        self.signing.keys()
    }

    /// The issuer tokens are signed for (`iss`), also the audience `/v1` requires.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }
}
