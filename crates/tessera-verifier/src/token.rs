//! RFC 9068 access-token validation: `typ` `at+jwt`, the algorithm taken from the key (never from
//! the token alone), signature, `iss`, `aud`, `exp`/`nbf` with the configured leeway, and every
//! revocation the verifier has heard of. Tokens whose signature verified are remembered by their
//! SHA-256, so a client sending the same token again costs a hash and a lookup, not an ECDSA check;
//! expiry and revocations are still checked on every use.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use jsonwebtoken::errors::ErrorKind;

use crate::{
    jwks::Jwks,
    principal::{Claims, Credential, Principal},
    revoked::{unix_now, Revoked, Subject},
    Rejection,
};

/// Verified tokens remembered at most; the map is emptied when full (a rare, cheap event).
const MAX_REMEMBERED: usize = 10_000;

struct Verified {
    principal: Arc<Principal>,
    kid: Box<str>,
}

/// Validates access tokens against the JWKS and the revoked set.
pub(crate) struct TokenValidator {
    jwks: Arc<Jwks>,
    revoked: Arc<Revoked>,
    leeway: i64,
    verified: RwLock<HashMap<[u8; 32], Verified>>,
}

impl TokenValidator {
    pub fn new(jwks: Arc<Jwks>, revoked: Arc<Revoked>, leeway: std::time::Duration) -> Self {
        Self { jwks, revoked, leeway: leeway.as_secs() as i64, verified: RwLock::default() }
    }

    /// The principal of `token`, or why it is refused.
    pub async fn validate(&self, token: &str) -> Result<Arc<Principal>, Rejection> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        let hit =
            self.verified.read().ok().and_then(|m| m.get(&hash).map(|v| (Arc::clone(&v.principal), v.kid.clone())));
        if let Some((principal, kid)) = hit {
            self.still_good(&principal, &kid)?;
            return Ok(principal);
        }
        let (principal, kid) = self.verify(token).await?;
        self.still_good(&principal, &kid)?;
        if let Ok(mut m) = self.verified.write() {
            if m.len() >= MAX_REMEMBERED {
                m.clear();
            }
            m.insert(hash, Verified { principal: Arc::clone(&principal), kid: kid.into() });
        }
        Ok(principal)
    }

    /// Expiry and revocations, checked on every use.
    fn still_good(&self, principal: &Principal, kid: &str) -> Result<(), Rejection> {
        let Credential::AccessToken(c) = &principal.credential else { return Err(Rejection::Invalid("not a token")) };
        if c.exp + self.leeway <= unix_now() {
            return Err(Rejection::Expired);
        }
        let subject = Subject { jti: &c.jti, sid: c.sid.as_deref(), client_id: &c.client_id, sub: &c.sub, kid };
        if self.revoked.is_revoked(&subject) {
            return Err(Rejection::Revoked);
        }
        Ok(())
    }

    /// Header, key, signature and registered claims.
    async fn verify(&self, token: &str) -> Result<(Arc<Principal>, String), Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Invalid("not a JWT"))?;
        // RFC 9068 §4: the typ must be at+jwt (or its full media type), compared case-insensitively.
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(Rejection::Invalid("typ is not at+jwt"));
        }
        let kid = header.kid.ok_or(Rejection::Invalid("no kid"))?;
        let key = match self.jwks.get(&kid) {
            Some(k) => k,
            None => self.jwks.get_unknown(&kid).await.ok_or(Rejection::Invalid("unknown kid"))?,
        };
        if header.alg != key.alg {
            return Err(Rejection::Invalid("alg does not match the key"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::Invalid("not yet valid"),
            ErrorKind::InvalidIssuer => Rejection::Invalid("wrong issuer"),
            ErrorKind::InvalidAudience => Rejection::Invalid("wrong audience"),
            ErrorKind::InvalidSignature => Rejection::Invalid("bad signature"),
            _ => Rejection::Invalid("malformed token"),
        })?;
        let claims = data.claims;
        let principal = Principal {
            subject: claims.sub.clone(),
            scopes: claims.scope.split_ascii_whitespace().map(str::to_owned).collect(),
            credential: Credential::AccessToken(claims),
        };
        Ok((Arc::new(principal), kid))
    }
}
