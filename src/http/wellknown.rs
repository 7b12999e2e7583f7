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

use crate::{
    http::state::AppState,
    http::{openapi::Problem, problem::ApiError},
};

/// Discovery routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metadata)).routes(routes!(openid_configuration)).routes(routes!(jwks))
}

/// RFC 8414 authorization server metadata.
///
/// Members with nothing to say are left out rather than sent as `[]` (RFC 8414 §2 makes them
/// optional); every member sent is non-empty.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"issuer": "https://id.example.com", "authorization_endpoint": "https://id.example.com/oauth/authorize", "token_endpoint": "https://id.example.com/oauth/token", "revocation_endpoint": "https://id.example.com/oauth/revoke", "introspection_endpoint": "https://id.example.com/oauth/introspect", "jwks_uri": "https://id.example.com/.well-known/jwks.json", "grant_types_supported": ["authorization_code", "client_credentials", "password", "refresh_token"], "response_types_supported": ["code"], "response_modes_supported": ["query"], "code_challenge_methods_supported": ["S256"], "authorization_response_iss_parameter_supported": true, "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"], "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"], "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"], "access_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"], "scopes_supported": ["openid", "profile", "offline_access", "admin", "introspect", "keys:read", "keys:write", "keys:verify", "revocations:read"], "service_documentation": "https://id.example.com/docs"}))]
pub struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    jwks_uri: String,
    grant_types_supported: [&'static str; 4],
    response_types_supported: [&'static str; 1],
    response_modes_supported: [&'static str; 1],
    /// PKCE is required for every client, with S256 only (RFC 7636 §4.4.1, RFC 9700 §2.1.1).
    code_challenge_methods_supported: [&'static str; 1],
    /// Every authorization response carries `iss` (RFC 9207).
    authorization_response_iss_parameter_supported: bool,
    token_endpoint_auth_methods_supported: [&'static str; 3],
    revocation_endpoint_auth_methods_supported: [&'static str; 3],
    introspection_endpoint_auth_methods_supported: [&'static str; 2],
    access_token_signing_alg_values_supported: [&'static str; 3],
    scopes_supported: [&'static str; 9],
    service_documentation: String,
}

/// Scopes a client may be registered for that discovery advertises: the OpenID ones and Tessera's own.
const SCOPES_SUPPORTED: [&str; 9] = [
    "openid",
    "profile",
    "offline_access",
    "admin",
    "introspect",
    "keys:read",
    "keys:write",
    "keys:verify",
    "revocations:read",
];

impl Metadata {
    /// The document of `issuer`: every URL in it is the issuer followed by the endpoint's path,
    /// so an issuer with a path (`https://id.example.com/tenant`) names its endpoints under it.
    pub fn for_issuer(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            authorization_endpoint: format!("{issuer}/oauth/authorize"),
            token_endpoint: format!("{issuer}/oauth/token"),
            revocation_endpoint: format!("{issuer}/oauth/revoke"),
            introspection_endpoint: format!("{issuer}/oauth/introspect"),
            jwks_uri: format!("{issuer}/.well-known/jwks.json"),
            grant_types_supported: crate::clients::GRANT_TYPES,
            response_types_supported: ["code"],
            response_modes_supported: ["query"],
            code_challenge_methods_supported: ["S256"],
            authorization_response_iss_parameter_supported: true,
            token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
            // A public client revokes its own tokens with its client_id alone (RFC 7009 §2.1).
            revocation_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
            introspection_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
            access_token_signing_alg_values_supported: ["ES256", "EdDSA", "RS256"],
            scopes_supported: SCOPES_SUPPORTED,
            service_documentation: format!("{issuer}/docs"),
        }
    }
}

/// OpenID Connect Discovery 1.0 §3 provider metadata: the RFC 8414 members, and OpenID's own.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"issuer": "https://id.example.com", "authorization_endpoint": "https://id.example.com/oauth/authorize", "token_endpoint": "https://id.example.com/oauth/token", "revocation_endpoint": "https://id.example.com/oauth/revoke", "introspection_endpoint": "https://id.example.com/oauth/introspect", "jwks_uri": "https://id.example.com/.well-known/jwks.json", "grant_types_supported": ["authorization_code", "client_credentials", "password", "refresh_token"], "response_types_supported": ["code"], "response_modes_supported": ["query"], "code_challenge_methods_supported": ["S256"], "authorization_response_iss_parameter_supported": true, "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"], "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"], "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"], "access_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"], "scopes_supported": ["openid", "profile", "offline_access", "admin", "introspect", "keys:read", "keys:write", "keys:verify", "revocations:read"], "service_documentation": "https://id.example.com/docs", "userinfo_endpoint": "https://id.example.com/oauth/userinfo", "end_session_endpoint": "https://id.example.com/oauth/logout", "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"], "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "preferred_username"], "prompt_values_supported": ["none", "login"], "claims_parameter_supported": false, "request_parameter_supported": false, "request_uri_parameter_supported": false}))]
pub struct OidcConfiguration {
    #[serde(flatten)]
    oauth: Metadata,
    userinfo_endpoint: String,
    end_session_endpoint: String,
    subject_types_supported: [&'static str; 1],
    /// ID tokens are always RS256 (OIDC Core §15.1), whatever signs access tokens.
    id_token_signing_alg_values_supported: [&'static str; 1],
    claims_supported: [&'static str; 9],
    prompt_values_supported: [&'static str; 2],
    claims_parameter_supported: bool,
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
}

impl OidcConfiguration {
    /// The document of `issuer`.
    pub fn for_issuer(issuer: &str) -> Self {
        Self {
            oauth: Metadata::for_issuer(issuer),
            userinfo_endpoint: format!("{issuer}/oauth/userinfo"),
            end_session_endpoint: format!("{issuer}/oauth/logout"),
            subject_types_supported: ["public"],
            id_token_signing_alg_values_supported: ["RS256"],
            claims_supported: ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "preferred_username"],
            prompt_values_supported: ["none", "login"],
            claims_parameter_supported: false,
            request_parameter_supported: false,
            request_uri_parameter_supported: false,
        }
    }
}

/// OpenID Connect Discovery document. Unlike RFC 8414's, its location appends the well-known path
/// to the issuer (`https://id.example.com/tenant/.well-known/openid-configuration`), which the
/// edge routes here.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, body = OidcConfiguration)))]
async fn openid_configuration(State(state): State<AppState>) -> Json<OidcConfiguration> {
    Json(OidcConfiguration::for_issuer(&state.config.issuer))
}

/// Where RFC 8414 §3.1 puts the metadata of `issuer`: the well-known path, then the issuer's own
/// path (`https://id.example.com/tenant` → `/.well-known/oauth-authorization-server/tenant`).
pub fn metadata_path(issuer: &str) -> String {
    format!("{METADATA_PATH}{}", issuer_path(issuer))
}

pub use crate::net::issuer_path;

const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// RFC 8414 metadata document.
///
/// When the issuer has a path, the document is served at this path followed by the issuer's path
/// instead (RFC 8414 §3.1: `/.well-known/oauth-authorization-server/tenant`), and this one answers
/// 404: a client that fetched it would find an `issuer` that does not match the URL it used.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, body = Metadata), (status = 404, body = Problem, content_type = "application/problem+json",
        description = "The issuer has a path: the document is at this path followed by it")))]
async fn metadata(State(state): State<AppState>) -> Result<Json<Metadata>, ApiError> {
    let issuer = &state.config.issuer;
    if !issuer_path(issuer).is_empty() {
        return Err(ApiError::not_found(format!(
            "the issuer has a path: its metadata is at {} (RFC 8414 §3.1)",
            metadata_path(issuer)
        )));
    }
    Ok(Json(Metadata::for_issuer(issuer)))
}

/// The metadata at the RFC 8414 §3.1 location of an issuer with a path (routed only then).
pub async fn metadata_under_path(State(state): State<AppState>) -> Json<Metadata> {
    Json(Metadata::for_issuer(&state.config.issuer))
}

/// Every key a verifier may meet: active, next, and retired keys whose tokens may still be live.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses(
        (status = 200, description = "RFC 7517 JWK Set", content_type = "application/json",
         headers(("ETag" = String, description = "Strong validator"), ("Cache-Control" = String, description = "public, max-age"))),
        (status = 304, description = "Not modified (If-None-Match matched)")
    ))]
async fn jwks(State(state): State<AppState>, IfNoneMatch(if_none_match): IfNoneMatch) -> Response {
    let set = state.signing.keys();
    // Both are built from quotes, digits, letters and ", =-": always valid header values.
    let header_value =
        |b: &bytes::Bytes| HeaderValue::from_maybe_shared(b.clone()).unwrap_or(HeaderValue::from_static(""));
    let cache = header_value(&state.signing.jwks_cache_control());
    let etag = header_value(&set.etag);
    let matches = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().as_bytes() == set.etag.as_ref() || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ETAG, etag),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_location_inserts_the_well_known_path_before_the_issuer_path() {
        assert_eq!(issuer_path("https://id.example.com"), "");
        assert_eq!(issuer_path("http://127.0.0.1:8080/tenant"), "/tenant");
        assert_eq!(issuer_path("https://id.example.com/a/b"), "/a/b");
        assert_eq!(metadata_path("https://id.example.com"), "/.well-known/oauth-authorization-server");
        assert_eq!(metadata_path("https://id.example.com/a/b"), "/.well-known/oauth-authorization-server/a/b");
    }
}
