//! OpenID Connect ID tokens (OIDC Core §2): RS256 with the ID-token key, header `typ: JWT` — never
//! `at+jwt`, so one can never pass for an access token — and the claims the contract lists.

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

use crate::{error::Error, signing::KeySet, tokens::jwt};

/// The claims of an ID token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdClaims {
    /// Issuer.
    pub iss: String,
    /// The user's id.
    pub sub: String,
    /// The client the token is for.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// When the user last entered their password, unix seconds.
    pub auth_time: i64,
    /// The sign-in's refresh family: the `sid` its access tokens carry too.
    pub sid: String,
    /// The authorization request's `nonce`, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nonce: Option<String>,
}

/// Signs `claims` with the ID-token key.
///
/// # Errors
/// [`Error::Unavailable`] before the key is loaded.
pub fn sign(keys: &KeySet, claims: &IdClaims) -> Result<String, Error> {
    let key = keys.id_token.as_ref().ok_or(Error::Unavailable("no ID-token key loaded yet"))?;
    jwt::sign(key, claims)
}

/// Reads an `id_token_hint` (OpenID RP-Initiated Logout §2): a token this service signed for
/// `issuer` with an ID-token key still published (the active one or a retired one), expired or
/// not (a hint is often presented after the token expired). `None` for anything else.
pub fn read_hint(keys: &KeySet, token: &str, issuer: &str) -> Option<IdClaims> {
    if token.len() > 8192 {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    // The key by the token's kid, among the ID-token keys only; the algorithm is the key's, never the token's.
    let verifier = keys.id_token_verifiers.get(header.kid.as_deref()?)?;
    if header.alg != verifier.alg {
        return None;
    }
    let mut validation = Validation::new(verifier.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    validation.set_issuer(&[issuer]);
    jsonwebtoken::decode::<IdClaims>(token, &verifier.key, &validation).ok().map(|d| d.claims)
}
