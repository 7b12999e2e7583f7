//! Bearer authentication for `/v1`: our own access tokens only, with the route's scope.

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{error::ApiError, scopes, state::AppState, tokens::AccessClaims};

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
        let value = header.to_str().map_err(|_| ApiError::unauthorized("the bearer token is invalid"))?;
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => t.trim(),
            _ => return Err(ApiError::unauthorized("a bearer token is required")),
        };
        let claims = crate::tokens::validate_access_token(state, token)
            .map_err(|_| ApiError::unauthorized("the bearer token is invalid or expired"))?;
        if !claims.aud.contains(&state.config.issuer) {
            return Err(ApiError::unauthorized("the bearer token is invalid: not issued for this service"));
        }
        Ok(Self { claims })
    }
}

impl Caller {
    /// The audit actor for this caller at `ip`, in request `request_id`.
    pub fn actor(&self, ip: std::net::IpAddr, request_id: Option<String>) -> crate::audit::Actor {
        crate::audit::Actor { id: self.claims.sub.clone(), ip: Some(ip.to_string()), request_id }
    }
}
