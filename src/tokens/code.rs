//! Authorization codes (RFC 6749 §4.1) with PKCE (RFC 7636, S256 only). A code is a random
//! `tsc_` string stored only as a keyed hash; it lives 60 s, is bound to the client, the redirect
//! URI and the challenge, and is spent at most once: the spending `UPDATE` and the refresh family
//! it starts commit together, so a second use — however close — finds the family to revoke, with
//! every access token the first use issued (they carry its `sid`; RFC 6749 §4.1.2).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    clients::Client,
    error::{Error, GrantError},
    scopes,
    secrets::{self, keyed_hash},
    tokens::{id_token::IdClaims, Grant, TokenResponse, Tokens},
};

/// Prefix of every authorization code.
pub const PREFIX: &str = "tsc_";
/// Random base62 characters after the prefix (≈ 256 bits).
const BODY_LEN: usize = 43;
/// How long a code may wait to be exchanged.
pub const CODE_TTL: time::Duration = time::Duration::seconds(60);

/// What a code is issued for: everything the token request must match, and what the tokens say.
pub struct NewCode<'a> {
    /// The client that asked.
    pub client_id: &'a str,
    /// The signed-in user.
    pub user_id: Uuid,
    /// The browser session that signed them in.
    pub session_id: Uuid,
    /// The redirect URI exactly as the authorization request gave it.
    pub redirect_uri: &'a str,
    /// The PKCE S256 challenge (base64url of SHA-256 of the verifier).
    pub code_challenge: &'a str,
    /// Scopes granted.
    pub scopes: &'a [String],
    /// OpenID Connect `nonce`, echoed in the ID token.
    pub nonce: Option<&'a str>,
    /// When the user entered their password.
    pub auth_time: OffsetDateTime,
}

/// Whether `s` is a PKCE code verifier or S256 challenge: 43 to 128 characters of
/// `[A-Za-z0-9-._~]` (RFC 7636 §4.1, §4.2).
pub fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A spent code's row: the user, the binding, and what the tokens will say.
type Spent = (Uuid, String, String, Vec<String>, Option<String>, OffsetDateTime);

const INVALID: GrantError = GrantError::InvalidGrant("the authorization code is invalid, expired or already used");

impl Tokens {
    /// Issues a code for `new` and returns it (shown once, to the browser's redirect).
    pub async fn issue_code(&self, new: &NewCode<'_>) -> Result<String, Error> {
        let code = format!("{PREFIX}{}", secrets::random_base62(BODY_LEN));
        let hash = keyed_hash(&self.code_hmac, code.as_bytes());
        let now = self.clock.now();
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, session_id, redirect_uri, code_challenge,
                 scopes, nonce, auth_time, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&hash[..])
        .bind(new.client_id)
        .bind(new.user_id)
        .bind(new.session_id)
        .bind(new.redirect_uri)
        .bind(new.code_challenge)
        .bind(new.scopes)
        .bind(new.nonce)
        .bind(new.auth_time)
        .bind(now + CODE_TTL)
        .execute(&self.db)
        .await?;
        Ok(code)
    }

    /// `grant_type=authorization_code` for an authenticated `client` (RFC 6749 §4.1.3, RFC 7636 §4.6).
    ///
    /// # Errors
    /// `unauthorized_client` for a client without the grant; `invalid_grant` for an unknown,
    /// expired or spent code, a code of another client, another `redirect_uri`, or a verifier that
    /// does not match the challenge. A spent code presented again revokes the family its first use
    /// started.
    pub async fn redeem_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenResponse, GrantError> {
        if !client.allows_grant("authorization_code") {
            return Err(GrantError::UnauthorizedClient("this client may not use the authorization_code grant"));
        }
        if !is_well_formed(code) {
            return Err(INVALID);
        }
        if !is_pkce_string(verifier) {
            return Err(GrantError::InvalidGrant("the code_verifier does not match the code_challenge"));
        }
        let hash = keyed_hash(&self.code_hmac, code.as_bytes());
        let now = self.clock.now();
        let family = Uuid::now_v7();
        let mut tx = self.db.begin().await?;
        // Spends the code only if it is live, unspent and this client's; a concurrent second use
        // waits on the row lock and then finds it spent, with the family already recorded.
        let spent: Option<Spent> = sqlx::query_as(
            "UPDATE authorization_codes SET used_at = $2, family_id = $3
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 AND client_id = $4
             RETURNING user_id, redirect_uri, code_challenge, scopes, nonce, auth_time",
        )
        .bind(&hash[..])
        .bind(now)
        .bind(family)
        .bind(&client.client_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, bound_uri, challenge, code_scopes, nonce, auth_time)) = spent else {
            drop(tx);
            return Err(self.refuse_code(client, &hash, now).await?);
        };
        // A mismatch leaves the code unspent (the transaction rolls back): it proves only that the
        // caller lacks the verifier, and must not let them burn the rightful client's code.
        let computed = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
        if !secrets::constant_time_eq(computed.as_bytes(), challenge.as_bytes()) {
            return Err(GrantError::InvalidGrant("the code_verifier does not match the code_challenge"));
        }
        if bound_uri != redirect_uri {
            return Err(GrantError::InvalidGrant("redirect_uri differs from the authorization request's"));
        }
        let user: Option<Vec<String>> =
            sqlx::query_scalar("SELECT scopes FROM users WHERE id = $1 AND deleted_at IS NULL")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(user_scopes) = user else {
            return Err(INVALID);
        };
        // The user's and the client's scopes may have narrowed in the last minute.
        let granted: Vec<String> = code_scopes
            .into_iter()
            .filter(|s| (user_scopes.contains(s) || scopes::is_oidc(s)) && client.scopes.contains(s))
            .collect();
        let refresh = self.start_family_on(&mut tx, family, client, user_id, &granted).await?;
        tx.commit().await?;

        let aud = self.resolve_audience(client, None).map_err(|e| GrantError::InvalidRequest(e.into()))?;
        let grant = Grant { client, sub: user_id.to_string(), scopes: &granted, aud, sid: Some(family) };
        let (access_token, expires_in) = self.issue_access_token(&grant)?;
        let id_token = if granted.iter().any(|s| s == "openid") {
            let iat = self.clock.unix();
            let claims = IdClaims {
                iss: self.config.issuer.clone(),
                sub: user_id.to_string(),
                aud: client.client_id.clone(),
                exp: iat + expires_in as i64,
                iat,
                auth_time: auth_time.unix_timestamp(),
                sid: family.to_string(),
                nonce,
            };
            Some(super::id_token::sign(&self.signing.keys(), &claims)?)
        } else {
            None
        };
        crate::metrics::token_issued("authorization_code");
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            scope: granted.join(" "),
            // A refresh token only for a client that could use it (as for the password grant).
            refresh_token: client.allows_grant("refresh_token").then_some(refresh),
            id_token,
        })
    }

    /// Why a code could not be spent; a second use of a spent code revokes what the first issued.
    async fn refuse_code(&self, client: &Client, hash: &[u8; 32], now: OffsetDateTime) -> Result<GrantError, Error> {
        let found: Option<(Option<OffsetDateTime>, Option<Uuid>, String)> =
            sqlx::query_as("SELECT used_at, family_id, client_id FROM authorization_codes WHERE code_hash = $1")
                .bind(&hash[..])
                .fetch_optional(&self.db)
                .await?;
        if let Some((Some(_), Some(family), owner)) = found {
            if owner == client.client_id {
                tracing::warn!(family_id = %family, client_id = %owner, "authorization code used twice: revoking what it issued");
                self.revoke_family(family, now, "authorization code reuse").await?;
            }
        }
        Ok(INVALID)
    }
}

/// Whether `s` looks like one of our codes.
pub fn is_well_formed(s: &str) -> bool {
    s.len() == PREFIX.len() + BODY_LEN && s.starts_with(PREFIX) && secrets::is_base62(&s[PREFIX.len()..])
}
