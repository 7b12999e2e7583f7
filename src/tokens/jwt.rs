//! RFC 9068 access tokens: signing with the in-memory active key, and strict verification.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

use crate::{
    error::Error,
    signing::{ActiveKey, KeySet},
};

/// `aud`: one audience or several.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `who`.
    pub fn contains(&self, who: &str) -> bool {
        match self {
            Self::One(a) => a == who,
            Self::Many(v) => v.iter().any(|a| a == who),
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// User id (password grant) or client id (client credentials).
    pub sub: String,
    /// Audience.
    pub aud: Audience,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Refresh family this token descends from, when it came from a login.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
}

impl AccessClaims {
    /// Scopes as a list.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }
}

/// Why a token was refused. Callers outside this module see only "invalid".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWS we accept (bad encoding, `alg: none`, unknown algorithm, extra key headers).
    #[error("malformed token")]
    Malformed,
    /// `typ` is not `at+jwt`.
    #[error("not an access token")]
    WrongType,
    /// No key with that `kid` is published (unknown, revoked, or retired long ago).
    #[error("unknown key")]
    UnknownKey,
    /// The header's `alg` differs from the key's.
    #[error("algorithm mismatch")]
    AlgorithmMismatch,
    /// Signature or claims do not verify.
    #[error("invalid token")]
    Invalid,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
}

/// Signs claims with `key` (the active key, or the ID-token key): header precomputed, one ring
/// signature, no re-parsing.
pub fn sign<C: Serialize>(key: &ActiveKey, claims: &C) -> Result<String, Error> {
    let payload = serde_json::to_vec(claims).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 100);
    out.push_str(&key.header_b64);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
    let sig = key.signer.sign(out.as_bytes())?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut out);
    Ok(out)
}

/// Leeway for `iat` in the future (clock skew between instances).
const IAT_LEEWAY: i64 = 60;

/// Verifies a token against the published keys. The algorithm is the one recorded for the `kid`;
/// `jku`, `x5u`, `jwk` and `x5c` headers are refused outright, never fetched.
pub fn verify(keys: &KeySet, token: &str, issuer: &str, now: i64) -> Result<AccessClaims, TokenError> {
    if token.len() > 8192 || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some() {
        return Err(TokenError::Malformed);
    }
    match header.typ.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("at+jwt") | Some("application/at+jwt") => {}
        _ => return Err(TokenError::WrongType),
    }
    let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
    let verifier = keys.verifiers.get(kid).ok_or(TokenError::UnknownKey)?;
    if header.alg != verifier.alg {
        return Err(TokenError::AlgorithmMismatch);
    }
    let mut validation = Validation::new(verifier.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    validation.set_issuer(&[issuer]);
    let data =
        jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &validation).map_err(|_| TokenError::Invalid)?;
    let claims = data.claims;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    if claims.iat > now + IAT_LEEWAY {
        return Err(TokenError::Invalid);
    }
    Ok(claims)
}
