//! Bearer authentication for `/v1` (the `Caller` extractor): our own access tokens only, with the route's scope.

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{
    http::{problem::ApiError, state::AppState},
    scopes,
    tokens::AccessClaims,
};

/// The authenticated caller of a `/v1` endpoint.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified claims (shared with the verified-token cache, not copied per request).
    pub claims: std::sync::Arc<AccessClaims>,
}

impl Caller {
    /// The token's subject (user id or client id).
    pub fn sub(&self) -> &str {
        &self.claims.sub
    }
    /// Whether the token carries `scope` (or `admin`).
    pub fn has(&self, scope: &str) -> bool {
        scopes::allows(self.claims.scopes(), scope)
    }
    /// Whether the token carries `admin`.
    pub fn is_admin(&self) -> bool {
        self.claims.scopes().any(|s| s == scopes::ADMIN)
    }
    /// Fails with 403 unless the token carries `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::insufficient_scope(scope))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
        let token = bearer_token(header.as_bytes())?;
        let claims = state
            .tokens
            .validate_access_token(token)
            .map_err(|_| ApiError::unauthorized("the bearer token is invalid or expired"))?;
        if !claims.aud.contains(state.tokens.issuer()) {
            return Err(ApiError::unauthorized("the bearer token is invalid: not issued for this service"));
        }
        Ok(Self { claims })
    }
}

/// The token of an `Authorization` header, by RFC 6750 §2.1:
/// `credentials = "Bearer" 1*SP b64token`, the scheme matched case-insensitively (RFC 9110 §11.1).
///
/// A header of another scheme carries no bearer token: 401, as if it were absent. A header that
/// names the Bearer scheme but is not exactly one b64token after it (nothing, two tokens, a stray
/// character) is malformed: 400 `invalid_request` (RFC 6750 §3.1), never silently trimmed.
pub fn bearer_token(value: &[u8]) -> Result<&str, ApiError> {
    const SCHEME: &[u8] = b"bearer";
    // The scheme is a token (RFC 9110 §5.6.2): it ends at the first byte that is not a tchar.
    let scheme_len = value.iter().position(|b| !is_tchar(*b)).unwrap_or(value.len());
    if !value[..scheme_len].eq_ignore_ascii_case(SCHEME) {
        return Err(ApiError::unauthorized("a bearer token is required"));
    }
    let rest = &value[scheme_len..];
    let token = &rest[rest.iter().position(|b| *b != b' ').unwrap_or(rest.len())..];
    if token.len() == rest.len() || !is_b64token(token) {
        return Err(ApiError::invalid_bearer_request(
            "the Authorization header must be \"Bearer\", one or more spaces, and one token (RFC 6750 §2.1)",
        ));
    }
    // b64token characters are ASCII, so this cannot fail.
    std::str::from_utf8(token).map_err(|_| ApiError::invalid_bearer_request("the bearer token is not ASCII"))
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6750 §2.1 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &[u8]) -> bool {
    let body = t.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    body > 0 && t[..body].iter().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b))
}

impl Caller {
    /// The audit actor for this caller at `ip`, in request `request_id`.
    pub fn actor(&self, ip: std::net::IpAddr, request_id: Option<String>) -> crate::audit::Actor {
        crate::audit::Actor { id: self.claims.sub.clone(), ip: Some(ip.to_string()), request_id }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::bearer_token;

    #[test]
    fn one_b64token_after_the_bearer_scheme_in_any_case_is_a_token() {
        for (header, token) in [
            ("Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
            ("bearer abc", "abc"),
            ("BEARER abc", "abc"),
            ("Bearer   a~b+c/d==", "a~b+c/d=="),
        ] {
            assert_eq!(bearer_token(header.as_bytes()).ok(), Some(token), "{header}");
        }
    }

    #[test]
    fn a_malformed_bearer_header_is_400_invalid_request_and_another_scheme_is_401() {
        for header in [
            "Bearer a b",
            "Bearer",
            "Bearer ",
            "bearer a\tb",
            "Bearer\tabc",
            "Bearer =abc",
            "Bearer a=b",
            "Bearer \u{e9}",
        ] {
            let err = bearer_token(header.as_bytes()).expect_err(header);
            assert_eq!((err.status(), err.code()), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{header}");
        }
        for header in ["Basic xyz", "Bearerx abc", "Token abc", ""] {
            let err = bearer_token(header.as_bytes()).expect_err(header);
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{header}");
        }
    }
}
