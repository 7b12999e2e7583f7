//! `/oauth/token`, `/oauth/revoke`, `/oauth/introspect`: extract, authenticate the client, call
//! the token domain, answer. Every response is `no-store`.

use axum::{extract::State, http::HeaderMap, middleware, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    clients::Credentials,
    http::oauth_error::OAuthError,
    http::state::AppState,
    http::{extract::OAuthForm, source::SourceIp},
    tokens::{introspect, TokenRequest, TokenResponse},
};

/// OAuth routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(revoke_token))
        .routes(routes!(introspect_token))
        .layer(middleware::from_fn(super::no_store))
}

/// Form body of `/oauth/token`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "grant_type": "password",
    "username": "ada.lovelace",
    "password": "correct-horse-battery-staple",
    "scope": "keys:read keys:write",
    "client_id": "01a19bc6-9448-7a57-9b38-8164a6fddbf4"
}))]
#[allow(dead_code)]
pub struct TokenForm {
    /// `authorization_code`, `client_credentials`, `password` (legacy) or `refresh_token`.
    #[schema(pattern = "^(authorization_code|client_credentials|password|refresh_token)$")]
    grant_type: String,
    /// Requested scopes, space-separated (a subset of what is allowed).
    scope: Option<String>,
    /// Requested audience (client credentials).
    audience: Option<String>,
    /// Password grant.
    username: Option<String>,
    /// Password grant.
    password: Option<String>,
    /// Refresh grant.
    refresh_token: Option<String>,
    /// Authorization-code grant: the code from the redirect.
    code: Option<String>,
    /// Authorization-code grant: the redirect URI of the authorization request, exactly.
    redirect_uri: Option<String>,
    /// Authorization-code grant: the PKCE verifier (RFC 7636).
    code_verifier: Option<String>,
    /// For `client_secret_post` and public clients.
    client_id: Option<String>,
    /// For `client_secret_post`.
    client_secret: Option<String>,
}

/// Form body of `/oauth/revoke` and `/oauth/introspect`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"token": "eyJhbGciOiJFUzI1NiIsImtpZCI6Ii4uLiIsInR5cCI6ImF0K2p3dCJ9...", "token_type_hint": "access_token"}))]
#[allow(dead_code)]
pub struct TokenRefForm {
    /// The token.
    token: String,
    /// `access_token` or `refresh_token`.
    token_type_hint: Option<String>,
    /// For `client_secret_post`.
    client_id: Option<String>,
    /// For `client_secret_post`.
    client_secret: Option<String>,
}

/// `{}` — the empty body of a successful revocation.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({}))]
pub struct Empty {}

fn credentials(headers: &HeaderMap, form: &OAuthForm) -> Result<Credentials, OAuthError> {
    let authorization = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
    Ok(Credentials::from_request(authorization, form.get("client_id"), form.get("client_secret"))?)
}

/// Issues tokens.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses(
        (status = 200, body = TokenResponse, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = crate::http::openapi::OAuthErrorBody),
        (status = 401, body = crate::http::openapi::OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, body = crate::http::openapi::OAuthErrorBody),
        (status = 429, body = crate::http::openapi::OAuthErrorBody, headers(("Retry-After" = String, description = "seconds"))),
        (status = 503, body = crate::http::openapi::OAuthErrorBody, headers(("Retry-After" = String, description = "seconds")))
    ))]
async fn token(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Json<TokenResponse>, OAuthError> {
    let req = TokenRequest {
        grant_type: form.require("grant_type")?,
        scope: form.get("scope"),
        audience: form.get("audience"),
        username: form.get("username"),
        password: form.get("password"),
        refresh_token: form.get("refresh_token"),
        code: form.get("code"),
        redirect_uri: form.get("redirect_uri"),
        code_verifier: form.get("code_verifier"),
    };
    // An unknown grant type is refused before the client is authenticated (RFC 6749 §5.2 order).
    if !crate::clients::GRANT_TYPES.contains(&req.grant_type) {
        return Err(OAuthError::Refused(crate::error::GrantError::UnsupportedGrantType));
    }
    let creds = credentials(&headers, &form)?;
    Ok(Json(state.tokens.token(&creds, &req, source.0).await?))
}

/// RFC 7009 revocation: always 200 for a well-formed request from an authenticated client.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = TokenRefForm, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = [])),
    responses(
        (status = 200, body = Empty),
        (status = 400, body = crate::http::openapi::OAuthErrorBody),
        (status = 401, body = crate::http::openapi::OAuthErrorBody),
        (status = 429, body = crate::http::openapi::OAuthErrorBody, headers(("Retry-After" = String, description = "seconds"))),
        (status = 503, body = crate::http::openapi::OAuthErrorBody, headers(("Retry-After" = String, description = "seconds")))
    ))]
async fn revoke_token(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Json<Empty>, OAuthError> {
    let creds = credentials(&headers, &form)?;
    state.tokens.revoke_token(&creds, form.get("token"), form.get("token_type_hint"), source.0).await?;
    Ok(Json(Empty {}))
}

/// RFC 7662 introspection, for clients holding scope `introspect`.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = TokenRefForm, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = [])),
    responses(
        (status = 200, body = introspect::Introspection),
        (status = 400, body = crate::http::openapi::OAuthErrorBody),
        (status = 401, body = crate::http::openapi::OAuthErrorBody),
        (status = 403, body = crate::http::openapi::OAuthErrorBody),
        (status = 429, body = crate::http::openapi::OAuthErrorBody, headers(("Retry-After" = String, description = "seconds"))),
        (status = 503, body = crate::http::openapi::OAuthErrorBody, headers(("Retry-After" = String, description = "seconds")))
    ))]
async fn introspect_token(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Json<introspect::Introspection>, OAuthError> {
    let creds = credentials(&headers, &form)?;
    Ok(Json(state.tokens.introspect_token(&creds, form.get("token"), source.0).await?))
}
