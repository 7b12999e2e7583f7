//! RFC 8414 metadata and the RFC 7517 JWKS, served from memory.

use axum::{
    extract::{FromRequestParts, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

/// Discovery routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metadata)).routes(routes!(jwks))
}

/// RFC 8414 authorization server metadata.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"issuer": "https://id.example.com", "token_endpoint": "https://id.example.com/oauth/token", "revocation_endpoint": "https://id.example.com/oauth/revoke", "introspection_endpoint": "https://id.example.com/oauth/introspect", "jwks_uri": "https://id.example.com/.well-known/jwks.json", "grant_types_supported": ["client_credentials", "password", "refresh_token"], "response_types_supported": [], "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"], "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"], "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"], "token_endpoint_auth_signing_alg_values_supported": [], "id_token_signing_alg_values_supported": [], "access_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"], "scopes_supported": ["admin", "introspect", "keys:read", "keys:write", "keys:verify", "revocations:read"], "service_documentation": "https://id.example.com/docs"}))]
pub struct Metadata {
    issuer: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    jwks_uri: String,
    grant_types_supported: [&'static str; 3],
    response_types_supported: [&'static str; 0],
    token_endpoint_auth_methods_supported: [&'static str; 3],
    revocation_endpoint_auth_methods_supported: [&'static str; 3],
    introspection_endpoint_auth_methods_supported: [&'static str; 2],
    token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    id_token_signing_alg_values_supported: Vec<&'static str>,
    access_token_signing_alg_values_supported: Vec<&'static str>,
    scopes_supported: Vec<&'static str>,
    service_documentation: String,
}

/// RFC 8414 metadata document.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, body = Metadata)))]
async fn metadata(State(state): State<AppState>) -> Json<Metadata> {
    let base = &state.config.issuer;
    Json(Metadata {
        issuer: base.clone(),
        token_endpoint: format!("{base}/oauth/token"),
        revocation_endpoint: format!("{base}/oauth/revoke"),
        introspection_endpoint: format!("{base}/oauth/introspect"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        grant_types_supported: ["client_credentials", "password", "refresh_token"],
        response_types_supported: [],
        token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
        // A public client revokes its own tokens with its client_id alone (RFC 7009 §2.1).
        revocation_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
        introspection_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
        token_endpoint_auth_signing_alg_values_supported: vec![],
        id_token_signing_alg_values_supported: vec![],
        access_token_signing_alg_values_supported: vec!["ES256", "EdDSA", "RS256"],
        scopes_supported: vec!["admin", "introspect", "keys:read", "keys:write", "keys:verify", "revocations:read"],
        service_documentation: format!("{base}/docs"),
    })
}

/// Every key a verifier may meet: active, next, and retired keys whose tokens may still be live.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses(
        (status = 200, description = "RFC 7517 JWK Set", content_type = "application/json",
         headers(("ETag" = String, description = "Strong validator"), ("Cache-Control" = String, description = "public, max-age"))),
        (status = 304, description = "Not modified (If-None-Match matched)")
    ))]
async fn jwks(State(state): State<AppState>, IfNoneMatch(if_none_match): IfNoneMatch) -> Response {
    let set = state.signing.get();
    let cache = state.signing.cache_control();
    let matches = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().as_bytes() == set.etag.as_bytes() || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, set.etag.clone()), (header::CACHE_CONTROL, cache)])
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ETAG, set.etag.clone()),
            (header::CACHE_CONTROL, cache),
        ],
        set.jwks.clone(),
    )
        .into_response()
}

/// The `If-None-Match` header alone (extracting the whole `HeaderMap` would copy every header).
struct IfNoneMatch(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}
